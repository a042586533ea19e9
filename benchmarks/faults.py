"""The appliance under faults, end to end, in one run: what a plant would see on its broker.

    python benchmarks/faults.py [--outage-s 180] [--only NAME ...]

Real parts throughout: ``appliance run`` as a process on the real dancing clip (looping, paced like a
live camera, the starter model at its default threshold, updates every 0.2 s so that a few minutes
carry hundreds of messages), a real mosquitto on 127.0.0.1, a real paho subscriber with a persistent
session standing in for SCADA. The only injected fault is the exception inside a camera's pose call
(``camera-crash``): it cannot be produced on demand with real parts, so that case runs the daemon
in-process and wraps its pose call.

Each case prints one row: fault, expected, observed, events raised (written by the daemon's jsonl
sink) / received (unique on MQTT) / lost / duplicated, the largest alarm delay (receipt time minus
the event's own time), and the daemon's peak RSS. The cases of other slices of the work (crafted
bundles, command floods) are their own scripts, run from here: ``hostile_bundles.py``,
``command_flood.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from appliance.service.demo import STARTER_BUNDLE, WORKCELL_CLIP  # noqa: E402
from tests.conftest import free_port, make_broker  # noqa: E402


@dataclass
class Row:
    fault: str
    expected: str
    observed: str
    raised: int | None = None
    received: int | None = None
    lost: int | None = None
    duplicated: int | None = None
    max_delay_s: float | None = None
    peak_rss_mb: float | None = None


class Scada:
    """A SCADA-like subscriber: persistent session, QoS 1, every message stamped on arrival."""

    def __init__(self, port: int, topic: str = "appliance/#") -> None:
        self.messages: list[tuple[str, bytes, float]] = []
        self.ready = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id="scada-bench", clean_session=False,
            protocol=mqtt.MQTTv311,
        )  # fmt: skip
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *a: self.ready.set()
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload, time.time()))
        self.client.reconnect_delay_set(0.2, 1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.ready.wait(10)

    def events(self) -> list[tuple[dict, float]]:
        return [(json.loads(p), t) for topic, p, t in list(self.messages) if topic.endswith("/events")]

    def status(self) -> dict | None:
        for topic, p, _ in reversed(list(self.messages)):
            if topic.endswith("/status"):
                return json.loads(p)
        return None

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class Daemon:
    """``appliance run`` as a process; its log kept in a file."""

    def __init__(self, config: Path, log: Path, env: dict | None = None) -> None:
        self.log_path = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "appliance.cli", "run", "--config", str(config)],
            cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
            stderr=log.open("a"),
        )  # fmt: skip
        self.peak_rss_mb = 0.0

    def sample_rss(self) -> None:
        try:
            text = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return
        for line in text.splitlines():
            if line.startswith("VmHWM:"):
                self.peak_rss_mb = max(self.peak_rss_mb, int(line.split()[1]) / 1024)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill9(self) -> None:
        self.sample_rss()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def terminate(self) -> int:
        self.sample_rss()
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


def wait_until(predicate, timeout: float, every: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return False


def daemon_config(d: Path, port: int | None, cameras: list[dict] | None = None) -> Path:
    sinks: list[dict] = [{"type": "jsonl", "path": str(d / "events.jsonl")}]
    if port is not None:
        sinks.append({"type": "mqtt", "host": "127.0.0.1", "port": port, "status_interval_s": 1.0,
                      "reconnect_max_s": 2.0})  # fmt: skip
    cfg = {
        "schema_version": 1, "appliance_id": "bench", "state_dir": str(d / "state"),
        "model": {"bundle": str(STARTER_BUNDLE)},
        "cameras": cameras or [{"id": "workcell", "source": str(WORKCELL_CLIP), "fps": None, "loop": True,
                                "realtime": True}],
        "detector": {"when_uncalibrated": "bundle_default", "update_interval_s": 0.2},
        "sinks": sinks,
    }  # fmt: skip
    path = d / "appliance.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def raised(d: Path) -> list[dict]:
    path = d / "events.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def tally(row: Row, d: Path, scada: Scada) -> Row:
    sent = {(e["event_id"], e["seq"]) for e in raised(d)}
    got = scada.events()
    unique = {(e["event_id"], e["seq"]) for e, _ in got}
    row.raised, row.received = len(sent), len(unique & sent)
    row.lost, row.duplicated = len(sent - unique), len(got) - len(unique)
    row.max_delay_s = max((t - e["time_ms"] / 1000 for e, t in got), default=None)
    return row


# -- cases -------------------------------------------------------------------------------------------


def case_broker_outage_with_kill(d: Path, outage_s: float) -> Row:
    """Broker away for ``outage_s``; the appliance is killed with SIGKILL half-way and restarted."""
    broker = make_broker(d / "broker", persistent=True)
    scada = Scada(broker.port)
    cfg = daemon_config(d, broker.port)
    first = Daemon(cfg, d / "daemon.log")
    try:
        wait_until(lambda: len(scada.events()) >= 20, 120)
        broker.stop()
        t0 = time.monotonic()
        time.sleep(outage_s / 2)
        first.kill9()
        second = Daemon(cfg, d / "daemon.log")
        while time.monotonic() - t0 < outage_s:
            second.sample_rss()
            time.sleep(1.0)
        broker.start()
        time.sleep(10.0)
        code = second.terminate()
        scada_done = wait_until(lambda: tally(Row("", "", ""), d, scada).lost == 0, 60)
    finally:
        scada.close()
        broker.stop()
    restart_ends = [e for e, _ in scada.events() if e.get("end_reason") == "restart"]
    row = tally(
        Row(
            f"broker away {outage_s:.0f} s, kill -9 half-way",
            "0 lost; open anomaly ended `restart`; exit 0",
            f"{len(restart_ends)} restart end(s); exit {code}; all delivered: {scada_done}",
        ),
        d, scada,
    )  # fmt: skip
    row.peak_rss_mb = max(first.peak_rss_mb, second.peak_rss_mb)
    return row


def case_kill9_open_anomalies(d: Path) -> Row:
    """kill -9 while an anomaly is open: how long until SCADA sees it ended at the next start."""
    broker = make_broker(d / "broker")
    scada = Scada(broker.port)
    cfg = daemon_config(d, broker.port)
    first = Daemon(cfg, d / "daemon.log")
    try:
        wait_until(lambda: any(e["type"] == "start" for e, _ in scada.events()), 120)
        first.kill9()
        opened = {e["event_id"] for e, _ in scada.events()} - {
            e["event_id"] for e, _ in scada.events() if e["type"] == "end"
        }
        t0 = time.monotonic()
        second = Daemon(cfg, d / "daemon.log")
        ended = wait_until(
            lambda: opened <= {e["event_id"] for e, _ in scada.events() if e.get("end_reason") == "restart"},
            120,
        )
        took = time.monotonic() - t0
        code = second.terminate()
        wait_until(lambda: tally(Row("", "", ""), d, scada).lost == 0, 30)
    finally:
        scada.close()
        broker.stop()
    row = tally(
        Row(
            "kill -9 with an anomaly open",
            "ended with `restart` at the next start",
            f"{len(opened)} open, ended: {ended}, {took:.1f} s after the restart (process start included); "
            f"exit {code}",
        ),
        d, scada,
    )  # fmt: skip
    row.peak_rss_mb = max(first.peak_rss_mb, second.peak_rss_mb)
    return row


def case_camera_offline_at_boot(d: Path) -> Row:
    """Two cameras not up at boot (nothing listens on their ports) beside one that is."""
    from tests.test_service import FakeSystemd

    broker = make_broker(d / "broker")
    scada = Scada(broker.port)
    cameras = [
        {"id": "workcell", "source": str(WORKCELL_CLIP), "fps": None, "loop": True, "realtime": True},
        {"id": "gate", "source": f"rtsp://127.0.0.1:{free_port()}/stream"},
        {"id": "dock", "source": f"http://127.0.0.1:{free_port()}/video.mjpg"},
    ]
    cfg = daemon_config(d, broker.port, cameras)
    systemd = FakeSystemd(d)
    t0 = time.monotonic()
    daemon = Daemon(cfg, d / "daemon.log", {"NOTIFY_SOCKET": str(systemd.path)})
    try:
        ready = systemd.collect_until("READY=1", 60)
        ready_s = time.monotonic() - t0
        first_event = wait_until(lambda: bool(scada.events()), 120)
        event_s = time.monotonic() - t0
        time.sleep(5)
        status = scada.status() or {}
        states = {k: v["state"] for k, v in status.get("cameras", {}).items()}
        alive = daemon.proc.poll() is None
        code = daemon.terminate()
    finally:
        scada.close()
        broker.stop()
    row = tally(
        Row(
            "2 of 3 cameras offline at boot",
            "runs; READY; offline ones `reconnecting`",
            f"READY {ready} at {ready_s:.1f} s; first event {first_event} at {event_s:.1f} s; alive {alive}; "
            f"states {states}; exit {code}",
        ),
        d, scada,
    )  # fmt: skip
    row.peak_rss_mb = daemon.peak_rss_mb
    return row


def case_camera_crash(d: Path) -> Row:
    """An exception inside one camera's pose call (injected): time until that camera streams again."""
    from appliance.config import load_config
    from appliance.service.daemon import Appliance

    cfg = daemon_config(d, None, [
        {"id": "workcell", "source": str(WORKCELL_CLIP), "fps": None, "loop": True, "realtime": True},
        {"id": "walkway", "source": str(WORKCELL_CLIP), "fps": None, "loop": True, "realtime": True},
    ])  # fmt: skip
    app = Appliance(load_config(cfg))
    app.start()
    workcell, other = app.workers
    infer, crash = workcell.backend.infer, threading.Event()

    def faulty(image):
        if crash.is_set():
            crash.clear()
            raise RuntimeError("injected pose fault")
        return infer(image)

    workcell.backend.infer = faulty
    times = []
    try:
        for _ in range(3):
            wait_until(lambda: workcell.state == "streaming" and workcell.stats.frames > 10, 60)
            other_frames, t0 = other.stats.frames, time.monotonic()
            n = workcell.restarts
            crash.set()
            wait_until(lambda n=n: workcell.restarts > n, 30, 0.01)
            wait_until(lambda: workcell.state == "streaming", 60, 0.01)
            frames = workcell.stats.frames
            wait_until(lambda f=frames: workcell.stats.frames > f, 30, 0.01)  # a frame processed again
            times.append(time.monotonic() - t0)
            time.sleep(2)
        other_ran = other.stats.frames > other_frames
    finally:
        app.stop()
    return Row(
        "camera loop crash (injected exception in pose)",
        "restarted with backoff, other camera untouched",
        f"crash to next processed frame {', '.join(f'{t:.2f}' for t in times)} s (3 crashes); "
        f"other camera kept running: {other_ran}",
    )


