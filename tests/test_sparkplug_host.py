"""The Sparkplug edge node against an independent primary host (tests/sparkplug_host.py: mosquitto's
own clients and a hand-written protobuf reader, not paho and not the product's payload code) on a
real mosquitto: births wait for the host's STATE, a host death (its will) brings the NDEATH, what
happened meanwhile comes back flagged historical with its own timestamps, data travels by alias, the
link is TLS, and the host acknowledges and shelves alarm points with DCMD writes."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace
from typing import Any

import pytest

from appliance.alarms.alarm_points import AlarmBoard
from appliance.config.sparkplug import SparkplugSinkConfig
from appliance.publish.commands import REQUESTS
from appliance.publish.sparkplug.node import SparkplugNode
from appliance.service.alarm_service import HANDLERS

from .conftest import Broker, make_tls_broker
from .sparkplug_host import BOOLEAN, INT32, STRING, IndependentHost, Seen
from .test_sparkplug import T0, event

GROUP, NODE, HOST = "plant-1", "ceiling-7", "scada"
CAMERAS = ["cam-a", "cam-b"]


def kinds(seen: list[Seen]) -> list[tuple[str, str | None]]:
    return [(s.kind, s.device) for s in seen]


def after(seen: list[Seen], i: int, kind: str) -> list[Seen]:
    return [s for s in seen[i:] if s.kind == kind]


@pytest.fixture
def tls_broker(tmp_path) -> Any:
    broker, pki = make_tls_broker(tmp_path)
    try:
        yield broker, pki
    finally:
        broker.stop()


def test_births_wait_for_the_primary_host_and_a_host_death_brings_ndeath_then_historical_replay(
    tls_broker, tmp_path
):
    broker, pki = tls_broker
    host = IndependentHost("localhost", broker.port, GROUP, HOST, tls=["--cafile", str(pki / "plant-ca.crt")])
    cfg = SparkplugSinkConfig(
        host="localhost", port=broker.port, group_id=GROUP, edge_node_id=NODE, primary_host_id=HOST,
        tls={"ca_file": pki / "plant-ca.crt"},
    )  # fmt: skip
    node = SparkplugNode(cfg, "appliance-1", CAMERAS, "1.2.3", state_dir=tmp_path / "state", thresholds={})
    try:
        # No STATE yet: connected over TLS, silent; what happens is stored.
        node.publish(event("start", t=T0 + 100))
        node.publish(event("update", score=70.0, peak=70.0, t=T0 + 200))
        time.sleep(2.5)
        assert host.seen == [] and not node.wait_online(0)
        assert node.history.depth() == 2

        host.go_online()
        seen = host.wait_for(lambda s: len(after(s, 0, "DDATA")) >= 2, "births and the replay")
        assert kinds(seen)[:3] == [("NBIRTH", None), ("DBIRTH", "cam-a"), ("DBIRTH", "cam-b")]
        assert seen[0].values["bdSeq"] == 0
        replay = after(seen, 0, "DDATA")[:2]
        assert [r.timestamps["Anomaly/Score"] for r in replay] == [T0 + 100, T0 + 200]  # when it happened
        assert all(all(r.historical.values()) for r in replay)  # is_historical on every metric
        assert [r.values["Anomaly/Score"] for r in replay] == [60.0, 70.0]
        assert seen[1].values["Anomaly/Score"] == 70.0  # the birth carries the current value, live
        host.wait_for(lambda s: node.history.depth() == 0, "the history to drain")

        node.publish(event("update", score=75.0, peak=75.0, t=T0 + 300))
        live = host.wait_for(lambda s: len(after(s, 0, "DDATA")) >= 3, "a live DDATA")[-1]
        assert live.values == {"Anomaly/Score": 75.0, "Anomaly/PeakScore": 75.0}
        assert live.historical == {"Anomaly/Score": False, "Anomaly/PeakScore": False}

        # A late death of an older host session (older timestamp) is ignored ...
        host.state(False, host.session_ts - 60_000)
        time.sleep(1.0)
        assert host.count("NDEATH") == 0 and node.wait_online(0)
        # ... the host's own death (its will: same timestamp as its birth) is not.
        host.die()
        host.wait_for(lambda s: host.count("NDEATH") == 1, "the NDEATH after the host died")
        node.publish(event("end", score=40.0, peak=75.0, t=T0 + 400, end_reason="below_threshold"))
        node.camera_state("cam-b", "reconnecting")
        time.sleep(2.5)  # reconnected, the retained STATE says offline: no births
        assert host.count("NBIRTH") == 1 and node.history.depth() == 2

        mark = len(host.seen)
        host.go_online()
        seen = host.wait_for(lambda s: len(after(s, mark, "DDATA")) >= 2, "the second session's replay")
        second = seen[mark:]
        assert second[0].kind == "NBIRTH" and second[0].values["bdSeq"] == 1  # a new MQTT session
        ends = [s for s in after(seen, mark, "DDATA") if "Anomaly/EndReason" in s.values]
        assert (
            ends
            and ends[0].timestamps["Anomaly/EndReason"] == T0 + 400
            and ends[0].historical["Anomaly/Phase"]
        )
        state = next(s for s in after(seen, mark, "DDATA") if "Camera/State" in s.values)
        assert state.device == "cam-b" and state.values["Camera/State"] == "reconnecting"
        assert state.historical["Camera/State"]
    finally:
        node.close()
        host.stop()
    assert host.violations == []
    assert [s.kind for s in host.seen[-3:]] == ["DDEATH", "DDEATH", "NDEATH"]


class Daemon(SimpleNamespace):
    """The two things the alarm handlers read of the appliance: its alarm board and its cameras.
    The handlers, the request models and the board are the daemon's own."""


