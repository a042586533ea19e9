"""Sparkplug B edge node against a real mosquitto: every payload is parsed with protobuf and checked
against the Sparkplug 3.0 rules (births first, seq, bdSeq and the NDEATH will, rebirth, deaths)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from pydantic import ValidationError

from appliance.alarms.events import AnomalyEvent, ModelRef
from appliance.config.sparkplug import SparkplugSinkConfig
from appliance.publish.sparkplug import SparkplugError
from appliance.publish.sparkplug.metrics import DEVICE_METRICS, NODE_METRICS
from appliance.publish.sparkplug.node import SparkplugNode
from appliance.publish.sparkplug.payload import (
    PROTO_PATH,
    DataType,
    Payload,
    make_metric,
    metric_value,
    parse_proto,
)
from appliance.service.credentials import CredentialError

from .conftest import make_broker

ROOT = Path(__file__).resolve().parents[1]
GROUP = "plant-1"
NODE = "ceiling-7"
CAMERAS = ["cam-a", "cam-b"]
T0 = 1_795_636_353_627


@dataclass
class Msg:
    """One Sparkplug message as a subscriber saw it, its payload decoded by protobuf."""

    kind: str
    device: str | None
    payload: Any

    @property
    def values(self) -> dict[str, Any]:
        return {m.name: metric_value(m) for m in self.payload.metrics}

    @property
    def datatypes(self) -> dict[str, DataType]:
        return {m.name: DataType(m.datatype) for m in self.payload.metrics}


class SpbWatcher:
    """A paho client on ``spBv1.0/#`` whose subscription is acknowledged before the test goes on."""

    def __init__(self, host: str, port: int, persistent: bool = False) -> None:
        self.msgs: list[Msg] = []
        self.aliases: dict[int, tuple[str, int]] = {}  # alias -> (name, data type) from the births
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id="spb-watcher", clean_session=not persistent
        )
        self.client.on_connect = lambda c, *_: c.subscribe("spBv1.0/#", qos=1)
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.loop_start()
        assert self._subscribed.wait(15), "the watcher's subscription was not acknowledged"

    def _on_message(self, client, userdata, message) -> None:
        parts = message.topic.split("/")
        assert parts[0] == "spBv1.0" and parts[1] == GROUP, message.topic
        if parts[2] in ("NCMD", "DCMD"):
            return
        kind, payload = parts[2], Payload.FromString(message.payload)
        if kind in ("NBIRTH", "DBIRTH"):
            for m in payload.metrics:
                assert m.name, f"{kind}: a birth names every metric"
                if m.HasField("alias"):
                    self.aliases[m.alias] = (m.name, m.datatype)
        elif kind in ("NDATA", "DDATA"):
            for m in payload.metrics:  # 3.0: data by alias only, without the data type the birth gave
                assert not m.name and m.HasField("alias") and not m.HasField("datatype"), m
                m.name, m.datatype = self.aliases[m.alias]
        self.msgs.append(Msg(kind, parts[4] if len(parts) > 4 else None, payload))

    def kinds(self) -> list[tuple[str, str | None]]:
        return [(m.kind, m.device) for m in self.msgs]

    def wait_for(self, done: Callable[[list[Msg]], bool], what: str, timeout: float = 15.0) -> list[Msg]:
        deadline = time.monotonic() + timeout
        while not done(list(self.msgs)):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; got {self.kinds()[-20:]}")
            time.sleep(0.02)
        return list(self.msgs)

    def wait_count(self, kind: str, count: int, timeout: float = 15.0) -> list[Msg]:
        self.wait_for(lambda ms: sum(m.kind == kind for m in ms) >= count, f"{count} {kind}", timeout)
        return [m for m in self.msgs if m.kind == kind]

    def send_ncmd(self, payload: bytes) -> None:
        self.client.publish(f"spBv1.0/{GROUP}/NCMD/{NODE}", payload, qos=1).wait_for_publish(10)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def check_sparkplug_rules(msgs: list[Msg]) -> None:
    """The ordering rules every stream must keep.

    NBIRTH first, with seq 0 and a bdSeq; a device's DBIRTH before its DDATA/DDEATH; seq up by one
    (mod 256) on every message after an NBIRTH; NDEATH without seq, closing the session.
    """
    born: set[str] | None = None
    seq = None
    for i, m in enumerate(msgs):
        where = f"message {i} ({m.kind} {m.device or ''})"
        if m.kind == "NDEATH":
            assert not m.payload.HasField("seq"), f"{where}: NDEATH must not carry seq"
            assert isinstance(m.values["bdSeq"], int), where
            born, seq = None, None
            continue
        assert m.payload.HasField("seq") and m.payload.HasField("timestamp"), where
        if m.kind == "NBIRTH":
            assert m.payload.seq == 0, f"{where}: NBIRTH seq {m.payload.seq}"
            born, seq = set(), 0
            continue
        assert born is not None, f"{where}: sent before the NBIRTH of its session"
        assert seq is not None and m.payload.seq == (seq + 1) % 256, (
            f"{where}: seq {m.payload.seq} after {seq}"
        )
        seq = m.payload.seq
        if m.kind == "DBIRTH":
            born.add(m.device)  # type: ignore[arg-type]
        elif m.kind in ("DDATA", "DDEATH"):
            assert m.device in born, f"{where}: {m.kind} before the DBIRTH of {m.device}"
            if m.kind == "DDEATH":
                born.discard(m.device)  # type: ignore[arg-type]


