"""Alarm delay while the MQTT command channel is flooded with junk (issue #14, item 7).

Starts a real mosquitto on 127.0.0.1, a real :class:`MqttLink` with commands on (its handler
converts like ``Appliance.command``), and a subscriber on the events topic. Events are published at
a steady rate for ``--seconds``; after 2 s a second client publishes ``--commands`` junk commands as
fast as it can (bad JSON, ``minutes: "abc"``, arrays, unknown commands, valid ``status``). Prints the
delay from ``publish()`` to arrival at the subscriber (median, p99, max; all events, and those raised
while the flood lasted), events delivered/lost, answers received, the link's log volume and the
outbox file size.

    python benchmarks/command_flood.py [--commands 20000] [--seconds 15] [--rate 20] [--qos 1]
    python benchmarks/command_flood.py --link-module /tmp/old/mqtt_before.py   # another MqttLink
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as mqtt  # noqa: E402

from appliance.alarms.events import AnomalyEvent, ModelRef, iso_utc  # noqa: E402
from appliance.config import MqttSinkConfig  # noqa: E402
from tests.conftest import make_broker  # noqa: E402

JUNK = [
    ("status", b"not json"),
    ("recalibrate", b'{"minutes": "abc"}'),
    ("reload", b"[1, 2, 3]"),
    ("explode", b"{}"),
    ("status", b'{"request_id": "flood"}'),
]


def handler(name: str, request: dict[str, Any]) -> dict[str, Any]:
    """Converts like ``Appliance.command`` (without blocking: a real recalibrate takes minutes)."""
    if name == "recalibrate":
        return {"ok": True, "minutes": float(request.get("minutes", 3.0))}
    return {"ok": True}


def event(i: int) -> AnomalyEvent:
    now = time.time()
    stamp = {"time": iso_utc(now), "time_ms": round(now * 1000)}
    return AnomalyEvent(
        type="update", event_id=f"ev{i // 100}", seq=i % 100, appliance_id="box1", camera_id="cam1",
        track_id=1, **stamp, started_at=stamp["time"], started_at_ms=stamp["time_ms"], score=float(i),
        peak_score=float(i), threshold=1.0, frames_above=i, model=ModelRef(name="m", version="1"),
    )  # fmt: skip


def load_link(path: str | None):
    if path is None:
        from appliance.publish.mqtt import MqttLink

        return MqttLink
    spec = importlib.util.spec_from_file_location("link_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.MqttLink


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))] if s else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--commands", type=int, default=20_000)
    p.add_argument("--seconds", type=float, default=15.0, help="how long events are published")
    p.add_argument("--rate", type=float, default=20.0, help="events per second")
    p.add_argument("--qos", type=int, choices=(0, 1), default=1, help="QoS of the junk commands")
    p.add_argument("--wait", type=float, default=120.0, help="how long to wait for late events")
    p.add_argument("--link-module", help="a file defining MqttLink to measure instead (a 'before')")
    args = p.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="command-flood-"))
    log_file = tmp / "appliance.log"
    logging.basicConfig(filename=log_file, level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    broker = make_broker(tmp / "broker")  # the tests' mosquitto, on a port below the ephemeral range
    port = broker.port
    arrived: dict[int, float] = {}
    sent_at: dict[int, float] = {}
    answers = [0]

    def on_message(c, u, m) -> None:
        if m.topic.endswith("/response"):
            answers[0] += 1
            return
        e = json.loads(m.payload)
        arrived.setdefault(int(e["event_id"][2:]) * 100 + e["seq"], time.time())

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="scada")
    subscribed = threading.Event()
    sub.on_message = on_message
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.connect("127.0.0.1", port)
    sub.subscribe([("appliance/box1/cam1/events", 1), ("appliance/box1/cmd/+/response", 0)])
    sub.loop_start()
    assert subscribed.wait(10)

    link_cls = load_link(args.link_module)
    cfg = MqttSinkConfig(host="127.0.0.1", port=port, commands=True)
    link = link_cls(cfg, "box1", tmp / "state", commands=handler)
    assert link.connected.wait(10), "the link did not connect"
    time.sleep(1.0)  # subscribed to cmd/+

    flood_span = [0.0, 0.0]

    def flood() -> None:
        op = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="flooder")
        op.max_inflight_messages_set(1000)
        op.max_queued_messages_set(0)
        op.connect("127.0.0.1", port)
        op.loop_start()
        flood_span[0] = time.time()
        infos = []
        for i in range(args.commands):
            name, payload = JUNK[i % len(JUNK)]
            infos.append(op.publish(f"appliance/box1/cmd/{name}", payload, qos=args.qos))
        for info in infos[-1:]:
            info.wait_for_publish(120)
        flood_span[1] = time.time()
        op.loop_stop()
        op.disconnect()

    flooder = threading.Thread(target=flood, daemon=True)
    n = int(args.seconds * args.rate)
    t0 = time.monotonic()
    for i in range(n):
        if i == int(2 * args.rate):
            flooder.start()
        sent_at[i] = time.time()
        link.publish(event(i))
        time.sleep(max(0.0, t0 + (i + 1) / args.rate - time.monotonic()))
    flooder.join(300)
    deadline = time.monotonic() + args.wait
    while len(arrived) < n and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    link.close(timeout=2)
    sub.loop_stop()
    sub.disconnect()
    broker.stop()

    delays = [arrived[i] - sent_at[i] for i in range(n) if i in arrived]
    during = [arrived[i] - sent_at[i] for i in range(n) if i in arrived and sent_at[i] >= flood_span[0]
              and sent_at[i] <= flood_span[1] + 1.0]  # fmt: skip
    outbox = sum(f.stat().st_size for f in (tmp / "state").glob("outbox.sqlite*"))
    print(
        f"link: {args.link_module or 'appliance.publish.mqtt'}; {args.commands} junk commands "
        f"at QoS {args.qos} "
        f"in {flood_span[1] - flood_span[0]:.2f} s; events {args.rate:g}/s for {args.seconds:g} s"
    )
    print("| events | delivered | lost | delay median | p99 | max | p99 in flood | answers | log | outbox |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {n} | {len(delays)} | {n - len(delays)} | {statistics.median(delays):.3f} s | "
        f"{pct(delays, 0.99):.3f} s | {max(delays):.3f} s | {pct(during, 0.99):.3f} s ({len(during)} ev) | "
        f"{answers[0]} | {log_file.stat().st_size / 1e3:.0f} kB | {outbox / 1e3:.0f} kB |"
    )
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
