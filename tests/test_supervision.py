"""A safety appliance never stops watching without saying so.

Real daemon, real clips, real pose model, real sd_notify socket. Two faults cannot be produced on
demand with real parts and are injected, as each test says: an exception raised inside a camera's
pose call, and a pose call that hangs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from appliance.alarms.events import AnomalyEvent
from appliance.config import load_config
from appliance.service.demo import DEMO_CLIP, WORKCELL_CLIP
from appliance.service.systemd import Notifier
from appliance.updates.store import ModelStore

from . import test_field_update as field_update
from .conftest import ROOT, free_port, write_appliance_config
from .test_service import FakeSystemd

keys, releases = field_update.keys, field_update.releases  # signed test releases (module fixtures)
config = field_update.config


def wait_until(predicate, timeout: float = 60.0, what: str = "condition", every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def read_events(path: Path) -> list[AnomalyEvent]:
    if not path.exists():
        return []
    return [AnomalyEvent.model_validate_json(line) for line in path.read_text().splitlines() if line.strip()]


def two_cameras(tmp_path: Path, **overrides) -> Path:
    dancing = {"id": "workcell", "source": str(WORKCELL_CLIP), "fps": None, "loop": True}
    cfg = write_appliance_config(
        tmp_path / "appliance.yaml",
        dancing,
        detector={"when_uncalibrated": "bundle_default"},
        **overrides,
    )
    data = __import__("yaml").safe_load(cfg.read_text())
    data["cameras"].append({"id": "walkway", "source": str(DEMO_CLIP), "fps": None, "loop": True})
    cfg.write_text(__import__("yaml").safe_dump(data))
    return cfg


class InjectedPoseFault:
    """Wraps a camera's pose backend: raise once on demand, or hang until released (injected faults)."""

    def __init__(self, worker) -> None:
        self.infer = worker.backend.infer
        self.raise_next = threading.Event()
        self.raise_always = threading.Event()
        self.hang = threading.Event()
        self.release = threading.Event()
        worker.backend.infer = self

    def __call__(self, image):
        if self.raise_next.is_set() or self.raise_always.is_set():
            self.raise_next.clear()
            raise RuntimeError("injected pose fault")
        if self.hang.is_set():
            self.release.wait(120)
        return self.infer(image)


def test_a_crashed_camera_loop_restarts_says_so_and_the_other_camera_keeps_watching(tmp_path):
    from appliance.service.daemon import Appliance

    app = Appliance(load_config(two_cameras(tmp_path)))
    app.start()
    snapshots: list[dict] = []
    original = app.status_changed

    def recording_status_changed() -> None:  # every status the sinks would publish, as published
        snapshots.append(app.status()["cameras"])
        original()

    app.status_changed = recording_status_changed
    for w in app.workers:
        w.on_health_change = app.status_changed
    workcell, walkway = app.workers
    fault = InjectedPoseFault(workcell)
    events_file = tmp_path / "events.jsonl"
    try:
        wait_until(
            lambda: any(e.type == "start" for e in read_events(events_file)),
            90,
            "an anomaly on the dancing clip",
        )
        (opened,) = [e for e in read_events(events_file) if e.type == "start"][:1]
        walkway_before = walkway.stats.frames
        fault.raise_next.set()
        wait_until(lambda: workcell.restarts == 1, 30, "the crash")
        wait_until(lambda: app.status()["cameras"]["workcell"]["state"] == "streaming", 30, "the restart")
        frames_after = workcell.stats.frames
        wait_until(lambda: workcell.stats.frames > frames_after + 5, 30, "frames after the restart")
    finally:
        app.stop()
    restarting = [s["workcell"] for s in snapshots if s["workcell"]["state"] == "restarting"]
    assert restarting, "no status said the camera was restarting"
    assert "injected pose fault" in restarting[0]["error"] and restarting[0]["restarts"] == 1
    assert restarting[0]["fps"] == 0.0
    assert snapshots[-1]["workcell"]["state"] in ("streaming", "stopped")
    assert walkway.stats.frames > walkway_before  # the other camera never stopped
    ends = [e for e in read_events(events_file) if e.event_id == opened.event_id and e.type == "end"]
    assert [e.end_reason for e in ends] == ["camera_lost"]