def event(
    kind: str = "start",
    *,
    event_id: str = "e1",
    camera: str = "cam-a",
    score: float = 60.0,
    peak: float = 60.0,
    track: int = 3,
    threshold: float = 50.0,
    t: int = T0,
    end_reason: str | None = None,
) -> AnomalyEvent:
    return AnomalyEvent(
        type=kind,  # type: ignore[arg-type]
        event_id=event_id,
        seq=0,
        appliance_id="appliance-1",
        camera_id=camera,
        track_id=track,
        time="2026-11-25T19:52:33.627Z",
        time_ms=t,
        started_at="2026-11-25T19:52:33.627Z",
        started_at_ms=T0,
        ended_at="2026-11-25T19:52:33.627Z" if kind == "end" else None,
        ended_at_ms=t if kind == "end" else None,
        end_reason=end_reason,  # type: ignore[arg-type]
        score=score,
        peak_score=peak,
        threshold=threshold,
        frames_above=5,
        model=ModelRef(name="starter", version="1.2.3"),
    )


def rebirth_request(value: bool = True) -> bytes:
    payload = Payload(timestamp=T0)
    payload.metrics.append(make_metric("Node Control/Rebirth", DataType.Boolean, value))
    return payload.SerializeToString()


@pytest.fixture
def watcher(broker) -> Iterator[SpbWatcher]:
    w = SpbWatcher(broker.host, broker.port)
    yield w
    w.stop()


@pytest.fixture
def make_node(broker) -> Iterator[Callable[..., SparkplugNode]]:
    nodes: list[SparkplugNode] = []

    def make(cameras: list[str] = CAMERAS, **kwargs: Any) -> SparkplugNode:
        cfg = SparkplugSinkConfig(host=broker.host, port=broker.port, group_id=GROUP, edge_node_id=NODE)
        node = SparkplugNode(cfg, "appliance-1", cameras, "1.2.3", **kwargs)
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.close(timeout=2)


def births(watcher: SpbWatcher, n_sessions: int = 1, cameras: list[str] = CAMERAS) -> list[Msg]:
    """Wait for ``n_sessions`` NBIRTHs, each followed by a DBIRTH per camera."""

    def done(ms: list[Msg]) -> bool:
        starts = [i for i, m in enumerate(ms) if m.kind == "NBIRTH"]
        if len(starts) < n_sessions:
            return False
        after = {m.device for m in ms[starts[n_sessions - 1] :] if m.kind == "DBIRTH"}
        return after >= set(cameras)

    return watcher.wait_for(done, f"NBIRTH #{n_sessions} and its DBIRTHs")


# -- births and data


def test_nbirth_comes_first_with_seq_0_and_bdseq_then_a_dbirth_per_camera_with_every_metric(
    watcher, make_node
):
    node = make_node(thresholds={"cam-b": 70.0})
    msgs = births(watcher)
    nbirth, *dbirths = msgs
    assert nbirth.kind == "NBIRTH" and nbirth.payload.seq == 0
    assert nbirth.datatypes == NODE_METRICS
    assert nbirth.values["bdSeq"] == node.bdseq == 0
    assert nbirth.values["Node Control/Rebirth"] is False
    assert nbirth.values["Model/Version"] == "1.2.3"
    assert abs(nbirth.payload.timestamp - time.time() * 1000) < 60_000  # milliseconds
    assert [(m.kind, m.device, m.payload.seq) for m in dbirths] == [
        ("DBIRTH", "cam-a", 1),
        ("DBIRTH", "cam-b", 2),
    ]
    for m in dbirths:
        assert m.datatypes == DEVICE_METRICS
        assert m.values["Anomaly/Active"] is False and m.values["Anomaly/OpenCount"] == 0
        assert m.values["Anomaly/Score"] is None and m.values["Camera/State"] == "starting"
    assert dbirths[0].values["Anomaly/Threshold"] is None
    assert dbirths[1].values["Anomaly/Threshold"] == 70.0
    check_sparkplug_rules(msgs)


