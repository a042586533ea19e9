"""Shared fixtures: a real mosquitto broker on 127.0.0.1 and a free port, paths to the real data."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
MOSQUITTO = shutil.which("mosquitto") or next(
    (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).is_file()), None
)


def write_appliance_config(path: Path, camera: dict, **overrides) -> Path:
    """A daemon config for tests: the shipped starter bundle, one camera, events to a JSON-lines file."""
    import yaml

    from appliance.service.demo import STARTER_BUNDLE

    cfg = {
        "schema_version": 1,
        "appliance_id": "test-box",
        "state_dir": str(path.parent / "state"),
        "model": {"bundle": str(STARTER_BUNDLE)},
        "pose": {"type": "blazepose"},
        "cameras": [camera],
        "sinks": [{"type": "jsonl", "path": str(path.parent / "events.jsonl")}],
    }
    cfg.update(overrides)
    path.write_text(yaml.safe_dump(cfg))
    return path


# Ports the tests listen on come from below Linux's ephemeral range (32768-60999 by default): a port
# the kernel may hand to an outgoing connection could be taken by a client while a test's broker is
# down for a simulated outage, and the broker could then not come back on it.
TEST_PORTS = range(20000, 32768)


def worker_ports() -> range:
    """This test process's share of ``TEST_PORTS``: under pytest-xdist each worker draws from its own
    slice, so a port one worker's broker left free during an outage is never handed to another."""
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    size = len(TEST_PORTS) // max(count, 1)
    start = TEST_PORTS.start + index * size
    return range(start, start + size)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on, below the ephemeral range."""
    rng = random.SystemRandom()
    ports = worker_ports()
    for _ in range(500):
        port = rng.choice(ports)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {ports.start}-{ports.stop - 1} on 127.0.0.1")


@dataclass
class Broker:
    """A mosquitto process the test owns; ``stop``/``start`` simulate an outage on the same port."""

    port: int
    conf: Path
    log: Path
    proc: subprocess.Popen | None = None

    host = "127.0.0.1"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [str(MOSQUITTO), "-c", str(self.conf)], stdout=self.log.open("ab"), stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"mosquitto exited: {self.log.read_text()[-2000:]}") from None
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not open its port")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def subscribe(self, topic: str) -> Subscriber:
        """A running ``mosquitto_sub -v`` on ``topic`` whose subscription is confirmed active."""
        return Subscriber(self, topic)


class Subscriber:
    """``mosquitto_sub -v -q 1`` collecting ``(topic, payload)`` lines in a thread.

    Readiness is proven, not assumed: probe messages are published until the subscriber prints
    one, so no message sent after construction can be missed.
    """

    def __init__(self, broker: Broker, topic: str) -> None:
        self.broker = broker
        self.lines: list[tuple[str, str]] = []
        self.proc = subprocess.Popen(
            [
                "mosquitto_sub",
                "-h",
                broker.host,
                "-p",
                str(broker.port),
                "-v",
                "-q",
                "1",
                "-t",
                topic,
                "-t",
                "probe/ready",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + 10
        while not any(t == "probe/ready" for t, _ in self.lines):
            if time.monotonic() > deadline:
                raise RuntimeError("mosquitto_sub did not receive the probe")
            subprocess.run(
                ["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-t", "probe/ready", "-m", "1"],
                check=True,
                timeout=5,
            )
            time.sleep(0.1)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            topic, _, payload = line.rstrip("\n").partition(" ")
            self.lines.append((topic, payload))

    def messages(self, topic: str) -> list[str]:
        return [p for t, p in self.lines if t == topic]

    def wait_for(self, topic: str, count: int, timeout: float = 30.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while len(self.messages(topic)) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.messages(topic)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self._reader.join(5)


def make_broker(
    directory: Path, listener_conf: str = "allow_anonymous true\n", persistent: bool = False
) -> Broker:
    """A mosquitto on 127.0.0.1 and a free port; ``listener_conf`` adds auth/TLS lines to its listener."""
    if MOSQUITTO is None:
        pytest.fail(
            "mosquitto is not installed (.ci/run installs it: apt-get install mosquitto mosquitto-clients)"
        )
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = directory / "mosquitto.conf"
    store = f"persistence true\npersistence_location {directory}/\n" if persistent else "persistence false\n"
    # `user root`: started as root, mosquitto would otherwise drop to a user that cannot write its
    # store into the test's private temporary folder (ignored when not started as root)
    conf.write_text(
        f"user root\nper_listener_settings true\n{store}listener {port} 127.0.0.1\n{listener_conf}"
    )
    b = Broker(port, conf, directory / "mosquitto.log")
    b.start()
    return b


@pytest.fixture
def broker(tmp_path) -> Iterator[Broker]:
    b = make_broker(tmp_path / "broker")
    try:
        yield b
    finally:
        b.stop()


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(d: Path, name: str) -> None:
    """A self-signed CA ``<name>.crt``/``<name>.key`` in ``d``, valid for a day."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={name}",
             "-keyout", f"{name}.key", "-out", f"{name}.crt", cwd=d)  # fmt: skip


def make_tls_broker(tmp_path: Path) -> tuple[Broker, Path]:
    """A mosquitto speaking only TLS, its certificate (for localhost and 127.0.0.1) signed by
    ``plant-ca``; ``other-ca`` signs nothing. Returns the broker and the folder of the PKI files."""
    d = tmp_path / "pki"
    d.mkdir()
    make_ca(d, "plant-ca")
    make_ca(d, "other-ca")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "broker.key",
             "-out", "broker.csr", cwd=d)  # fmt: skip
    (d / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "broker.csr", "-CA", "plant-ca.crt", "-CAkey", "plant-ca.key",
             "-CAcreateserial", "-days", "1", "-extfile", "ext.cnf", "-out", "broker.crt", cwd=d)  # fmt: skip
    broker = make_broker(
        tmp_path / "broker",
        f"allow_anonymous true\ncafile {d}/plant-ca.crt\ncertfile {d}/broker.crt\nkeyfile {d}/broker.key\n",
    )
    return broker, d