def test_watchdog_pings_go_on_while_a_camera_restarts_and_stop_when_its_loop_hangs(tmp_path, monkeypatch):
    from appliance.service.daemon import STALLED_AFTER_S, Appliance

    systemd = FakeSystemd(tmp_path)
    monkeypatch.setenv("NOTIFY_SOCKET", str(systemd.path))
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")  # pings every 0.5 s; withheld after 2 s of no progress
    notifier = Notifier()
    cfg = write_appliance_config(
        tmp_path / "appliance.yaml",
        {"id": "workcell", "source": str(WORKCELL_CLIP), "fps": None, "loop": True, "realtime": True},
    )
    app = Appliance(load_config(cfg))
    app.start()
    (worker,) = app.workers
    fault = InjectedPoseFault(worker)
    stop = threading.Event()
    waiter = threading.Thread(target=app.wait, args=(stop,), kwargs={"notifier": notifier}, daemon=True)
    waiter.start()
    try:
        fault.raise_always.set()  # crashes on every frame: restarting, then failed, retried with backoff
        wait_until(lambda: worker.restarts >= 2, 30, "two restarts")
        systemd.collect(0.3)  # (drain what queued while waiting: received late, stamped late)
        t0 = time.monotonic()
        systemd.collect(3.0)
        assert sum(m == "WATCHDOG=1" for t, m in systemd.messages if t > t0) >= 4
        assert app.status()["cameras"]["workcell"]["state"] in ("restarting", "failed")
        fault.raise_always.clear()
        wait_until(lambda: worker.state == "streaming", 60, "streaming again")
        fault.hang.set()  # the next pose call hangs
        wait_until(lambda: time.monotonic() - worker.heartbeat > 2.5, 30, "the hang")
        systemd.collect(0.3)
        t1 = time.monotonic()
        systemd.collect(2.0)
        assert not [m for t, m in systemd.messages if t > t1 and m == "WATCHDOG=1"]
        wait_until(lambda: time.monotonic() - worker.heartbeat > STALLED_AFTER_S + 0.5, 30, "stalled")
        status = app.status()["cameras"]["workcell"]
        assert status["state"] == "stalled" and "hung" in status["error"]
    finally:
        fault.release.set()
        stop.set()
        waiter.join(10)
        app.stop()


class Daemon:
    """``appliance run`` as a process, its log lines collected as they come."""

    def __init__(self, config: Path, env: dict | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "appliance.cli", "run", "--config", str(config)],
            cwd=ROOT, env={**os.environ, **(env or {})}, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def log(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, timeout: float = 60.0) -> None:
        wait_until(lambda: text in self.log() or self.proc.poll() is not None, timeout, repr(text))
        assert text in self.log(), self.log()[-3000:]

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self._reader.join(10)

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(60)
        self._reader.join(10)
        return code


def test_cameras_offline_at_boot_are_retried_while_the_others_watch(tmp_path):
    """After a power cut the cameras often boot after the box: two that are not up yet (nothing
    listens on their ports) must not stop the appliance, nor the camera that is up."""
    cfg = write_appliance_config(
        tmp_path / "appliance.yaml",
        {"id": "workcell", "source": str(WORKCELL_CLIP), "fps": None, "loop": True, "realtime": True},
        detector={"when_uncalibrated": "bundle_default"},
    )
    data = __import__("yaml").safe_load(cfg.read_text())
    gate, dock = free_port(), free_port()
    data["cameras"] += [
        {"id": "gate", "source": f"rtsp://127.0.0.1:{gate}/stream", "stall_timeout_s": 2},
        {"id": "dock", "source": f"http://127.0.0.1:{dock}/video.mjpg", "stall_timeout_s": 2},
    ]
    cfg.write_text(__import__("yaml").safe_dump(data))
    systemd = FakeSystemd(tmp_path)
    daemon = Daemon(cfg, {"NOTIFY_SOCKET": str(systemd.path)})
    try:
        assert systemd.collect_until("READY=1", timeout=60), (systemd.messages, daemon.log()[-2000:])
        ready = next(m for _, m in systemd.messages if "READY=1" in m)
        assert "gate: reconnecting" in ready and "dock: reconnecting" in ready, ready
        events = tmp_path / "events.jsonl"
        wait_until(
            lambda: any(e.camera_id == "workcell" for e in read_events(events)), 90, "events from workcell"
        )
        # FFmpeg says so on every connection attempt: both are retried (0.5, 1, 2, 4 s apart)
        for port in (gate, dock):
            wait_until(
                lambda p=port: daemon.log().count(f"127.0.0.1:{p}") >= 4, 30, f"retries on port {port}"
            )
        assert daemon.log().count("gate: starting -> reconnecting") == 1  # said once, not per attempt
        assert daemon.proc.poll() is None
    finally:
        code = daemon.terminate()
    assert code == 0 and "Traceback" not in daemon.log(), daemon.log()[-3000:]


