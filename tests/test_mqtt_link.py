"""The MQTT link never dies: any error is said once in words and retried, its state is in the retained
status, and ``check-config`` refuses a broker host that cannot be one. Against a real mosquitto.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time

import pytest

from appliance.alarms.events import AnomalyEvent, ApplianceStatus, ModelRef, iso_utc
from appliance.config import ConfigError, MqttSinkConfig, parse_config
from appliance.publish.mqtt import MqttLink
from appliance.publish.outbox import Outbox

from .conftest import ROOT, Broker, make_broker, write_appliance_config

STATUS = "appliance/box1/status"
EVENTS = "appliance/box1/cam1/events"
LONG_LABEL = "a" * 64 + ".plant.local"


def event(i: int, kind: str = "start") -> AnomalyEvent:
    now = time.time()
    stamp = {"time": iso_utc(now), "time_ms": round(now * 1000)}
    return AnomalyEvent(
        type=kind, event_id=f"ev{i}", seq=0, appliance_id="box1", camera_id="cam1", track_id=1, **stamp,
        started_at=stamp["time"], started_at_ms=stamp["time_ms"], score=3.0, peak_score=3.0,
        threshold=2.99, frames_above=5, model=ModelRef(name="m", version="1"),
    )  # fmt: skip


def status() -> dict:
    """What the daemon's status callback returns, less the cameras."""
    return ApplianceStatus(
        appliance_id="box1", version="test", time=iso_utc(time.time()), uptime_s=1.0,
        model=ModelRef(name="m", version="1"), runtime="onnxruntime onnx-int8", cameras={},
    ).model_dump(exclude_none=True)  # fmt: skip


