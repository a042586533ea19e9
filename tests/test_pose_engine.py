"""The pose engine all cameras share: one copy of the models, lent frame by frame in turn, so memory
does not grow with cameras and a busy camera cannot starve another."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np

from appliance.config import load_config
from appliance.pose.engine import ModelPool
from appliance.service.daemon import Appliance
from appliance.service.demo import DEMO_CLIP as WALKWAY_CLIP
from appliance.service.demo import WORKCELL_CLIP
from tests.conftest import free_port, write_appliance_config

FRAMES = 24


def clip_frames(path: Path, n: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while len(frames) < n:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    assert len(frames) == n, f"{path} has fewer than {n} frames"
    return frames


def test_the_pool_lends_in_request_order_whatever_the_threads_do():
    """Three clients hammer a one-copy pool: each waits for at most the two others, every time, and
    once all three are in line they take turns (a plain lock lets the thread that just released it
    take it again, over and over)."""
    pool = ModelPool(lambda: object(), copies=1)
    counts = [0, 0, 0]
    stop = threading.Event()
    start = threading.Barrier(3)

    def client(i: int) -> None:
        start.wait()
        while not stop.is_set():
            with pool.lease():
                counts[i] += 1
                time.sleep(0.002)  # an interpreter's invoke: the GIL is free while a copy is in use

    threads = [threading.Thread(target=client, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    while min(counts) == 0:  # all three have been served once: from here on all three are in line
        stop.wait(0.001)
    before = list(counts)
    while pool.leases < before[0] + before[1] + before[2] + 600:
        stop.wait(0.01)
    stop.set()
    for t in threads:
        t.join(10)
    turns = [after - b for after, b in zip(counts, before, strict=True)]
    assert pool.max_overtaken <= 2, pool.stats()
    assert max(turns) - min(turns) <= 2, turns


def test_a_busy_camera_cannot_starve_another_through_the_shared_engine():
    """Real BlazePose on real clips: the walkway (3-6 people, long frames) and a dancer (one person)
    share one copy of the models; the dancer's frames are never held up by more than one walkway
    frame, and neither camera runs ahead of the other by more than a frame."""
    from appliance.pose.blazepose import BlazePoseBackend, BlazePoseModels, blazepose_models

    engine = blazepose_models(copies=1)
    busy = BlazePoseBackend(models=engine, max_people=8)
    light = BlazePoseBackend(models=engine)
    clips = {"busy": clip_frames(WALKWAY_CLIP, FRAMES), "light": clip_frames(WORKCELL_CLIP, FRAMES)}
    done = {"busy": 0, "light": 0}
    other_when_finished: dict[str, int] = {}
    people = {"busy": 0, "light": 0}
    go = threading.Barrier(2)

    def run(name: str, backend: BlazePoseBackend, other: str) -> None:
        go.wait()
        for frame in clips[name]:
            people[name] += len(backend.infer(frame))
            done[name] += 1
        other_when_finished[name] = done[other]

    threads = [
        threading.Thread(target=run, args=("busy", busy, "light")),
        threading.Thread(target=run, args=("light", light, "busy")),
    ]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
    finally:
        busy.close()
        light.close()
        engine.close(BlazePoseModels.close)
    assert engine.leases == 2 * FRAMES and engine.max_overtaken <= 1, engine.stats()
    first = min(other_when_finished, key=lambda k: other_when_finished[k])  # finished first
    assert other_when_finished[first] >= FRAMES - 1, other_when_finished
    assert people["busy"] >= 2 * FRAMES and people["light"] >= FRAMES - 2, people  # real work was done


def test_cameras_share_one_copy_of_the_pose_models_and_an_offline_one_holds_up_nobody(tmp_path):
    cfg_path = write_appliance_config(
        tmp_path / "appliance.yaml",
        {"id": "workcell", "source": str(WORKCELL_CLIP), "fps": None, "loop": True},
        detector={"when_uncalibrated": "bundle_default"},
        pose={"type": "blazepose", "frame_budget_ms": "auto"},
    )
    import yaml

    data = yaml.safe_load(cfg_path.read_text())
    data["cameras"] += [
        {"id": "walkway", "source": str(WALKWAY_CLIP), "fps": None, "loop": True},
        {"id": "gate", "source": f"rtsp://127.0.0.1:{free_port()}/stream", "stall_timeout_s": 2},
    ]
    cfg_path.write_text(yaml.safe_dump(data))
    app = Appliance(load_config(cfg_path))
    app.start()
    try:
        engine = app.pose_engine
        assert engine is not None and engine.copies == 1
        pose = {w.cfg.id: w.backend for w in app.workers}
        assert pose["workcell"]._models is engine and pose["walkway"]._models is engine
        # pose.frame_budget_ms auto: three cameras scored at the starter's 10 fps share one copy, so
        # each may spend 60% of a third of its 100 ms frame period on landmark runs
        assert {c: round(b.frame_budget_ms, 6) for c, b in pose.items()} == dict.fromkeys(pose, 20.0)
        stats = {w.cfg.id: w.stats for w in app.workers}
        deadline = threading.Event()
        for _ in range(1200):
            if stats["workcell"].frames >= 40 and stats["walkway"].frames >= 40:
                break
            deadline.wait(0.1)
        assert stats["workcell"].frames >= 40 and stats["walkway"].frames >= 40, stats
        assert stats["gate"].frames == 0
        assert engine.max_overtaken <= 1, engine.stats()  # two cameras at work: each waits one frame at most
    finally:
        app.stop()
    assert app.pose_engine is None  # closed with the daemon
