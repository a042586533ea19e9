"""No secret in anything the appliance prints: camera URL passwords and broker passwords are redacted
in logs, errors and summaries (issue #14 item 9). The commands run as subprocesses on real configs
(the shipped starter bundle), and all their output is searched for the password."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from appliance.capture.sources import parse_source
from appliance.redact import redact
from tests.conftest import write_appliance_config

ROOT = Path(__file__).resolve().parents[1]
SECRET = "SuperSecret123"
CAMERA = f"rtsp://admin:{SECRET}@127.0.0.1:1/stream"  # port 1: nothing listens, the camera never opens


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (CAMERA, "rtsp://admin:***@127.0.0.1:1/stream"),
        (f"rtsp://admin:p@ss/{SECRET}@cam.plant:554/h264", "rtsp://admin:***@cam.plant:554/h264"),
        (f"https://{SECRET}@github.com/org/repo", "https://***@github.com/org/repo"),
        (
            f"http://cam/snap.jpg?user=admin&password={SECRET}&res=hd",
            "http://cam/snap.jpg?user=admin&password=***&res=hd",
        ),
        (f"http://cam/x?pwd={SECRET}", "http://cam/x?pwd=***"),
        (f"http://cam/x?token={SECRET}#frag", "http://cam/x?token=***#frag"),
        (
            f"rtspsrc location=rtsp://cam/x user-id=admin user-pw={SECRET} ! decodebin ! appsink",
            "rtspsrc location=rtsp://cam/x user-id=admin user-pw=*** ! decodebin ! appsink",
        ),
        (
            f"cannot open url source '{CAMERA}': timeout",
            "cannot open url source 'rtsp://admin:***@127.0.0.1:1/stream': timeout",
        ),
        ("rtsp://192.0.2.10:554/stream1", "rtsp://192.0.2.10:554/stream1"),
        ("/dev/video0", "/dev/video0"),
        (f"rtsp://admin:{SECRET}/stream", "rtsp://admin:***/stream"),  # host forgotten: no @
        ("rtsp://[fd00::7]:554/x", "rtsp://[fd00::7]:554/x"),
    ],
)
def test_redact_hides_url_passwords_and_secret_parameters_and_keeps_the_rest(text, shown):
    assert redact(text) == shown
    assert redact(redact(text)) == shown  # idempotent: redacting twice changes nothing


def test_a_camera_source_renders_without_its_password_but_opens_with_it():
    source = parse_source(CAMERA)
    assert str(source) == "rtsp://admin:***@127.0.0.1:1/stream"
    assert source.target == CAMERA  # what OpenCV gets is untouched


def _config(tmp_path: Path, source: str = CAMERA) -> Path:
    password = tmp_path / "mqtt-password"
    password.write_text(SECRET + "\n")
    return write_appliance_config(
        tmp_path / "appliance.yaml",
        {"id": "gate", "source": source, "stall_timeout_s": 1},
        sinks=[
            {"type": "jsonl", "path": str(tmp_path / "events.jsonl")},
            # port 1: no broker, the MQTT sink keeps retrying; its password must not show either
            {"type": "mqtt", "host": "127.0.0.1", "port": 1, "username": "admin", "password": SECRET},
        ],
    )


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "appliance.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_check_config_shows_the_camera_without_its_password(tmp_path):
    out = _cli("check-config", str(_config(tmp_path)))
    assert out.returncode == 0, out.stderr
    assert "gate (rtsp://admin:***@127.0.0.1:1/stream)" in out.stdout
    assert SECRET not in out.stdout + out.stderr


def test_check_config_errors_about_a_camera_do_not_echo_its_password(tmp_path):
    # a password but no host (the user forgot it): urllib takes the password for a port number
    out = _cli("check-config", str(_config(tmp_path, f"rtsp://admin:{SECRET}@:99999/x")))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "cameras[0].source" in out.stderr and "malformed URL" in out.stderr
    out2 = _cli("check-config", str(_config(tmp_path, f"rtsp://admin:{SECRET}/stream")))
    assert out2.returncode == 2 and "malformed URL" in out2.stderr
    assert SECRET not in out.stdout + out.stderr + out2.stdout + out2.stderr


def test_run_with_an_unreachable_camera_never_logs_its_password(tmp_path):
    log = tmp_path / "run.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "appliance.cli", "run", "--config", str(_config(tmp_path)), "-v"],
            cwd=ROOT,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120  # model load and smoke test first; the camera line follows
        while time.monotonic() < deadline and proc.poll() is None:
            text = log.read_text(errors="replace")
            if text.count("gate") >= 2 and "admin:***@" in text:  # the camera was named and retried
                break
            time.sleep(0.5)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    text = log.read_text(errors="replace")
    assert "rtsp://admin:***@127.0.0.1:1/stream" in text, text[-3000:]
    assert SECRET not in text