def wait_until(condition, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def latest_status(sub, after: int = 0) -> dict | None:
    messages = sub.messages(STATUS)
    return json.loads(messages[-1]) if len(messages) > after else None


@pytest.mark.parametrize("host", ["", LONG_LABEL], ids=["empty", "label-over-63"])
def test_a_host_that_cannot_be_a_host_keeps_the_link_alive_and_in_the_status(tmp_path, caplog, host):
    broker = make_broker(tmp_path / "broker")
    caplog.set_level(logging.INFO, logger="appliance.mqtt")
    # check-config refuses such a host (test below); built past validation here because the link
    # must survive whatever reaches it (paho raises ValueError, the IDNA codec UnicodeError)
    bad = MqttSinkConfig(reconnect_max_s=0.2).model_copy(update={"host": host})
    out = MqttLink(bad, "box1", tmp_path / "state", status=status)
    try:
        out.publish(event(0))
        assert wait_until(lambda: "invalid broker host" in caplog.text, timeout=20), caplog.text
        assert wait_until(lambda: out.health.failed_attempts >= 4, timeout=20)  # retried, with backoff
        assert out._thread.is_alive()
        link = out.health.status()
        assert link["state"] == "error" and "invalid broker host" in link["last_error"]
        assert "check host" in link["last_error"]
        assert out.outbox.depth() == 1  # the event waits on disk
    finally:
        out.close(timeout=1)
    said = [r for r in caplog.records if "invalid broker host" in r.getMessage()]
    assert len(said) == 1  # once, not once per retry
    assert "Traceback" not in caplog.text
    good = MqttSinkConfig(host=broker.host, port=broker.port, reconnect_max_s=0.2)
    sub = broker.subscribe(EVENTS)
    out = MqttLink(good, "box1", tmp_path / "state")  # the host fixed: what waited goes out
    try:
        assert len(sub.wait_for(EVENTS, 1)) == 1
    finally:
        out.close()
        sub.stop()
        broker.stop()


def test_the_retained_status_says_the_link_state_and_the_dropped_count_of_earlier_runs(tmp_path):
    box = Outbox(tmp_path / "state" / "outbox.sqlite", max_messages=100)
    for i in range(130):  # an earlier run, broker away: 30 starts dropped
        box.put(EVENTS, event(i).to_json(), "start")
    box.close()
    broker = make_broker(tmp_path / "broker")
    cfg = MqttSinkConfig(host=broker.host, port=broker.port, reconnect_max_s=0.2, status_interval_s=0.5)
    out = MqttLink(cfg, "box1", tmp_path / "state", status=status)
    sub = broker.subscribe(STATUS)
    try:
        assert wait_until(lambda: (s := latest_status(sub)) and s["outbox"]["depth"] == 0)
        first = ApplianceStatus.model_validate(latest_status(sub)).model_dump(exclude_none=True)
        assert first["outbox"]["dropped"] == 30 and first["outbox"]["dropped_by_kind"] == {"start": 30}
        assert first["link"]["state"] == "connected" and first["link"]["reconnects"] == 0
        sub.stop()
        broker.stop()  # an outage
        assert wait_until(lambda: out.health.status()["state"] == "error")
        assert out.health.status()["last_error"] in (
            "connection lost",
            "cannot reach the broker (Connection refused)",
        )
        broker.start()
        sub = broker.subscribe(STATUS)
        assert wait_until(lambda: (s := latest_status(sub)) is not None and s["link"]["reconnects"] == 1)
        again = ApplianceStatus.model_validate(latest_status(sub)).model_dump(exclude_none=True)
        assert again["link"]["state"] == "connected" and again["link"]["last_error"]  # what it was
        assert again["outbox"]["dropped"] == 30
    finally:
        out.close()
        sub.stop()
        broker.stop()


def test_an_error_inside_a_session_is_said_once_and_events_still_go_out(tmp_path, caplog, broker: Broker):
    caplog.set_level(logging.INFO, logger="appliance.mqtt")
    calls = []

    def broken_status() -> dict:  # a real callback with a bug: the fault cannot be made otherwise
        calls.append(1)
        raise KeyError("cameras")

    cfg = MqttSinkConfig(host=broker.host, port=broker.port, reconnect_max_s=0.2, status_interval_s=0.2)
    sub = broker.subscribe(EVENTS)
    out = MqttLink(cfg, "box1", tmp_path / "state", status=broken_status)
    try:
        for i in range(5):
            out.publish(event(i))
        assert len(sub.wait_for(EVENTS, 5)) == 5
        assert wait_until(lambda: len(calls) >= 3)  # tried at every interval
        assert out._thread.is_alive() and out.health.status()["state"] == "connected"
    finally:
        out.close()
        sub.stop()
    said = [r for r in caplog.records if "status not published" in r.getMessage()]
    assert len(said) == 1 and "KeyError" in said[0].getMessage()


@pytest.mark.parametrize(
    "host",
    ["", LONG_LABEL, "x" * 260, "999.1.2.3", "broker plant"],
    ids=["empty", "label-64", "260", "ip", "space"],
)
def test_check_config_refuses_a_broker_host_that_cannot_be_one(tmp_path, host):
    path = write_appliance_config(
        tmp_path / "appliance.yaml",
        {"id": "cam1", "source": "clip.mp4"},
        sinks=[{"type": "mqtt", "host": host}],
    )
    run = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "check-config", str(path)],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert run.returncode == 2, run.stdout + run.stderr
    assert "sinks[0].host" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.parametrize("host", ["broker.plant.local", "10.1.2.3", "::1", "mqtt", "broker.plant.local."])
def test_valid_broker_hosts_pass(tmp_path, host):
    path = write_appliance_config(
        tmp_path / "appliance.yaml",
        {"id": "cam1", "source": "clip.mp4"},
        sinks=[{"type": "mqtt", "host": host}],
    )
    cfg = parse_config(path.read_text(), str(path))
    assert cfg.sinks[0].host == host


def test_outbox_max_bytes_takes_units_and_refuses_nonsense(tmp_path):
    def sink(value) -> list[dict]:
        return [{"type": "mqtt", "outbox_max_bytes": value}]

    cam = {"id": "cam1", "source": "clip.mp4"}
    path = write_appliance_config(tmp_path / "a.yaml", cam, sinks=sink("256 MiB"))
    assert parse_config(path.read_text()).sinks[0].outbox_max_bytes == 256 * 2**20
    path = write_appliance_config(tmp_path / "a.yaml", cam, sinks=sink("12 parsecs"))
    with pytest.raises(ConfigError, match=r"sinks\[0\]\.outbox_max_bytes"):
        parse_config(path.read_text())