def run_script(name: str, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / name), *args], cwd=ROOT, capture_output=True, text=True,
        timeout=1800,
    )  # fmt: skip
    return out.stdout + (f"\n(exit {out.returncode}) {out.stderr[-2000:]}" if out.returncode else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outage-s", type=float, default=180.0, help="broker outage length")
    parser.add_argument(
        "--only", nargs="*", default=None,
        help="cases: outage, kill9, offline, crash, bundles, flood (default: all)",
    )  # fmt: skip
    args = parser.parse_args()
    wanted = set(args.only or ["outage", "kill9", "offline", "crash", "bundles", "flood"])
    rows: list[Row] = []
    cases = [
        ("crash", case_camera_crash),
        ("offline", case_camera_offline_at_boot),
        ("kill9", case_kill9_open_anomalies),
        ("outage", lambda d: case_broker_outage_with_kill(d, args.outage_s)),
    ]
    for name, case in cases:
        if name in wanted:
            with tempfile.TemporaryDirectory() as tmp:
                print(f"... {name}", file=sys.stderr, flush=True)
                rows.append(case(Path(tmp)))
    print(
        "| fault | expected | observed | raised | received | lost | duplicated | max alarm delay | peak RSS |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        cells = [
            r.fault, r.expected, r.observed,
            *("-" if v is None else str(v) for v in (r.raised, r.received, r.lost, r.duplicated)),
            "-" if r.max_delay_s is None else f"{r.max_delay_s:.1f} s",
            "-" if r.peak_rss_mb is None else f"{r.peak_rss_mb:.0f} MB",
        ]  # fmt: skip
        print("| " + " | ".join(cells) + " |")
    if "bundles" in wanted and (ROOT / "benchmarks" / "hostile_bundles.py").exists():
        print("\nCrafted bundles (benchmarks/hostile_bundles.py):\n")
        print(run_script("hostile_bundles.py"))
    if "flood" in wanted and (ROOT / "benchmarks" / "command_flood.py").exists():
        print("\nCommand flood (benchmarks/command_flood.py):\n")
        print(run_script("command_flood.py"))


if __name__ == "__main__":
    main()
