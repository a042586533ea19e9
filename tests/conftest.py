"""Shared fixtures: a real mosquitto broker on 127.0.0.1 and a free port, paths to the real data."""

from __future__ import annotations

import shutil
import socket
import subprocess
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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

    def subscribe(self, topic: str, count: int | None = None, timeout: float = 60.0) -> subprocess.Popen:
        """A ``mosquitto_sub -v`` process on ``topic``; read its stdout for ``topic payload`` lines."""
        cmd = ["mosquitto_sub", "-h", self.host, "-p", str(self.port), "-t", topic, "-v", "-q", "1"]
        if count is not None:
            cmd += ["-C", str(count)]
        cmd += ["-W", str(int(timeout))]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def broker(tmp_path) -> Iterator[Broker]:
    if shutil.which("mosquitto") is None:
        pytest.fail(
            "mosquitto is not installed (.ci/run installs it: apt-get install mosquitto mosquitto-clients)"
        )
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    b = Broker(port, conf, tmp_path / "mosquitto.log")
    b.start()
    try:
        yield b
    finally:
        b.stop()
