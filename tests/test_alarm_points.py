"""Alarm points (ISA-18.2 subset): the state machine on real detector events, its journal across a
restart, the audit log; and on a real broker, a late subscriber seeing the retained state and an
operator acknowledging with mosquitto_pub."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from appliance.alarms.alarm_points import AlarmBoard, AlarmRefused
from appliance.alarms.detector import HysteresisRule, TrackDetector
from appliance.alarms.events import ModelRef
from appliance.config import load_config
from appliance.service.demo import WORKCELL_CLIP

from .conftest import Broker, write_appliance_config


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def anomaly(track: int = 1, scores=(5.0, 5.0, 0.0, 0.0)):
    """The events of one real detector on ``scores`` (start after 2 above, end after 2 below)."""
    det = TrackDetector("box", "cam", track, ModelRef(name="m", version="1"), HysteresisRule(1.0, 2, 2))
    out = []
    for i, s in enumerate(scores):
        out += det.observe(s, 100.0 + i, None)
    return [e for e in out if e.type in ("start", "end")]  # [start, end]


def board(tmp_path: Path, clock: Clock | None = None) -> AlarmBoard:
    return AlarmBoard("box", tmp_path, [("cam", "all"), ("cam2", "press")], clock=clock or Clock())


def state(b: AlarmBoard, key: str = "cam/all") -> str:
    return next(m.state for m in b.messages() if f"{m.camera_id}/{m.point}" == key)


def test_acknowledged_while_active_returns_to_normal_when_the_anomaly_ends(tmp_path):
    b = board(tmp_path)
    start, end = anomaly()
    b.on_events([start])
    assert state(b) == "active_unacknowledged"
    msg = b.acknowledge("cam", "all", "anna", "walked over, all fine")
    assert (msg.state, msg.acknowledged_by, msg.comment) == (
        "active_acknowledged",
        "anna",
        "walked over, all fine",
    )
    b.on_events([end])
    assert state(b) == "normal"


def test_an_unacknowledged_alarm_that_ends_waits_for_an_operator(tmp_path):
    b = board(tmp_path)
    b.on_events(anomaly())
    assert state(b) == "returned_unacknowledged"
    first, second = anomaly(track=2), anomaly(track=3)
    b.on_events([first[0], second[0]])  # two people at once: one alarm, counted twice
    (m,) = [m for m in b.messages() if m.point == "all"]
    assert (m.state, m.active_anomalies, m.anomalies, m.tracks) == ("active_unacknowledged", 2, 3, [1, 2, 3])
    b.on_events([first[1], second[1]])
    assert state(b) == "returned_unacknowledged"
    assert b.acknowledge("cam", "all", "anna").state == "normal"
    with pytest.raises(AlarmRefused, match="nothing to acknowledge: cam/all is normal"):
        b.acknowledge("cam", "all", "anna")
    with pytest.raises(AlarmRefused, match="no alarm point cam/press"):
        b.acknowledge("cam", "press", "anna")
    audit = [json.loads(x) for x in (tmp_path / "alarms" / "audit.jsonl").read_text().splitlines()]
    assert [(a["action"], a["by"], a["result"][:7]) for a in audit] == [
        ("acknowledge", "anna", "ok"), ("acknowledge", "anna", "refused"), ("acknowledge", "anna", "refused")
    ]  # fmt: skip


def test_a_shelf_expires_by_itself_and_an_anomaly_still_open_then_waits_for_an_operator(tmp_path):
    clock = Clock()
    b = board(tmp_path, clock)
    start, end = anomaly()
    assert b.shelve("cam", "all", "ben", 600.0, "forklift charging").state == "shelved"
    b.on_events([start])
    assert state(b) == "shelved"  # counted, not waiting for anyone
    clock.now += 599
    b.tick({})
    assert state(b) == "shelved"
    clock.now += 2
    b.tick({})
    assert state(b) == "active_unacknowledged"
    audit = [json.loads(x) for x in (tmp_path / "alarms" / "audit.jsonl").read_text().splitlines()]
    assert [a["action"] for a in audit] == ["shelve", "shelve_expired"] and audit[0]["duration_s"] == 600.0
    with pytest.raises(AlarmRefused, match="at most 28800 s"):
        b.shelve("cam", "all", "ben", 9 * 3600.0)
    b.on_events([end])
    assert state(b) == "returned_unacknowledged"


def test_out_of_service_suppresses_and_lifting_it_restores_what_is_open(tmp_path):
    b = board(tmp_path)
    start, _ = anomaly()
    b.on_events([start])
    b.tick({"cam/all": "camera reconnecting"})
    (m,) = [m for m in b.messages() if m.point == "all"]
    assert (m.state, m.out_of_service) == ("out_of_service", "camera reconnecting")
    with pytest.raises(AlarmRefused, match="nothing to acknowledge"):
        b.acknowledge("cam", "all", "anna")
    b.tick({"cam/all": None})
    assert state(b) == "active_unacknowledged"


def test_states_survive_a_restart_and_an_alarm_open_at_a_hard_kill_returns_unacknowledged(tmp_path):
    b = board(tmp_path)
    start, _ = anomaly()
    b.on_events([start])
    b.shelve("cam2", "press", "ben", 3600.0)
    del b  # a hard kill: nothing more is written
    again = board(tmp_path)
    assert state(again) == "active_unacknowledged" and state(again, "cam2/press") == "shelved"
    again.restarted()  # the daemon's restart ends came first; nothing can be open at start
    (m,) = [m for m in again.messages() if m.point == "all"]
    assert (m.state, m.active_anomalies, m.anomalies) == ("returned_unacknowledged", 0, 1)
    assert state(again, "cam2/press") == "shelved"


def test_a_late_subscriber_sees_the_retained_alarm_and_an_operator_acknowledges_it(tmp_path, broker: Broker):
    """The dancer (anomalous for the starter) on a real broker: the retained point state reaches a
    subscriber that connects after it was published; `ack` sent with mosquitto_pub is answered,
    audited and changes the retained state."""
    from appliance.service.daemon import Appliance

    camera = {"id": "workcell", "source": str(WORKCELL_CLIP), "fps": None, "loop": True, "realtime": True}
    mqtt = {"type": "mqtt", "host": broker.host, "port": broker.port, "commands": True}
    cfg = load_config(
        write_appliance_config(
            tmp_path / "c.yaml", camera, detector={"threshold": 2.77, "start_windows": 3}, sinks=[mqtt]
        )
    )
    topic = "appliance/test-box/workcell/alarm/all"
    app = Appliance(cfg)
    app.start()
    try:
        deadline = time.monotonic() + 60
        while app.alarms.messages()[0].state != "active_unacknowledged":
            assert time.monotonic() < deadline, "no alarm from the dancer"
            time.sleep(0.1)
        time.sleep(1.0)  # published by now; the subscriber below connects afterwards
        late = broker.subscribe(topic)
        retained = json.loads(late.wait_for(topic, 1, timeout=10)[0])
        assert retained["state"] in ("active_unacknowledged", "returned_unacknowledged"), retained
        answers = broker.subscribe("appliance/test-box/cmd/ack/response")
        request = {"request_id": "r1", "by": "anna", "comment": "checked the cell"}
        subprocess.run(
            ["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-q", "1",
             "-t", "appliance/test-box/cmd/ack", "-m", json.dumps(request)],
            check=True, timeout=10,
        )  # fmt: skip
        answer = json.loads(answers.wait_for("appliance/test-box/cmd/ack/response", 1, timeout=15)[0])
        assert answer["ok"] and answer["request_id"] == "r1", answer
        assert answer["alarm"]["acknowledged_by"] == "anna"
        assert answer["alarm"]["state"] in ("active_acknowledged", "normal")

        # a retained state carrying the acknowledgement follows (normal: the alarm had returned
        # already, or ended since; the dancer's next loop may raise a new alarm after it)
        def acknowledged() -> bool:
            later = [json.loads(p) for p in late.messages(topic)[1:]]
            return any(m["state"] == "normal" or m.get("acknowledged_by") == "anna" for m in later)

        deadline = time.monotonic() + 10
        while not acknowledged():
            assert time.monotonic() < deadline, late.messages(topic)
            time.sleep(0.05)
        late.stop()
        answers.stop()
    finally:
        app.stop()
    audit = [json.loads(x) for x in (tmp_path / "state" / "alarms" / "audit.jsonl").read_text().splitlines()]
    assert [(a["action"], a["by"], a["comment"], a["result"]) for a in audit] == [
        ("acknowledge", "anna", "checked the cell", "ok")
    ]


def test_a_reload_that_deletes_a_zone_retires_its_point_and_takes_its_retained_state_down(
    tmp_path, broker: Broker
):
    """AlarmBoard.sync (the SIGHUP path) drops a deleted zone's point, keeps the others' states, and
    the MQTT link replaces the retired point's retained state with an empty retained message, so a
    SCADA that subscribes later sees no ghost alarm. A board started on a journal that still holds
    the point retires it too (the zone was deleted while the appliance was stopped)."""
    from appliance.config import MqttSinkConfig
    from appliance.publish.mqtt import MqttLink

    clock = Clock()
    b = AlarmBoard("box", tmp_path, [("cam", "press"), ("cam", "walkway")], clock=clock)
    start, _ = anomaly()
    b.on_events([start.model_copy(update={"zone": "press"})])
    link = MqttLink(MqttSinkConfig(host=broker.host, port=broker.port), "box", tmp_path / "link", alarms=b)
    try:
        before = broker.subscribe("appliance/box/cam/alarm/+")
        before.wait_for("appliance/box/cam/alarm/walkway", 1, timeout=15)
        before.stop()
        b.sync("cam", [("cam", "press")])
        assert [m.point for m in b.messages()] == ["press"] and state(
            b, "cam/press"
        ) == "active_unacknowledged"
        assert b.retired_points() == [("cam", "walkway")]
        link.publish_alarms()
        deadline = time.monotonic() + 15
        while True:
            late = broker.subscribe("appliance/box/cam/alarm/+")
            time.sleep(0.5)
            late.stop()
            if not late.messages("appliance/box/cam/alarm/walkway"):
                break
            assert time.monotonic() < deadline, "the walkway's retained state is still there"
        assert (
            json.loads(late.messages("appliance/box/cam/alarm/press")[0])["state"] == "active_unacknowledged"
        )
    finally:
        link.close()
    again = AlarmBoard("box", tmp_path, [("cam", "press")], clock=clock)
    assert again.retired_points() == [] and [m.point for m in again.messages()] == ["press"]
    stale = AlarmBoard("box", tmp_path, [("cam", "other")], clock=clock)
    assert stale.retired_points() == [("cam", "press")]