def test_ddata_carries_only_the_metrics_that_changed(watcher, make_node):
    node = make_node()
    seen = len(births(watcher))

    def next_data(kind: str = "DDATA") -> Msg:
        """The message after the last one looked at (it may have arrived before this call)."""
        nonlocal seen
        watcher.wait_for(lambda ms: len(ms) > seen, f"a {kind}")
        m = watcher.msgs[seen]
        assert m.kind == kind, watcher.kinds()[seen:]
        seen += 1
        return m

    node.publish(event("start", score=60.0, peak=60.0, t=T0 + 100))
    m = next_data()
    assert m.device == "cam-a"
    assert m.values == {
        "Anomaly/Active": True,
        "Anomaly/OpenCount": 1,
        "Anomaly/EventId": "e1",
        "Anomaly/Phase": "start",
        "Anomaly/TrackId": 3,
        "Anomaly/Score": 60.0,
        "Anomaly/PeakScore": 60.0,
        "Anomaly/Threshold": 50.0,
        "Anomaly/StartedAt": T0,
    }
    assert {mt.timestamp for mt in m.payload.metrics} == {T0 + 100}

    node.publish(event("update", score=55.0, peak=60.0, t=T0 + 200))
    assert next_data().values == {"Anomaly/Phase": "update", "Anomaly/Score": 55.0}
    node.publish(event("update", score=55.0, peak=60.0, t=T0 + 300))  # nothing changed: no DDATA
    node.set_threshold("cam-a", 50.0)  # unchanged too
    node.camera_state("cam-a", "reconnecting")
    m = next_data()
    assert m.values == {"Camera/State": "reconnecting"}
    node.publish(event("start", event_id="e2", track=-1, score=80.0, peak=80.0, t=T0 + 400))
    assert next_data().values == {
        "Anomaly/OpenCount": 2,
        "Anomaly/EventId": "e2",
        "Anomaly/Phase": "start",
        "Anomaly/TrackId": -1,  # Int32 travels as two's complement in int_value
        "Anomaly/Score": 80.0,
        "Anomaly/PeakScore": 80.0,
    }
    node.publish(event("end", score=40.0, peak=60.0, t=T0 + 500, end_reason="below_threshold"))
    assert next_data().values == {
        "Anomaly/OpenCount": 1,
        "Anomaly/EventId": "e1",
        "Anomaly/Phase": "end",
        "Anomaly/TrackId": 3,
        "Anomaly/Score": 40.0,
        "Anomaly/PeakScore": 60.0,
        "Anomaly/EndReason": "below_threshold",
    }
    node.publish(event("end", event_id="e2", track=-1, score=40.0, peak=80.0, end_reason="track_lost"))
    m = next_data()
    assert m.values["Anomaly/Active"] is False and m.values["Anomaly/OpenCount"] == 0
    node.set_threshold("cam-b", 70.0)
    m = next_data()
    assert (m.device, m.values) == ("cam-b", {"Anomaly/Threshold": 70.0})
    node.status_update("degraded", "cam-a reconnecting")
    assert next_data("NDATA").values == {"Status/State": "degraded", "Status/Message": "cam-a reconnecting"}
    node.set_model_version("1.3.0")
    assert next_data("NDATA").values == {"Model/Version": "1.3.0"}
    check_sparkplug_rules(watcher.msgs)


def test_an_event_of_an_unannounced_camera_gets_a_dbirth_before_its_ddata(watcher, make_node):
    node = make_node()
    births(watcher)
    node.publish(event(camera="cam-new"))
    msgs = watcher.wait_for(lambda ms: any(m.kind == "DDATA" for m in ms), "the DDATA of cam-new")
    assert [(m.kind, m.device) for m in msgs[-2:]] == [("DBIRTH", "cam-new"), ("DDATA", "cam-new")]
    check_sparkplug_rules(msgs)


