"""Configuration: a mistake is reported with file, line and key; valid files load with resolved paths."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from appliance.config import ConfigError, MqttSinkConfig, load_config, parse_config
from appliance.credentials import CredentialError

ROOT = Path(__file__).resolve().parents[1]

GOOD = """\
schema_version: 1
appliance_id: line3-box
model:
  bundle: models/current.tar
pose:
  type: blazepose
  max_people: 3
cameras:
  - id: cam1
    source: rtsp://192.0.2.10/stream1
  - id: cam2
    source: 0
    fps: 15
sinks:
  - type: jsonl
    path: events.jsonl
  - type: mqtt
    host: broker.plant
    username: appliance
    password: ${MQTT_TEST_PASSWORD}
"""


def test_valid_config_loads_with_defaults_and_paths_relative_to_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("MQTT_TEST_PASSWORD", "s3cret")
    f = tmp_path / "appliance.yaml"
    f.write_text(GOOD)
    cfg = load_config(f)
    assert cfg.model.bundle == tmp_path / "models" / "current.tar"
    assert cfg.pose.type == "blazepose" and cfg.pose.max_people == 3
    assert [c.id for c in cfg.cameras] == ["cam1", "cam2"] and cfg.cameras[1].source == 0
    assert cfg.sinks[0].path == tmp_path / "events.jsonl"
    mqtt = cfg.sinks[1]
    assert isinstance(mqtt, MqttSinkConfig) and mqtt.resolve_password() == "s3cret" and mqtt.qos == 1
    assert cfg.detector.start_windows == 5 and cfg.tracking.max_missed_frames == 15


@pytest.mark.parametrize(
    ("edit", "line", "needle"),
    [
        (("  max_people: 3", "  max_peple: 3"), 7, "pose.max_peple: unknown key"),
        (("    fps: 15", "    fps: fast"), 13, "cameras[1].fps"),
        (("appliance_id: line3-box\n", ""), 1, "appliance_id: required key is missing"),
        (("schema_version: 1", "schema_version: 2"), 1, "schema version 1"),
        (("  - id: cam2", "  - id: cam 2"), 11, "cameras[1].id"),
        (("  type: blazepose", "  type: openpose"), 6, "pose.type: unknown or missing type"),
        (("    host: broker.plant", "    host: broker.plant\n    port: 99999"), 19, "sinks[1].port"),
    ],
)
def test_a_bad_config_names_the_line_and_the_key(tmp_path, monkeypatch, edit, line, needle):
    monkeypatch.setenv("MQTT_TEST_PASSWORD", "x")
    f = tmp_path / "a.yaml"
    f.write_text(GOOD.replace(*edit))
    with pytest.raises(ConfigError) as err:
        load_config(f)
    assert f"{f}:{line}:" in str(err.value)
    assert needle in str(err.value)


def test_broken_yaml_names_the_line(tmp_path):
    f = tmp_path / "a.yaml"
    f.write_text("schema_version: 1\ncameras: [\n  - id: x\n")
    with pytest.raises(ConfigError, match=r"a\.yaml:\d+: not valid YAML"):
        load_config(f)


def test_an_unset_environment_variable_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("MQTT_TEST_PASSWORD", raising=False)
    with pytest.raises(
        ConfigError, match=r"x\.yaml:20: sinks\[1\]\.password: environment variable MQTT_TEST_PASSWORD"
    ):
        parse_config(GOOD, "x.yaml")


def test_password_file_is_read_and_a_missing_one_is_named(tmp_path):
    secret = tmp_path / "mqtt-password"
    secret.write_text("from-a-file\n")
    text = GOOD.replace("password: ${MQTT_TEST_PASSWORD}", f"password_file: {secret}")
    assert parse_config(text).sinks[1].resolve_password() == "from-a-file"
    missing = parse_config(GOOD.replace("password: ${MQTT_TEST_PASSWORD}", "password_file: /nonexistent/pw"))
    with pytest.raises(CredentialError, match="mqtt password_file /nonexistent/pw"):
        missing.sinks[1].resolve_password()


def test_duplicate_camera_ids_are_refused(monkeypatch):
    monkeypatch.setenv("MQTT_TEST_PASSWORD", "x")
    with pytest.raises(ConfigError, match="repeated: cam1"):
        parse_config(GOOD.replace("id: cam2", "id: cam1"), "x.yaml")


def test_replay_source_only_with_the_keypoints_backend(monkeypatch):
    monkeypatch.setenv("MQTT_TEST_PASSWORD", "x")
    with pytest.raises(ConfigError, match="'replay'"):
        parse_config(GOOD.replace("source: 0", "source: replay"), "x.yaml")


def test_check_config_command_exit_codes(tmp_path):
    f = tmp_path / "a.yaml"
    f.write_text(GOOD.replace("${MQTT_TEST_PASSWORD}", "pw"))
    ok = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "check-config", str(f)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert ok.returncode == 0 and "valid" in ok.stdout
    f.write_text(GOOD.replace("${MQTT_TEST_PASSWORD}", "pw").replace("  max_people: 3", "  max_peple: 3"))
    bad = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "check-config", str(f)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert f"{f}:7: pose.max_peple: unknown key" in bad.stderr


def test_the_shipped_example_config_is_valid():
    cfg = load_config(ROOT / "config" / "appliance.example.yaml")
    assert cfg.cameras[0].id == "line3-east" and cfg.sinks[0].type == "mqtt"
    assert str(cfg.sinks[0].password_file).startswith("/run/credentials/")