def run_command(app: Daemon):
    def run(name: str, request: dict[str, Any]) -> dict[str, Any]:
        return HANDLERS[name](app, REQUESTS[name].model_validate(request).arguments())

    return run


def test_a_host_acknowledges_and_shelves_alarm_points_by_dcmd_and_a_removed_point_brings_a_rebirth(
    broker: Broker, tmp_path
):
    host = IndependentHost(broker.host, broker.port, GROUP, HOST)
    state = tmp_path / "state"
    node: SparkplugNode | None = None
    board = AlarmBoard("appliance-1", state, [("cam-a", "press"), ("cam-a", "walkway"), ("cam-b", "all")],
                       on_change=lambda: node and node.publish_alarms())  # fmt: skip
    app = Daemon(alarms=board, workers=[])
    cfg = SparkplugSinkConfig(
        host=broker.host, port=broker.port, group_id=GROUP, edge_node_id=NODE, commands=True
    )
    node = SparkplugNode(
        cfg, "appliance-1", CAMERAS, "1.2.3", state_dir=state, alarms=board, commands=run_command(app)
    )
    try:
        node.publish_alarms()
        host.command(NODE, None, [{"name": "Node Control/Rebirth", "datatype": BOOLEAN, "value": True}])
        seen = host.wait_for(lambda s: any(x.kind == "DBIRTH" and x.device == "cam-b" for x in s), "births")
        dbirth = next(s for s in seen if s.kind == "DBIRTH" and s.device == "cam-a")
        assert (
            dbirth.values["Alarm/press/State"] == "normal"
            and dbirth.values["Alarm/press/Acknowledged"] is True
        )
        assert (
            dbirth.values["Alarm/press/Acknowledge"] is False
            and dbirth.values["Alarm/press/ShelveMinutes"] == 0
        )
        assert dbirth.values["Alarm/press/ShelvedUntil"] is None and dbirth.values["Operator/Name"] == ""

        start = event("start", event_id="e1").model_copy(update={"zone": "press"})
        board.on_events([start])
        node.publish(start)
        host.wait_for(lambda s: any(x.values.get("Alarm/press/State") == "active_unacknowledged" for x in s),
                      "the press point active")  # fmt: skip

        def wait_value(name: str, value: Any) -> Seen:
            return host.wait_for(
                lambda s: any(x.values.get(name) == value for x in s), f"{name} = {value!r}"
            )[-1]

        ack = host.alias_of("cam-a", "Alarm/press/Acknowledge")
        who = host.alias_of("cam-a", "Operator/Name")
        why = host.alias_of("cam-a", "Operator/Comment")
        host.command(NODE, "cam-a", [
            {"alias": who, "datatype": STRING, "value": "alice"},
            {"alias": why, "datatype": STRING, "value": "checked the press"},
            {"alias": ack, "datatype": BOOLEAN, "value": True},
        ])  # fmt: skip
        wait_value("Alarm/press/State", "active_acknowledged")
        wait_value("Operator/LastResult", "ack cam-a/press by alice: now active_acknowledged")
        audit = [json.loads(line) for line in (state / "alarms" / "audit.jsonl").read_text().splitlines()]
        assert audit[-1] | {"time": None} == {
            "time": None, "action": "acknowledge", "point": "cam-a/press", "by": "alice",
            "comment": "checked the press", "result": "ok",
        }  # fmt: skip

        shelve = host.alias_of("cam-a", "Alarm/walkway/ShelveMinutes")
        before = int(time.time() * 1000)
        host.command(NODE, "cam-a", [{"alias": shelve, "datatype": INT32, "value": 30}])
        wait_value("Alarm/walkway/State", "shelved")
        until = next(s for s in reversed(host.seen) if s.values.get("Alarm/walkway/ShelvedUntil"))
        assert abs(until.values["Alarm/walkway/ShelvedUntil"] - (before + 30 * 60_000)) < 10_000
        host.command(NODE, "cam-a", [{"alias": shelve, "datatype": INT32, "value": 0}])
        wait_value("Operator/LastResult", "unshelve cam-a/walkway by alice: now normal")
        host.command(
            NODE, "cam-a", [{"alias": ack, "datatype": BOOLEAN, "value": True}]
        )  # nothing to ack now
        host.command(NODE, "cam-a", [{"alias": shelve, "datatype": INT32, "value": 9999}])  # over 8 h
        wait_value(
            "Operator/LastResult",
            "refused shelve cam-a/walkway: minutes: Input should be less than or equal to 480",
        )
        assert any(
            str(s.values.get("Operator/LastResult", "")).startswith(
                "refused ack cam-a/press: nothing to acknowledge"
            )
            for s in host.seen
        )
        audit = [json.loads(line) for line in (state / "alarms" / "audit.jsonl").read_text().splitlines()]
        assert [(e["action"], e["by"], e["result"][:7]) for e in audit] == [
            ("acknowledge", "alice", "ok"),
            ("shelve", "alice", "ok"),
            ("unshelve", "alice", "ok"),
            ("acknowledge", "alice", "refused"),
        ]  # fmt: skip  (the shelf of 9999 minutes never reached the board: the request model refused it)

        # A reload deletes the walkway zone: its point goes, and the node rebirths without it.
        births = host.count("NBIRTH")
        board.sync("cam-a", [("cam-a", "press")])
        seen = host.wait_for(lambda s: host.count("NBIRTH") > births and s[-1].kind == "DBIRTH", "a rebirth")
        reborn = next(s for s in reversed(seen) if s.kind == "DBIRTH" and s.device == "cam-a")
        assert "Alarm/press/State" in reborn.values and not any("walkway" in n for n in reborn.values)
        assert reborn.values["Alarm/press/State"] == "active_acknowledged"
        assert board.retired_points() == [("cam-a", "walkway")]
    finally:
        node.close()
        host.stop()
    assert host.violations == []