def test_seq_increments_by_one_on_every_message_and_wraps_from_255_to_0(watcher, make_node):
    node = make_node()
    births(watcher)
    for i in range(300):
        node.publish(event("update", score=100.0 + i, peak=400.0, t=T0 + i))
    ddata = watcher.wait_count("DDATA", 300)
    seqs = [m.payload.seq for m in watcher.msgs]
    assert seqs[:3] == [0, 1, 2] and 255 in seqs
    assert seqs[seqs.index(255) + 1] == 0
    assert [metric_value(m.payload.metrics[-1]) for m in ddata[-2:]] == [398.0, 399.0]
    check_sparkplug_rules(watcher.msgs)


# -- rebirth, deaths and bdSeq


def test_ncmd_rebirth_brings_a_new_nbirth_with_seq_0_and_dbirths_with_current_values(watcher, make_node):
    node = make_node()
    births(watcher)
    node.publish(event("start"))
    watcher.wait_count("DDATA", 1)
    watcher.send_ncmd(b"\xff\x00 not protobuf")  # ignored, with a warning
    watcher.send_ncmd(rebirth_request(False))  # not a request
    watcher.send_ncmd(rebirth_request(True))
    msgs = births(watcher, n_sessions=2)
    assert [m.kind for m in msgs].count("NBIRTH") == 2  # only the true request caused one
    first, second = (i for i, m in enumerate(msgs) if m.kind == "NBIRTH")
    assert msgs[second].payload.seq == 0
    assert msgs[second].values["bdSeq"] == msgs[first].values["bdSeq"]  # same MQTT session
    assert msgs[second].values["Node Control/Rebirth"] is False
    dbirth_a = next(m for m in msgs[second:] if m.device == "cam-a")
    assert dbirth_a.values["Anomaly/Active"] is True and dbirth_a.values["Anomaly/Score"] == 60.0
    node.publish(event("update", score=61.0))
    msgs = watcher.wait_count("DDATA", 2)
    assert msgs[-1].payload.seq == 3  # NBIRTH 0, DBIRTH 1 and 2, then this
    check_sparkplug_rules(watcher.msgs)


def test_a_lost_connection_makes_the_broker_send_the_ndeath_will_and_the_reconnect_increments_bdseq(
    watcher, make_node
):
    node = make_node()
    births(watcher)
    bdseq = watcher.msgs[0].values["bdSeq"]
    node._link.client.socket().shutdown(socket.SHUT_RDWR)  # the link drops without an MQTT DISCONNECT
    ndeath = watcher.wait_count("NDEATH", 1)[0]
    assert ndeath.values == {"bdSeq": bdseq}
    assert not ndeath.payload.HasField("seq")
    msgs = births(watcher, n_sessions=2)  # paho reconnects after about 1 s
    second = [m for m in msgs if m.kind == "NBIRTH"][1]
    assert second.values["bdSeq"] == bdseq + 1 == node.bdseq
    assert second.payload.seq == 0
    check_sparkplug_rules(msgs)


def test_a_node_started_while_the_broker_is_down_comes_online_with_bdseq_0_when_it_appears(broker, make_node):
    broker.stop()
    node = make_node()  # never blocks on the broker
    node.publish(event("start"))  # kept as the current value for the births
    time.sleep(0.3)
    broker.start()
    assert node.wait_online(20)
    watcher = SpbWatcher(broker.host, broker.port)
    try:
        watcher.send_ncmd(rebirth_request())  # the first births may have gone out before the watcher
        msgs = births(watcher)
        nbirth = next(m for m in msgs if m.kind == "NBIRTH")
        assert nbirth.values["bdSeq"] == 0  # failed connection attempts start no session
        dbirth = next(m for m in msgs if m.device == "cam-a")
        assert dbirth.values["Anomaly/Active"] is True
    finally:
        watcher.stop()


