"""``appliance check-config`` refuses what ``appliance run`` would refuse, without a camera or broker
(issue #14 item 11), and understands the systemd credential placeholder of the installed
configuration (item 14). Real configs, the shipped starter bundle, the real unit files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from appliance.service.demo import STARTER_BUNDLE
from tests.conftest import write_appliance_config

ROOT = Path(__file__).resolve().parents[1]


def check_config(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}  # a shell, not the unit
    return subprocess.run(
        [sys.executable, "-m", "appliance.cli", "check-config", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**environ, **(env or {})},
    )


def _config(tmp_path: Path, camera: dict | None = None, **overrides) -> Path:
    camera = camera or {"id": "gate", "source": "rtsp://192.0.2.10:554/stream1"}
    return write_appliance_config(tmp_path / "appliance.yaml", camera, **overrides)


def test_a_complete_config_passes(tmp_path):
    out = check_config(str(_config(tmp_path)))
    assert out.returncode == 0, out.stderr
    assert (
        "valid (appliance test-box; pose blazepose; cameras gate (rtsp://192.0.2.10:554/stream1))"
        in out.stdout
    )


def test_everything_run_would_refuse_is_reported_at_once_naming_file_line_and_key(tmp_path):
    cameras = [
        {"id": "bay1", "source": "/dev/video97"},
        {"id": "bay2", "source": "rtsp://:554/x"},
        {"id": "bay3", "source": "no-such-clip.mp4"},
        {"id": "bay4", "source": -1},
    ]
    mqtt = {"type": "mqtt", "host": "127.0.0.1", "password_file": "nope/pw", "tls": {"ca_file": "ca.pem"}}
    config = _config(
        tmp_path,
        model={"bundle": "missing.tar"},
        pose={"type": "onnx", "model": "pose.onnx"},
        cameras=cameras,
        sinks=[mqtt],
    )
    out = check_config(str(config))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    lines = {line.split(": ", 1)[1] for line in out.stderr.replace("appliance: error: ", "").splitlines()}
    assert lines == {
        f"model.bundle: {tmp_path}/missing.tar: no such bundle",
        f"pose.model: {tmp_path}/pose.onnx: no such file or directory",
        "cameras[0].source: camera bay1: no such device /dev/video97",
        "cameras[1].source: camera bay2: rtsp://:554/x: malformed URL: no host",
        "cameras[2].source: camera bay3: no such video file no-such-clip.mp4",
        "cameras[3].source: camera bay4: invalid camera device index -1",
        f"sinks[0].password_file: {tmp_path}/nope/pw: no such file or directory",
        f"sinks[0].tls.ca_file: {tmp_path}/ca.pem: no such file or directory",
    }
    line = 1 + next(i for i, text in enumerate(config.read_text().splitlines()) if "bundle:" in text)
    assert f"{config}:{line}: model.bundle" in out.stderr  # file and line, like a schema error


def test_a_file_that_is_no_bundle_and_missing_pose_models_are_refused(tmp_path):
    config = _config(
        tmp_path, model={"bundle": "appliance.yaml"}, pose={"type": "blazepose", "model_dir": "m"}
    )
    out = check_config(str(config))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"model.bundle: {config}: not a tar archive" in out.stderr
    assert (
        f"pose.model_dir: BlazePose model files unusable: {tmp_path}/m/pose_detection.tflite is missing"
        in (out.stderr)
    )


def test_an_unreadable_password_file_is_refused(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    secret = tmp_path / "mqtt-password"
    secret.write_text("pw\n")
    secret.chmod(0)
    sinks = [{"type": "mqtt", "host": "127.0.0.1", "password_file": str(secret)}]
    out = check_config(str(_config(tmp_path, sinks=sinks)))
    assert out.returncode == 2 and f"sinks[0].password_file: {secret}: permission denied" in out.stderr


def test_a_usb_camera_index_not_plugged_in_now_is_a_note_not_an_error(tmp_path):
    index = next(i for i in range(90, 200) if not Path(f"/dev/video{i}").exists())
    out = check_config(str(_config(tmp_path, {"id": "usb", "source": index})))
    assert out.returncode == 0, out.stderr
    assert f"note: camera usb: /dev/video{index} is not present now" in out.stdout


# --- the configuration install-service writes (item 14) ------------------------------------------


@pytest.fixture
def installed(tmp_path: Path) -> Path:
    """``appliance install-service --root`` into a temporary root; the bundle line edited as a
    technician would (the skeleton names /var/lib/appliance/models/current.tar)."""
    out = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "install-service", "--root", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    config = tmp_path / "etc" / "appliance" / "appliance.yaml"
    text = config.read_text()
    assert "password_file: ${CREDENTIALS_DIRECTORY}/mqtt-password" in text
    config.write_text(text.replace("/var/lib/appliance/models/current.tar", str(STARTER_BUNDLE)))
    return config


def test_installed_config_with_the_credential_placeholder_passes_from_a_shell(installed, tmp_path):
    secret = tmp_path / "etc" / "appliance" / "credentials" / "mqtt-password"
    secret.parent.mkdir()
    secret.write_text("pw\n")
    out = check_config(str(installed))
    assert out.returncode == 0, out.stderr
    unit = tmp_path / "etc" / "systemd" / "system" / "appliance.service"
    assert (
        "sinks[0].password_file: note: /run/credentials/appliance.service/mqtt-password is the systemd "
        "credential 'mqtt-password' of appliance.service ($CREDENTIALS_DIRECTORY is set only there): "
        f"LoadCredential= in {unit} reads it from /etc/appliance/credentials/mqtt-password (in {tmp_path}): "
        "found, readable"
    ) in out.stdout
    assert f"{installed}: valid" in out.stdout


def test_installed_config_fails_when_the_credential_source_is_missing(installed, tmp_path):
    out = check_config(str(installed))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "reads it from /etc/appliance/credentials/mqtt-password" in out.stderr
    assert "which does not exist (systemd would refuse to start the unit)" in out.stderr


def test_a_credential_the_unit_does_not_load_is_refused(installed, tmp_path):
    text = installed.read_text().replace(
        "${CREDENTIALS_DIRECTORY}/mqtt-password", "${CREDENTIALS_DIRECTORY}/broker-pw"
    )
    installed.write_text(text)
    out = check_config(str(installed))
    assert out.returncode == 2
    assert "has no LoadCredential=broker-pw:FILE, so it will not exist" in out.stderr


def test_inside_the_unit_the_credential_folder_is_read_as_it_is(installed, tmp_path):
    creds = tmp_path / "run-credentials"
    creds.mkdir()
    (creds / "mqtt-password").write_text("pw\n")
    out = check_config(str(installed), env={"CREDENTIALS_DIRECTORY": str(creds)})
    assert out.returncode == 0, out.stderr
    assert "note:" not in out.stdout


def test_run_outside_the_unit_says_where_credentials_directory_comes_from(installed):
    out = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "run", "--config", str(installed)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"},
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "environment variable CREDENTIALS_DIRECTORY is not set (systemd sets it" in out.stderr


def test_a_drop_in_can_add_or_reset_credentials(installed, tmp_path):
    from appliance.service.preflight import read_unit_credentials

    unit = tmp_path / "etc" / "systemd" / "system" / "appliance.service"
    drop_in = unit.with_name("appliance.service.d")
    drop_in.mkdir(exist_ok=True)  # install-service put the GPU examples (*.conf.example) there
    (drop_in / "site.conf").write_text("[Service]\nLoadCredential=\nLoadCredential=broker-pw:/srv/pw\n")
    creds = read_unit_credentials(unit)
    assert creds.sources == {"broker-pw": tmp_path / "srv" / "pw"}
    assert yaml.safe_load(installed.read_text())["sinks"][0]["type"] == "mqtt"


def test_the_consoles_tls_pair_must_load_and_clear_text_on_a_network_or_no_user_is_a_note(tmp_path):
    (tmp_path / "cert.pem").write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n")
    (tmp_path / "key.pem").write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n")
    web = {"enabled": True, "tls_cert_file": "cert.pem", "tls_key_file": "key.pem"}
    out = check_config(str(_config(tmp_path, web=web)))
    assert out.returncode == 2
    line = next(x for x in out.stderr.splitlines() if "web.tls_cert_file" in x)
    assert "do not load as a certificate and its key" in line and f"{tmp_path}/appliance.yaml:" in line
    missing = check_config(str(_config(tmp_path, web={**web, "tls_key_file": "gone.pem"})))
    assert missing.returncode == 2 and "web.tls_key_file: " in missing.stderr and "gone.pem" in missing.stderr

    plain = check_config(str(_config(tmp_path, web={"enabled": True, "bind": "0.0.0.0"})))
    assert plain.returncode == 0, plain.stderr
    notes = [x for x in plain.stdout.splitlines() if ": note: " in x]
    assert any("web.bind: note: the console listens on 0.0.0.0 without TLS" in x for x in notes), notes
    assert any("web.users_file: note: nobody can log in yet" in x for x in notes), notes


def test_zones_saved_in_the_console_are_named_and_a_broken_zones_file_is_refused_with_its_line(tmp_path):
    from appliance.config.console_zones import CameraZoneEdit, ConsoleZones, write_console_zones

    config = _config(tmp_path)
    edit = CameraZoneEdit(zones=[{"name": "press", "polygon": [[0, 0], [1, 0], [1, 1]]}],
                          saved_by="ada", saved_at="2026-12-03T08:00:00Z")  # fmt: skip
    write_console_zones(tmp_path / "state", ConsoleZones(cameras={"gate": edit}))
    out = check_config(str(config))
    assert out.returncode == 0, out.stderr
    assert (
        f"cameras[0].zones: note: camera gate: its zones (press) come from {tmp_path}/state/zones.yaml, "
        "saved in the console by ada at 2026-12-03T08:00:00Z, not from this file" in out.stdout
    )
    zones_file = tmp_path / "state" / "zones.yaml"
    zones_file.write_text(zones_file.read_text().replace("- name: press", "- name: press\n      colour: red"))
    bad = check_config(str(config))
    assert bad.returncode == 2
    assert f"{zones_file}:" in bad.stderr and "cameras.gate.zones[0].colour: unknown key" in bad.stderr
