"""The daemon under a service manager: the sd_notify protocol for real, SIGHUP reload, SIGTERM.

The test plays systemd's part: it binds the ``$NOTIFY_SOCKET`` datagram socket and sets
``$WATCHDOG_USEC``, runs ``appliance run`` on a real clip, and reads what the daemon sends.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from appliance.service.demo import WORKCELL_CLIP

from .conftest import ROOT, Broker, write_appliance_config


def write_config(path: Path, **overrides) -> Path:
    return write_appliance_config(
        path,
        {"id": "workcell", "source": str(WORKCELL_CLIP), "fps": None, "loop": True, "realtime": True},
        **overrides,
    )


class FakeSystemd:
    """The receiving end of sd_notify: a datagram socket, every message kept with its arrival time."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []

    def collect(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            with contextlib.suppress(TimeoutError):
                self.messages.append((time.monotonic(), self.sock.recv(4096).decode()))

    def collect_until(self, text: str, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.collect(0.2)
            if any(text in m for _, m in self.messages):
                return True
        return False

    def count(self, text: str) -> int:
        return sum(text in m for _, m in self.messages)


def start(config: Path, systemd: FakeSystemd, watchdog_s: float = 1.0) -> subprocess.Popen:
    env = {
        **os.environ,
        "NOTIFY_SOCKET": str(systemd.path),
        "WATCHDOG_USEC": str(int(watchdog_s * 1e6)),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "appliance.cli", "run", "--config", str(config)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_ready_after_start_watchdog_pings_while_running_and_stopping_on_sigterm(tmp_path):
    systemd = FakeSystemd(tmp_path)
    proc = start(write_config(tmp_path / "c.yaml"), systemd)
    try:
        assert systemd.collect_until("READY=1", timeout=60), systemd.messages
        ready_at = next(t for t, m in systemd.messages if "READY=1" in m)
        ready = next(m for _, m in systemd.messages if "READY=1" in m)
        assert "STATUS=workcell: streaming" in ready
        systemd.collect(4.0)
        pings = [t for t, m in systemd.messages if m == "WATCHDOG=1" and t > ready_at]
        assert len(pings) >= 5  # every 0.5 s (half of WatchdogSec=1 s)
        assert max(b - a for a, b in itertools.pairwise(pings)) < 1.0
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    systemd.collect(0.5)
    assert proc.returncode == 0, err
    assert systemd.count("STOPPING=1") == 1
    assert "smoke test passed" in err


def test_sighup_reloads_thresholds_without_reconnecting_the_broker(tmp_path, broker: Broker):
    systemd = FakeSystemd(tmp_path)
    mqtt = {"type": "mqtt", "host": broker.host, "port": broker.port}
    cfg = write_config(tmp_path / "c.yaml", detector={"threshold": 80.0}, sinks=[mqtt])
    proc = start(cfg, systemd)
    try:
        assert systemd.collect_until("READY=1", timeout=60)
        write_config(
            tmp_path / "c.yaml",
            detector={"threshold": 80.0, "start_windows": 3},
            cameras=[{"id": "workcell", "source": str(WORKCELL_CLIP), "fps": None, "loop": True,
                      "realtime": True, "threshold": 120.0}],
            sinks=[mqtt],
        )  # fmt: skip
        proc.send_signal(signal.SIGHUP)
        assert systemd.collect_until("RELOADING=1", timeout=10)
        assert systemd.collect_until("READY=1\nSTATUS", timeout=10)
        assert systemd.count("READY=1") == 2
        time.sleep(1)
        (tmp_path / "c.yaml").write_text("schema_version: 1\nappliance_id: [broken\n")
        proc.send_signal(signal.SIGHUP)  # a bad edit is refused; the running configuration stays
        assert systemd.collect_until("RELOADING=1", timeout=10)
        time.sleep(1)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "camera workcell: threshold now 120.00 (camera)" in err
    assert "reload refused, running configuration kept" in err and "not valid YAML" in err
    connects = broker.log.read_text().count("as appliance-test-box")
    assert connects == 1  # one MQTT session from start to stop: the reload kept it


def heavy_pose_model(path: Path, matmuls: int = 80, size: int = 2000) -> None:
    """A pose model far too heavy for the device: the onnx backend's contract, but each frame costs
    ~600 GFLOP of matrix products, about 10 s here (a real stall of the pipeline, not a fake)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    table = np.zeros((1, 56, 1), np.float32)
    nodes = [
        helper.make_node("ReduceSum", ["images"], ["s"], keepdims=0),
        helper.make_node("Mul", ["s", "zero"], ["s0"]),
        helper.make_node("Add", ["s0", "unit"], ["u"]),
        helper.make_node("Expand", ["u", "shape"], ["m0"]),
    ]
    for i in range(matmuls):
        nodes.append(helper.make_node("MatMul", [f"m{i}", "m0"], [f"m{i + 1}"]))
    nodes += [
        helper.make_node("ReduceSum", [f"m{matmuls}"], ["r"], keepdims=0),
        helper.make_node("Mul", ["r", "zero"], ["r0"]),
        helper.make_node("Add", ["table", "r0"], ["output0"]),
    ]
    inits = [
        helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
        helper.make_tensor("unit", TensorProto.FLOAT, [], [1.0 / size]),
        helper.make_tensor("shape", TensorProto.INT64, [2], [size, size]),
        helper.make_tensor("table", TensorProto.FLOAT, table.shape, table.ravel()),
    ]
    graph = helper.make_graph(
        nodes, "heavy", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 640, 640])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 56, 1])], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_a_stalled_pipeline_stops_the_watchdog_pings(tmp_path):
    """With a pose model that takes seconds per frame the process lives on, but its camera loop stops
    turning: the pings stop, so systemd's WatchdogSec would restart the service."""
    pytest.importorskip("onnx", reason="building the heavy model needs the onnx package ([export] extra)")
    heavy_pose_model(tmp_path / "heavy.onnx")
    systemd = FakeSystemd(tmp_path)
    cfg = write_config(tmp_path / "c.yaml", pose={"type": "onnx", "model": str(tmp_path / "heavy.onnx")})
    proc = start(cfg, systemd)
    try:
        assert systemd.collect_until("READY=1", timeout=60)
        systemd.collect(1.0)
        mark = time.monotonic()
        systemd.collect(4.0)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    late_pings = [t for t, m in systemd.messages if m == "WATCHDOG=1" and t > mark]
    # healthy: a ping every 0.5 s (8 in 4 s); stalled: at most the one when a 10 s frame finally ends,
    # so systemd's WatchdogSec=1s would have restarted the service
    assert len(late_pings) <= 1
    assert "pipeline stalled on camera(s) workcell: watchdog pings withheld" in err


def _outbox_has_events(path: Path) -> bool:
    import sqlite3

    if not path.exists():
        return False
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'outbox'").fetchone()[0] > 0 and (
            db.execute("SELECT count(*) FROM outbox").fetchone()[0] > 0
        )
    except sqlite3.OperationalError:
        return False  # being created
    finally:
        db.close()


def test_sigterm_with_the_broker_away_exits_0_and_keeps_the_events_on_disk(tmp_path):
    from appliance.publish.outbox import Outbox

    from .conftest import free_port

    systemd = FakeSystemd(tmp_path)
    mqtt = {"type": "mqtt", "host": "127.0.0.1", "port": free_port()}  # nobody listens there
    cfg = write_config(tmp_path / "c.yaml", detector={"threshold": 0.0, "start_windows": 1}, sinks=[mqtt])
    proc = start(cfg, systemd)
    try:
        assert systemd.collect_until("READY=1", timeout=60)
        ready = next(m for _, m in systemd.messages if "READY=1" in m)
        assert "broker not reached yet, buffering events" in ready
        # dancing above a zero threshold: wait for a start event in the outbox (read-only look)
        outbox, deadline = tmp_path / "state" / "outbox.sqlite", time.monotonic() + 90
        while time.monotonic() < deadline and not _outbox_has_events(outbox):
            time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    kept = Outbox(tmp_path / "state" / "outbox.sqlite").after(0, 100)
    assert kept and kept[0].kind == "start" and kept[-1].kind == "end"  # the shutdown end too
    assert "stay in the outbox for the next start" in err
