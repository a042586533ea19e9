"""The MQTT link under faults, against a real mosquitto: nothing lost, in order, clear messages.

Events are real :class:`AnomalyEvent` payloads; the subscriber is a real paho client with a
persistent session (clean_session=False, QoS 1) on a broker with persistence, so it misses nothing
across broker restarts either.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from appliance.alarms.events import AnomalyEvent, ModelRef, iso_utc
from appliance.config import MqttSinkConfig
from appliance.publish.mqtt import MqttLink
from appliance.publish.outbox import Outbox

from .conftest import ROOT, Broker, make_broker, make_tls_broker

TOPIC = "appliance/box1/cam1/events"


def event(i: int, kind: str = "update") -> AnomalyEvent:
    now = time.time()
    stamp = {"time": iso_utc(now), "time_ms": round(now * 1000)}
    return AnomalyEvent(
        type=kind, event_id=f"ev{i // 100}", seq=i % 100, appliance_id="box1", camera_id="cam1", track_id=1,
        **stamp, started_at=stamp["time"], started_at_ms=stamp["time_ms"], score=float(i),
        peak_score=float(i), threshold=1.0, frames_above=i, model=ModelRef(name="m", version="1"),
    )  # fmt: skip


class Collector:
    """A real subscriber with a persistent session: reconnects by itself, keeps every message."""

    def __init__(self, broker: Broker, topic: str = "appliance/#") -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.subscribed = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id="scada-test",
            clean_session=False,
            protocol=mqtt.MQTTv311,
        )
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload))
        self.client.reconnect_delay_set(0.2, 1)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self.subscribed.wait(10)

    def seqs(self) -> list[int]:
        """Event numbers received on the events topic (i = 100 * event + seq)."""
        out = []
        for topic, payload in list(self.messages):
            if topic == TOPIC:
                e = json.loads(payload)
                out.append(int(e["event_id"][2:]) * 100 + e["seq"])
        return out

    def wait_for(self, wanted: set[int], timeout: float = 60.0) -> list[int]:
        deadline = time.monotonic() + timeout
        while not wanted <= set(self.seqs()) and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.seqs()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def in_order_without_duplicates(received: list[int]) -> list[int]:
    seen, out = set(), []
    for r in received:
        if r not in seen:
            seen.add(r)
            out.append(r)
    return out


def link(broker: Broker, state: Path, **kw) -> MqttLink:
    cfg = MqttSinkConfig(host=broker.host, port=broker.port, reconnect_max_s=1.0, **kw)
    return MqttLink(cfg, "box1", state)


def test_broker_outage_loses_nothing_and_keeps_order(tmp_path):
    broker = make_broker(tmp_path / "broker", persistent=True)
    sub = Collector(broker)
    out = link(broker, tmp_path / "state")
    try:
        assert out.connected.wait(10)
        for i in range(100):
            out.publish(event(i))
            time.sleep(0.005)
        broker.stop()  # the broker goes away in the middle of the stream
        for i in range(100, 250):
            out.publish(event(i))
            time.sleep(0.005)
        assert out.outbox.depth() > 0  # buffered on disk meanwhile
        time.sleep(1.0)
        broker.start()
        for i in range(250, 300):
            out.publish(event(i))
        got = sub.wait_for(set(range(300)))
    finally:
        out.close()
        sub.close()
        broker.stop()
    assert in_order_without_duplicates(got) == list(range(300))
    duplicates = len(got) - len(set(got))
    latency = out.max_replay_latency_s
    print(f"sent 300, received {len(got)} ({duplicates} duplicates), max latency {latency:.2f} s")
    assert Outbox(tmp_path / "state" / "outbox.sqlite").depth() == 0  # all acknowledged


PUBLISHER = """
import sys, time
sys.path.insert(0, {root!r})
from appliance.config import MqttSinkConfig
from appliance.publish.mqtt import MqttLink
from tests.test_mqtt import event
first, last, port = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
out = MqttLink(MqttSinkConfig(host="127.0.0.1", port=port, reconnect_max_s=0.5), "box1", {state!r})
for i in range(first, last):
    out.publish(event(i))
print("queued", flush=True)
if sys.argv[4] == "hang":
    time.sleep(3600)
