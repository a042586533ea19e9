"""A model's time base: each camera is scored at the frame rate its model was learned at.

The bundle used here is the shipped fused starter with its learning rate (10 fps: it was learned on
the 10 fps walkway footage) written into its input contract, as bundles built from now on record it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from appliance.capture.frame_rate import RateGate

from .conftest import ROOT

STARTER = ROOT / "appliance" / "assets" / "starter-walking-fused.tar"
DATA = ROOT.parent / "shared" / "data"
SQUATS = DATA / "pose-testdata" / "pose_squats.mp4"  # real footage at 5 fps


def bundle_at(tmp_path: Path, fps: float) -> Path:
    """The starter bundle, declaring that it was learned at ``fps``."""
    with tarfile.open(STARTER) as tar:
        tar.extractall(tmp_path, filter="data")
    root = tmp_path / "starter-walking-fused"
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["input_contract"]["fps"] = fps
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return root


def test_the_gate_keeps_frames_on_the_models_clock_whatever_the_camera_rate():
    for camera_fps, kept in ((30.0, 100), (25.0, 100), (10.0, 100), (12.5, 100)):
        gate = RateGate(10.0)
        times = np.arange(int(10 * camera_fps)) / camera_fps  # ten seconds of frames
        got = [t for t in times if gate.keep(float(t))]
        assert abs(len(got) - kept) <= 1, (camera_fps, len(got))
        assert np.diff(got).max() <= 0.1 + 1 / camera_fps + 1e-9  # never a gap longer than one camera frame
    gate = RateGate(10.0)
    assert all(gate.keep(t) for t in (0.0, 0.1, 0.2)) and gate.keep(0.0)  # a looped file starts over
    assert all(RateGate(None).keep(t) for t in np.arange(30) / 30)  # no time base recorded: all frames


def test_a_camera_slower_than_the_models_learning_rate_is_refused_at_start_naming_it(tmp_path):
    cfg = {
        "schema_version": 1,
        "appliance_id": "t",
        "state_dir": str(tmp_path / "state"),
        "model": {"bundle": str(bundle_at(tmp_path, 10.0)), "watch_inbox": False},
        "pose": {"type": "blazepose"},
        "cameras": [{"id": "workcell", "source": str(SQUATS), "fps": None, "loop": False}],
        "sinks": [{"type": "jsonl", "path": str(tmp_path / "events.jsonl")}],
    }
    config = tmp_path / "appliance.yaml"
    config.write_text(yaml.safe_dump(cfg))
    out = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "run", "--config", str(config)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert "cameras[0] (workcell): the source gives 5 frames per second" in out.stderr
    assert "learned at 10 fps" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.skipif(not (DATA / "mocap-bandai").is_dir(), reason="mocap data not found")
def test_a_faster_source_is_scored_at_the_models_rate_and_the_status_says_so(tmp_path):
    """A 30 fps recording into a model learned at 10 fps: one frame in three is scored (pose too)."""
    from appliance.config import load_config
    from appliance.keypoints.readers import read_keypoints
    from appliance.keypoints.table import write_keypoints_csv
    from appliance.service.daemon import Appliance

    walk = sorted((DATA / "mocap-bandai" / "dataset-2" / "data").glob("dataset-2_walk_*.bvh"))[0]
    (seq,) = read_keypoints(walk)
    assert seq.fps == 30.0
    clip = tmp_path / "walk.csv"
    write_keypoints_csv(clip, seq)
    cfg = {
        "schema_version": 1,
        "appliance_id": "t",
        "state_dir": str(tmp_path / "state"),
        "model": {"bundle": str(bundle_at(tmp_path, 10.0)), "watch_inbox": False},
        "pose": {"type": "keypoints", "path": str(clip)},
        "cameras": [{"id": "aisle", "source": "replay", "loop": False, "realtime": False}],
        "sinks": [{"type": "jsonl", "path": str(tmp_path / "events.jsonl")}],
    }
    config = tmp_path / "appliance.yaml"
    config.write_text(yaml.safe_dump(cfg))
    app = Appliance(load_config(config))
    app.start()
    try:
        worker = app.workers[0]
        worker.thread.join(60)
        status = app.status()["cameras"]["aisle"]
    finally:
        app.stop()
    assert status["model_fps"] == 10.0
    assert abs(worker.stats.frames - len(seq) / 3) <= 1  # the others never reached pose or the model
    assert 0 < worker.stats.windows <= worker.stats.frames - 29  # one track, windows of T = 30 scored frames
    shutil.rmtree(tmp_path / "starter-walking-fused")