def test_changes_made_while_the_broker_is_away_follow_the_next_births_flagged_historical(tmp_path):
    """The broker restarts (a persistent session keeps the watcher's subscription, queueing QoS 0):
    what the node saw meanwhile arrives after its new births with is_historical and its own time."""
    broker = make_broker(
        tmp_path / "broker", "allow_anonymous true\nqueue_qos0_messages true\n", persistent=True
    )
    watcher = SpbWatcher(broker.host, broker.port, persistent=True)
    cfg = SparkplugSinkConfig(host=broker.host, port=broker.port, group_id=GROUP, edge_node_id=NODE)
    node = SparkplugNode(cfg, "appliance-1", CAMERAS, "1.2.3", state_dir=tmp_path / "state")
    try:
        births(watcher)
        broker.stop()
        deadline = time.monotonic() + 15
        while node.wait_online(0):
            assert time.monotonic() < deadline, "the node did not notice the broker leaving"
            time.sleep(0.05)
        node.publish(event("start", t=T0 + 100))
        node.camera_state("cam-b", "reconnecting")
        node.publish(event("end", t=T0 + 300, end_reason="track_lost"))
        assert node.history.depth() == 3
        broker.start()
        msgs = watcher.wait_for(lambda ms: sum(m.kind == "DDATA" for m in ms) >= 3, "the replay", 30.0)
        second = max(i for i, m in enumerate(msgs) if m.kind == "NBIRTH")
        replay = [m for m in msgs[second:] if m.kind == "DDATA"]
        what = [(m.device, m.values.get("Anomaly/Phase") or m.values.get("Camera/State")) for m in replay]
        assert what == [
            ("cam-a", "start"), ("cam-b", "reconnecting"), ("cam-a", "end"),
        ]  # fmt: skip
        assert all(mt.is_historical for m in replay for mt in m.payload.metrics)
        assert replay[0].payload.metrics[0].timestamp == T0 + 100
        dbirth_a = next(m for m in msgs[second:] if m.kind == "DBIRTH" and m.device == "cam-a")
        assert dbirth_a.values["Anomaly/Phase"] == "end"  # the births carry the current values
        deadline = time.monotonic() + 10
        while node.history.depth():
            assert time.monotonic() < deadline, "the history was not emptied after the replay"
            time.sleep(0.05)
        check_sparkplug_rules(msgs[second:])
    finally:
        node.close()
        watcher.stop()
        broker.stop()


def test_close_returns_promptly_while_the_broker_is_down(broker, make_node):
    broker.stop()
    node = make_node()
    time.sleep(0.2)
    started = time.monotonic()
    node.close()
    assert time.monotonic() - started < 5


NODE_PROCESS = """
import sys, time
from pathlib import Path
from appliance.config.sparkplug import SparkplugSinkConfig
from appliance.publish.sparkplug.node import SparkplugNode

port, group, node_id, state = sys.argv[1:]
cfg = SparkplugSinkConfig(host="127.0.0.1", port=int(port), group_id=group, edge_node_id=node_id)
node = SparkplugNode(cfg, "appliance-1", ["cam-a"], "1.2.3", state_dir=Path(state))
time.sleep(120)
"""


def test_a_killed_process_leaves_the_ndeath_will_and_a_restart_takes_the_next_bdseq(
    watcher, broker, tmp_path
):
    state = tmp_path / "state"

    def start() -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-c", NODE_PROCESS, str(broker.port), GROUP, NODE, str(state)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )

    procs = [start()]
    try:
        msgs = births(watcher, cameras=["cam-a"])
        bdseq = msgs[0].values["bdSeq"]
        assert bdseq == 0
        procs[0].send_signal(signal.SIGKILL)  # no DDEATH, no NDEATH from the node itself
        procs[0].wait(10)
        ndeath = watcher.wait_count("NDEATH", 1)[0]
        assert ndeath.values == {"bdSeq": bdseq}
        assert [m.kind for m in watcher.msgs].count("DDEATH") == 0
        procs.append(start())  # same state directory: bdSeq survives the restart
        msgs = births(watcher, n_sessions=2, cameras=["cam-a"])
        assert [m for m in msgs if m.kind == "NBIRTH"][1].values["bdSeq"] == bdseq + 1
        check_sparkplug_rules(msgs)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)


def test_a_clean_close_sends_a_ddeath_per_camera_then_the_ndeath_and_no_will(watcher, make_node):
    node = make_node()
    msgs = births(watcher)
    bdseq = msgs[0].values["bdSeq"]
    node.publish(event("start"))
    watcher.wait_count("DDATA", 1)
    node.close()
    msgs = watcher.wait_count("NDEATH", 1)
    tail = [(m.kind, m.device) for m in watcher.msgs[-3:]]
    assert tail == [("DDEATH", "cam-a"), ("DDEATH", "cam-b"), ("NDEATH", None)]
    assert watcher.msgs[-1].values == {"bdSeq": bdseq}
    assert [m.payload.seq for m in watcher.msgs[-3:-1]] == [4, 5]  # NBIRTH, 2 DBIRTH, DDATA, then these
    time.sleep(0.5)  # a will would follow the dropped link at once; the DISCONNECT discarded it
    assert [m.kind for m in watcher.msgs].count("NDEATH") == 1
    node.publish(event("update", score=70.0))  # after close: ignored, no traceback
    check_sparkplug_rules(watcher.msgs)


