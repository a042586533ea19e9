"""A fleet on existing infrastructure: the appliance publishes to a local mosquitto bridged to the
plant broker (``config/mosquitto-bridge.conf``); the plant broker goes away for ``--outage-s`` and
the local broker is restarted half-way through; nothing may be lost.

    python benchmarks/fleet_bridge.py [--outage-s 120] [--json] [--work DIR] [--ports PLANT LOCAL]

Two real mosquitto processes on 127.0.0.1: the plant broker, and the local one started from the
shipped bridge configuration (its address pointed at the plant broker, its TLS and credential lines
dropped, its listener and store moved to a temporary folder). A SCADA-like subscriber on the plant
broker (persistent session, QoS 1) collects the events. The real daemon runs the demo's dancing clip
in a loop, paced like a camera, with an event file beside the MQTT sink: that file is what was
raised. Prints raised, received, lost and duplicated events, and how long the backlog took to
arrive after the plant broker returned.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BRIDGE_CONF = ROOT / "config" / "mosquitto-bridge.conf"
CLIP = ROOT / "appliance" / "assets" / "demo-dancing.mp4"
BUNDLE = ROOT / "appliance" / "assets" / "starter-walking-fused.tar"
DROPPED = ("bridge_cafile", "bridge_certfile", "bridge_keyfile", "remote_username", "remote_password")


def free_port() -> int:
    """A free port below Linux's ephemeral range (32768+), as the tests use."""
    for _ in range(200):
        port = random.randrange(21000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port")


class Mosquitto:
    def __init__(self, conf: Path, port: int, log: Path) -> None:
        self.conf, self.port, self.log = conf, port, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        exe = (
            "mosquitto"
            if subprocess.run(["which", "mosquitto"], capture_output=True).returncode == 0
            else "/usr/sbin/mosquitto"
        )
        self.proc = subprocess.Popen(
            [exe, "-c", str(self.conf)], stdout=self.log.open("ab"), stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not start: {self.log.read_text()[-1500:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # saves its store on the way out
            self.proc.wait(10)
        self.proc = None


def local_conf(work: Path, port: int, plant_port: int) -> Path:
    """The shipped bridge configuration, pointed at the test's plant broker."""
    lines = []
    for line in BRIDGE_CONF.read_text().splitlines():
        key = line.split(" ", 1)[0]
        if key in DROPPED:
            continue
        if key == "listener":
            line = f"listener {port} 127.0.0.1"
        elif key == "persistence_location":
            line = f"persistence_location {work}/local/"
        elif key == "address":
            line = f"address 127.0.0.1:{plant_port}"
        lines.append(line)
    (work / "local").mkdir(parents=True, exist_ok=True)
    path = work / "local.conf"
    path.write_text("user root\n" + "\n".join(lines) + "\n")
    return path


def plant_conf(work: Path, port: int) -> Path:
    (work / "plant").mkdir(parents=True, exist_ok=True)
    path = work / "plant.conf"
    path.write_text(
        f"user root\npersistence true\npersistence_location {work}/plant/\nautosave_on_changes true\n"
        f"autosave_interval 1\nlistener {port} 127.0.0.1\nallow_anonymous true\n"
    )
    return path


class Scada:
    """The plant's subscriber: persistent session, QoS 1, reconnecting on its own."""

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as mqtt

        self.received: list[tuple[str, int]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id="scada-historian", clean_session=False
        )
        self.client.on_connect = lambda c, u, f, rc, p=None: c.subscribe("appliance/+/+/events", qos=1)
        self.client.on_message = self._message
        self.client.reconnect_delay_set(0.2, 2)
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()

    def _message(self, client, userdata, msg) -> None:
        event = json.loads(msg.payload)
        with self.lock:
            self.received.append((event["event_id"], event["seq"]))

    def count(self) -> int:
        with self.lock:
            return len(self.received)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def raised(path: Path) -> list[tuple[str, int]]:
    if not path.exists():
        return []
    return [(e["event_id"], e["seq"]) for e in map(json.loads, path.read_text().splitlines()) if e]


def wait(cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return cond()


def scenario(outage_s: float, work: Path, ports: tuple[int, int] | None = None) -> dict:
    plant_port, local_port = ports or (free_port(), free_port())
    plant = Mosquitto(plant_conf(work, plant_port), plant_port, work / "plant.log")
    local = Mosquitto(local_conf(work, local_port, plant_port), local_port, work / "local.log")
    plant.start()
    local.start()
    scada = Scada(plant_port)
    cfg = {
        "schema_version": 1,
        "appliance_id": "line3",
        "state_dir": str(work / "state"),
        "model": {"bundle": str(BUNDLE)},
        "cameras": [{"id": "cell", "source": str(CLIP), "fps": None, "loop": True, "realtime": True}],
        "detector": {"when_uncalibrated": "bundle_default", "update_interval_s": 0.5},
        "sinks": [
            {"type": "jsonl", "path": str(work / "raised.jsonl")},
            {"type": "mqtt", "host": "127.0.0.1", "port": local_port, "topic_prefix": "appliance"},
        ],
    }
    (work / "appliance.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    daemon = subprocess.Popen(
        [sys.executable, "-m", "appliance.cli", "run", "--config", str(work / "appliance.yaml")],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=(work / "daemon.log").open("wb"),
    )  # fmt: skip
    try:
        if not wait(lambda: scada.count() > 0, 60):
            raise RuntimeError(
                f"no event reached the plant broker: {(work / 'daemon.log').read_text()[-1500:]}"
            )
        plant.stop()
        down_at = len(raised(work / "raised.jsonl"))
        time.sleep(outage_s / 2)
        local.stop()  # the local broker restarts while the plant broker is away
        local.start()
        time.sleep(outage_s / 2)
        during = len(raised(work / "raised.jsonl")) - down_at
        plant.start()
        back = time.monotonic()
        time.sleep(5)
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(60)
        total = raised(work / "raised.jsonl")
        wait(lambda: scada.count() >= len(total), 120)
        caught_up_s = time.monotonic() - back
    finally:
        if daemon.poll() is None:
            daemon.kill()
        scada.close()
        local.stop()
        plant.stop()
    got = list(scada.received)
    return {
        "outage_s": outage_s,
        "raised": len(total),
        "raised_during_outage": during,
        "received": len(set(got)),
        "lost": len(set(total) - set(got)),
        "duplicates": len(got) - len(set(got)),
        "caught_up_s": round(caught_up_s, 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--outage-s", type=float, default=120.0)
    ap.add_argument("--json", action="store_true", help="one JSON line instead of the text")
    ap.add_argument("--work", type=Path, help="keep logs and stores here (default: a temporary folder)")
    ap.add_argument(
        "--ports", type=int, nargs=2, metavar=("PLANT", "LOCAL"),
        help="broker ports (default: free ones below 32768); the tests give their worker's own",
    )  # fmt: skip
    args = ap.parse_args()
    if args.work:
        args.work.mkdir(parents=True, exist_ok=True)
        result = scenario(args.outage_s, args.work, args.ports)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            result = scenario(args.outage_s, Path(tmp), args.ports)
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"plant broker away {result['outage_s']:g} s, the local broker restarted half-way: "
            f"{result['raised']} events raised ({result['raised_during_outage']} during the outage), "
            f"{result['received']} received at the plant, {result['lost']} lost, "
            f"{result['duplicates']} duplicates; the backlog arrived within {result['caught_up_s']} s"
        )
    return 0 if result["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