@pytest.mark.parametrize(
    ("source", "needle"),
    [("rtsp://cam-7:port/stream", "malformed URL"), ("/dev/video97", "no such device /dev/video97")],
)
def test_a_source_that_can_never_work_is_a_configuration_error(tmp_path, source, needle):
    cfg = write_appliance_config(tmp_path / "appliance.yaml", {"id": "gate", "source": source})
    out = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "run", "--config", str(cfg)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert "cameras[0].source (gate)" in out.stderr and needle in out.stderr
    assert "Traceback" not in out.stderr


def test_anomalies_open_at_a_hard_kill_end_with_reason_restart_at_the_next_start(tmp_path):
    cfg = write_appliance_config(
        tmp_path / "appliance.yaml",
        {"id": "workcell", "source": str(WORKCELL_CLIP), "fps": None, "loop": True, "realtime": True},
        detector={"when_uncalibrated": "bundle_default"},
    )
    events = tmp_path / "events.jsonl"
    first = Daemon(cfg)
    try:
        wait_until(lambda: any(e.type == "start" for e in read_events(events)), 90, "an anomaly")
    finally:
        first.kill9()
    seen = read_events(events)
    open_ids = {e.event_id for e in seen} - {e.event_id for e in seen if e.type == "end"}
    assert open_ids, "the kill came after the anomaly ended; nothing left open to test"
    last_seq = {i: max(e.seq for e in seen if e.event_id == i) for i in open_ids}
    second = Daemon(cfg)
    try:
        second.wait_for("smoke test passed")
        wait_until(
            lambda: open_ids <= {e.event_id for e in read_events(events) if e.end_reason == "restart"},
            60, "restart ends",
        )  # fmt: skip
    finally:
        assert second.terminate() == 0
    ends = [e for e in read_events(events) if e.end_reason == "restart"]
    assert {e.event_id: e.seq for e in ends} == {i: s + 1 for i, s in last_seq.items()}
    assert all(e.type == "end" and e.ended_at for e in ends)
    assert json.loads((tmp_path / "state" / "open-anomalies.json").read_text()) == {}  # clean stop


def test_a_version_that_dies_at_every_start_is_marked_bad_and_the_factory_model_runs(
    tmp_path, keys, releases
):
    cfg_path = config(
        tmp_path,
        keys,
        {"id": "workcell", "source": str(WORKCELL_CLIP), "fps": None, "loop": True, "realtime": True},
    )
    cfg = load_config(cfg_path)
    store = ModelStore(cfg.state_dir)
    installed = store.install(releases["1.2.1"], cfg).version_id
    for _ in range(cfg.model.failed_starts_before_bad):  # each start dies before it is healthy (60 s)
        daemon = Daemon(cfg_path)
        try:
            daemon.wait_for(f"({installed}, ")
        finally:
            daemon.kill9()
        assert store.state().active == installed
    daemon = Daemon(cfg_path)
    try:
        daemon.wait_for("(factory, ")
    finally:
        assert daemon.terminate() == 0
    assert f"model version {installed} marked bad" in daemon.log()
    assert store.state().active is None
    assert store.bad.of(installed)
    with pytest.raises(Exception, match="marked bad"):  # dropped in again: refused without --force
        store.install(releases["1.2.1"], cfg)


def test_a_model_fault_after_the_probation_rolls_back_instead_of_stopping_the_camera(
    tmp_path, keys, releases
):
    from appliance.service.daemon import Appliance

    camera = {"id": "walkway", "source": str(DEMO_CLIP), "fps": None, "loop": True}
    # no probation at all; the faulty release's fault is in its ONNX graphs
    cfg = load_config(config(tmp_path, keys, camera, health_window_s=0, runtime="onnxruntime"))
    store = ModelStore(cfg.state_dir)
    good = store.install(releases["1.2.1"], cfg).version_id
    faulty = field_update._static_batch_release(keys, releases, tmp_path)
    app = Appliance(cfg)
    app.start()
    stop = threading.Event()
    waiter = threading.Thread(target=app.wait, args=(stop,), daemon=True)
    waiter.start()
    try:
        wait_until(lambda: app.workers[0].stats.frames >= 5, what="first frames")
        bad = store.install(faulty, cfg).version_id
        wait_until(lambda: store.state().active == good, 120, "the rollback")
        wait_until(lambda: app.model.version == "1.2.1" and app.workers[0].state == "streaming", 60, "1.2.1")
    finally:
        stop.set()
        waiter.join(30)
        app.stop()
    last = [u for u in store.log.entries() if u["action"] == "auto_rollback"][-1]
    assert last["result"] == "ok" and bad in last["message"] and "scoring error" in last["message"]
    assert not store.bad.of(bad)  # after the probation a fault rolls back, it does not condemn the version
    assert app.workers[0].restarts == 0