def test_bdseq_is_kept_in_the_state_dir_and_wraps_after_255(broker, tmp_path):
    cfg = SparkplugSinkConfig(host=broker.host, port=broker.port, group_id=GROUP, edge_node_id=NODE)
    state_file = tmp_path / f"sparkplug-{GROUP}-{NODE}.bdseq"
    state_file.write_text("255\n")
    node = SparkplugNode(cfg, "appliance-1", ["cam-a"], "1.2.3", state_dir=tmp_path)
    try:
        assert node.bdseq == 255
        assert state_file.read_text().strip() == "0"  # what the next start will use
    finally:
        node.close(timeout=2)


# -- configuration, payload schema, user mistakes


def test_config_defaults_the_edge_node_id_to_the_appliance_id_and_refuses_bad_values(tmp_path):
    cfg = SparkplugSinkConfig(group_id="plant-1")
    assert (cfg.type, cfg.host, cfg.port, cfg.keepalive_s) == ("sparkplug", "127.0.0.1", 1883, 30)
    assert cfg.node_id("appliance-1") == "appliance-1"
    assert SparkplugSinkConfig(group_id="g", edge_node_id="n").node_id("appliance-1") == "n"
    for bad in (
        {"group_id": "a/b"},
        {"group_id": "a+b"},
        {"group_id": ""},
        {"group_id": "g", "edge_node_id": "#"},
    ):
        with pytest.raises(ValidationError, match="without"):
            SparkplugSinkConfig(**bad)
    with pytest.raises(ValidationError, match="Extra inputs"):
        SparkplugSinkConfig(group_id="g", topic_prefix="x")
    with pytest.raises(ValidationError, match="not both"):
        SparkplugSinkConfig(group_id="g", password="a", password_file=tmp_path / "p")
    with pytest.raises(CredentialError, match="sparkplug password_file"):
        SparkplugSinkConfig(group_id="g", password_file=tmp_path / "missing").resolve_password()
    (tmp_path / "p").write_text("s3cret\n")
    assert SparkplugSinkConfig(group_id="g", password_file=tmp_path / "p").resolve_password() == "s3cret"
    assert all(f.description for f in SparkplugSinkConfig.model_fields.values())


def test_bad_ids_and_an_unwritable_state_dir_are_clear_errors(tmp_path):
    cfg = SparkplugSinkConfig(host="127.0.0.1", port=1, group_id="g")
    with pytest.raises(SparkplugError, match="edge node id 'a/b'"):
        SparkplugNode(cfg, "a/b", ["cam-a"], "1")
    with pytest.raises(SparkplugError, match="unique"):
        SparkplugNode(cfg, "n", ["cam-a", "cam-a"], "1")
    with pytest.raises(SparkplugError, match="device"):
        SparkplugNode(cfg, "n", ["cam#1"], "1")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SparkplugError, match="state_dir"):
        SparkplugNode(cfg, "n", ["cam-a"], "1", state_dir=blocker / "sub")


def test_the_payload_classes_follow_the_proto_file():
    fd = parse_proto(PROTO_PATH.read_text())
    assert fd.package == "org.eclipse.tahu.protobuf"
    assert {v.name: v.number for v in fd.enum_type[0].value} == {t.name: t.value for t in DataType}
    metric_fields = {f.name: f.number for f in Payload.Metric.DESCRIPTOR.fields}
    assert (
        metric_fields["name"] == 1 and metric_fields["is_null"] == 7 and metric_fields["string_value"] == 15
    )
    assert [f.name for f in Payload.DESCRIPTOR.fields] == ["timestamp", "metrics", "seq", "uuid", "body"]
    for datatype, value in [
        (DataType.Int32, -2),
        (DataType.Int64, -(2**40)),
        (DataType.UInt64, 2**63),
        (DataType.Float, 1.5),
        (DataType.Double, 0.1),
        (DataType.Boolean, True),
        (DataType.String, "x"),
        (DataType.DateTime, T0),
        (DataType.Bytes, b"\x00\x01"),
        (DataType.Float, None),
    ]:
        m = Payload.Metric.FromString(make_metric("m", datatype, value).SerializeToString())
        assert metric_value(m) == value
    assert make_metric("m", DataType.Int32, -1).int_value == 2**32 - 1  # two's complement on the wire