out.close(timeout=20)
"""


def run_publisher(tmp_path: Path, port: int, first: int, last: int, hang: bool) -> subprocess.Popen:
    script = tmp_path / "publisher.py"
    script.write_text(PUBLISHER.format(root=str(ROOT), state=str(tmp_path / "state")))
    proc = subprocess.Popen(
        [sys.executable, str(script), str(first), str(last), str(port), "hang" if hang else "close"],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "queued"
    return proc


def test_appliance_killed_with_events_pending_delivers_them_after_restart(tmp_path):
    broker = make_broker(tmp_path / "broker", persistent=True)
    sub = Collector(broker)
    try:
        broker.stop()  # events pile up in the outbox...
        proc = run_publisher(tmp_path, broker.port, 0, 120, hang=True)
        proc.send_signal(signal.SIGKILL)  # ...and the appliance dies with all of them pending
        proc.wait(10)
        assert Outbox(tmp_path / "state" / "outbox.sqlite").depth() == 120
        broker.start()
        proc = run_publisher(tmp_path, broker.port, 120, 150, hang=False)
        proc.wait(60)
        got = sub.wait_for(set(range(150)))
    finally:
        sub.close()
        broker.stop()
    assert in_order_without_duplicates(got) == list(range(150))
    assert Outbox(tmp_path / "state" / "outbox.sqlite").depth() == 0


def test_broker_outage_and_appliance_crash_together_lose_nothing(tmp_path):
    broker = make_broker(tmp_path / "broker", persistent=True)
    sub = Collector(broker)
    try:
        proc = run_publisher(tmp_path, broker.port, 0, 50, hang=True)
        got = sub.wait_for(set(range(50)), timeout=30)
        broker.stop()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc = run_publisher(tmp_path, broker.port, 50, 130, hang=True)  # broker still away
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        broker.start()
        proc = run_publisher(tmp_path, broker.port, 130, 160, hang=False)
        proc.wait(60)
        got = sub.wait_for(set(range(160)))
    finally:
        sub.close()
        broker.stop()
    assert in_order_without_duplicates(got) == list(range(160))


def test_wrong_password_is_reported_clearly_and_retried_without_crashing(tmp_path, caplog):
    passwords = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwords), "appliance", "right"], check=True)
    os.chmod(passwords, 0o600)
    broker = make_broker(tmp_path / "broker", f"allow_anonymous false\npassword_file {passwords}\n")
    caplog.set_level(logging.INFO, logger="appliance.mqtt")
    secret = tmp_path / "pw"
    secret.write_text("wrong\n")
    out = link(broker, tmp_path / "state", username="appliance", password_file=secret)
    try:
        out.publish(event(0, "start"))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and "check username and password" not in caplog.text:
            time.sleep(0.1)
        time.sleep(2.0)  # it keeps retrying with backoff
        assert out._thread.is_alive() and not out.connected.is_set()
        assert out.outbox.depth() == 1  # the event waits on disk
    finally:
        out.close(timeout=1)
        broker.stop()
    refusals = [r for r in caplog.records if "check username and password" in r.getMessage()]
    assert len(refusals) == 1  # said once, not once per retry
    assert "Traceback" not in caplog.text


def test_tls_connects_with_the_right_ca_and_refuses_the_wrong_one_clearly(tmp_path, caplog):
    broker, d = make_tls_broker(tmp_path)
    caplog.set_level(logging.INFO, logger="appliance.mqtt")
    good = link(broker, tmp_path / "good", tls={"ca_file": d / "plant-ca.crt"})
    bad = link(broker, tmp_path / "bad", tls={"ca_file": d / "other-ca.crt"})
    try:
        assert good.connected.wait(15)
        good.publish(event(0, "start"))
        deadline = time.monotonic() + 15
        while good.outbox.depth() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert good.outbox.depth() == 0
        while "TLS certificate not trusted" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not bad.connected.is_set()
    finally:
        good.close()
        bad.close(timeout=1)
        broker.stop()
    assert "TLS certificate not trusted" in caplog.text and "check tls.ca_file" in caplog.text


def test_outbox_drops_oldest_updates_first_and_never_a_start_or_end(tmp_path):
    box = Outbox(tmp_path / "o.sqlite", max_messages=100)
    kinds = ["start"] + ["update"] * 150 + ["end"] + ["start"] + ["update"] * 10
    for i, k in enumerate(kinds):
        box.put("t", str(i), k)
    rows = box.after(0, 1000)
    assert len(rows) == 100 and box.dropped == len(kinds) - 100
    assert [r.kind for r in rows].count("start") == 2 and [r.kind for r in rows].count("end") == 1
    kept_updates = [int(r.payload) for r in rows if r.kind == "update"]
    assert kept_updates == sorted(kept_updates) and min(kept_updates) > 1  # the oldest went
    assert [int(r.payload) for r in rows] == sorted(int(r.payload) for r in rows)  # order kept


def test_mqtt5_sessions_deliver_in_order_too(tmp_path):
    broker = make_broker(tmp_path / "broker")
    sub = Collector(broker)
    out = link(broker, tmp_path / "state", protocol="5")
    try:
        for i in range(50):
            out.publish(event(i))
        got = sub.wait_for(set(range(50)), timeout=30)
    finally:
        out.close()
        sub.close()
        broker.stop()
    assert in_order_without_duplicates(got) == list(range(50))
    assert [p for t, p in sub.messages if t == "appliance/box1/available"][-1] == b"offline"
