"""``appliance learn``: the device fits its own site model (numpy), cross-fitted, kept beside the bundles.

The "site" is real motion: Bandai Namco mocap walks projected through the ceiling camera, played as a
recording of two people walking one clip after another (the path ``appliance learn --from`` takes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from appliance.keypoints.sequence import KeypointSequence
from appliance.keypoints.table import write_keypoints_csv

from .conftest import ROOT

DATA = ROOT.parent / "shared" / "data"
FUSED = ROOT / "appliance" / "assets" / "starter-walking-fused.tar"
LSTM_ONLY = ROOT / "appliance" / "assets" / "starter-walking-lstm-vae.tar"
pytestmark = pytest.mark.skipif(
    not (DATA / "mocap-bandai" / "dataset-2").is_dir(), reason=f"mocap data not found under {DATA}"
)


def lanes(clips: list[KeypointSequence], lanes: int = 2, gap: int = 10) -> list[KeypointSequence]:
    """Clips as a recording: ``lanes`` people in view at once, each walking one clip after another
    (``gap`` frames apart); every clip is its own track."""
    out, ends = [], [0] * lanes
    for i, clip in enumerate(clips):
        lane = i % lanes
        start = ends[lane]
        out.append(
            KeypointSequence(
                f"site#{i}",
                clip.layout,
                clip.keypoints,
                np.arange(start, start + len(clip)),
                clip.width,
                clip.height,
                clip.fps,
                clip.labels,
                {"track": str(i)},
            )
        )
        ends[lane] = start + len(clip) + gap
    return out


def continued(first: KeypointSequence, then: KeypointSequence, name: str) -> KeypointSequence:
    """One person doing ``first`` and then ``then``, as a camera sees it: one track, ``then`` moved so
    that it starts one step on from where ``first`` ends (two clips of different places would jump).
    Frame labels are kept (a clip without labels is normal)."""

    def seen(kp: np.ndarray) -> np.ndarray:
        return np.isfinite(kp[..., :2]).all(-1) & (kp[..., 2] > 0)

    def centres(kp: np.ndarray) -> list[np.ndarray]:  # per frame where any joint is seen
        return [k[seen(k)][:, :2].mean(axis=0) for k in kp if seen(k).any()]

    a, b = first.keypoints, then.keypoints.copy()
    ends, starts = centres(a[-10:]), centres(b[:10])
    shift = 2 * ends[-1] - ends[-2] - starts[0] if len(ends) >= 2 and starts else np.zeros(2)
    b[..., :2] = np.where(seen(b)[..., None], b[..., :2] + shift, b[..., :2])  # unseen joints stay unseen

    def labels(s: KeypointSequence) -> np.ndarray:
        return np.zeros(len(s), np.int64) if s.labels is None else np.asarray(s.labels, np.int64)

    return KeypointSequence(
        name, first.layout, np.concatenate([a, b]), np.arange(len(a) + len(b)), first.width, first.height,
        first.fps, np.concatenate([labels(first), labels(then)]), {**then.meta},
    )  # fmt: skip


@pytest.fixture(scope="module")
def mocap():
    from export.datasets import mocap_split

    return mocap_split(DATA)


@pytest.fixture(scope="module")
def site_recording(mocap, tmp_path_factory) -> Path:
    """Two people walking for ~1.7 min (24 of the training split's walk clips)."""
    path = tmp_path_factory.mktemp("site") / "site-walks.csv"
    write_keypoints_csv(path, lanes(mocap.train[:24]))
    return path


def appliance_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "appliance.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


def replay_config(tmp_path: Path, keypoints: Path, bundle: Path = FUSED, loop: bool = False) -> Path:
    cfg = {
        "schema_version": 1,
        "appliance_id": "site-test",
        "state_dir": str(tmp_path / "state"),
        "model": {"bundle": str(bundle), "watch_inbox": False},
        "pose": {"type": "keypoints", "path": str(keypoints)},
        "cameras": [{"id": "aisle", "source": "replay", "loop": loop, "realtime": False}],
        "sinks": [{"type": "jsonl", "path": str(tmp_path / "events.jsonl")}],
    }
    path = tmp_path / "appliance.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_to_end(config: Path) -> tuple[dict, list[dict]]:
    """The daemon on the config's replay until it ends; its last status and the events."""
    from appliance.config import load_config
    from appliance.service.daemon import Appliance

    cfg = load_config(config)
    app = Appliance(cfg)
    app.start()
    try:
        app.workers[0].thread.join(120)
        status = app.status()
    finally:
        app.stop()
        app.close_sinks()
    events_file = Path(cfg.sinks[0].path)
    events = (
        [json.loads(line) for line in events_file.read_text().splitlines()] if events_file.exists() else []
    )
    return status, events


def own_copy(learned, tmp_path: Path, bundle: Path = FUSED) -> Path:
    """The learned state in this test's own folder (tests change it), and a config that uses it."""
    import shutil

    tmp, config, out = learned
    assert out.returncode == 0, out.stderr
    shutil.copytree(tmp / "state", tmp_path / "state")
    cfg = yaml.safe_load(config.read_text())
    cfg["state_dir"] = str(tmp_path / "state")
    cfg["model"]["bundle"] = str(bundle)
    cfg["sinks"] = [{"type": "jsonl", "path": str(tmp_path / "events.jsonl")}]
    path = tmp_path / "appliance.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


# -- the fit ------------------------------------------------------------------------------------------
def test_the_devices_numpy_fit_scores_like_the_server_bundle_graph_on_real_windows(tmp_path):
    """What ``appliance learn`` fits equals what ``appliance-export posture-motion`` ships from the same
    windows: the server's PyTorch module (in float64) and the device's numpy scorer agree to 1e-6 on
    real URFD windows; the exported float32 ONNX graph to float32 rounding (1e-5)."""
    torch = pytest.importorskip("torch")
    import onnxruntime as ort

    from appliance.features.motion import normalise_window
    from appliance.features.window import sliding_windows
    from appliance.models.posture_motion_fit import fit, window_stats
    from export.motion_eval import feature_sequences, load_split, normal_windows
    from export.posture_motion import export_onnx, fit_posture_motion
    from export.posture_motion import window_stats as torch_window_stats

    split = load_split("urfd", DATA)
    parts = {p: feature_sequences(getattr(split, p)) for p in ("train", "val", "test")}
    train, val = normal_windows(parts["train"]), normal_windows(parts["val"])
    test = np.concatenate(
        [normalise_window(sliding_windows(s.raw, 30)) for s in parts["test"] if len(s.raw) >= 30]
    )
    server_model, info = fit_posture_motion(train, val)  # the server's path
    device = fit(train, val)  # the device's path
    assert info["shrink_all"] == device.components[2].shrink and info["train_windows"] == len(train) == 157

    with torch.no_grad():  # the statistics the graph computes are the numpy ones
        graph_stats = torch_window_stats(torch.from_numpy(np.nan_to_num(test))).double().numpy()
        server64 = server_model.double()(torch.from_numpy(np.nan_to_num(test).astype(np.float64))).numpy()
    assert np.abs(graph_stats - window_stats(test)).max() <= 1e-6 * max(1.0, np.abs(graph_stats).max())
    numpy_scores = device.score(test)
    assert len(test) == 675 and np.abs(server64 - numpy_scores).max() <= 1e-6

    onnx_path = tmp_path / "pm.onnx"
    export_onnx(fit_posture_motion(train, val)[0], onnx_path)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    graph = session.run(None, {"window": np.nan_to_num(test).astype(np.float32)})[0].astype(np.float64)
    relative = np.abs(graph - numpy_scores) / np.maximum(1.0, np.abs(numpy_scores))
    assert relative.max() <= 1e-5, relative.max()


def test_thresholds_are_chosen_on_out_of_fold_scores_never_on_the_fitting_windows(mocap):
    from appliance.features.motion import normalise_window, sequence_features
    from appliance.features.window import sliding_windows
    from appliance.models.posture_motion_fit import PostureMotionParams, fit_robust, window_stats
    from appliance.pose.layouts import to_body_graph
    from calibration.learn import TrackRecord, fit_site, split_windows

    recording = lanes(mocap.train[:24])
    records = [TrackRecord(list(to_body_graph(s.keypoints, s.layout)), s.frames.tolist()) for s in recording]
    frames = int(max(s.frames[-1] for s in recording)) + 1
    split = split_windows(records, frames, 30.0, 30)
    assert split.count(0) > 1000 and split.count(1) > 1000 and split.tracks == 24
    # a run keeps its windows' statistics: those of the windows themselves (made in chunks)
    first = split.folds[0][0]
    windows = normalise_window(sliding_windows(sequence_features(np.stack(records[0].bodies)), 30))
    np.testing.assert_allclose(first.stats, window_stats(windows[: len(first.stats)]))
    fitted = fit_site(split, 30.0, 10.0, 3, 30, fused=False)
    runs0, runs1 = split.folds
    assert len(fitted.held_scores) == len(runs0) + len(runs1)
    # each fold's windows were scored by the model fitted on the other fold (on the pooled z-scale)
    on_1, _ = fit_robust(split.stats(1), split.stats(0), 0.0)
    on_0, _ = fit_robust(split.stats(0), split.stats(1), 0.0)
    camera = fitted.params
    for model, runs, scores in ((on_1, runs0, fitted.held_scores[: len(runs0)]),
                                (on_0, runs1, fitted.held_scores[len(runs0) :])):  # fmt: skip
        pooled = PostureMotionParams(model.components, camera.loc, camera.scale)  # its Gaussians, pooled z
        for run, got in zip(runs, scores, strict=True):
            np.testing.assert_allclose(got, pooled.score_stats(run.stats))
    # the pooled z-scale is the fold models' out-of-fold log distances, not the camera model's own
    logs = np.concatenate(
        [on_0.log_components_stats(split.stats(1)), on_1.log_components_stats(split.stats(0))]
    )
    np.testing.assert_allclose(camera.loc, logs.mean(0))
    # the camera runs the Gaussians refitted on both folds: its in-sample scores sit below the
    # out-of-fold ones the threshold was chosen on (a threshold on them would sit too low)
    both = np.concatenate([split.stats(0), split.stats(1)])
    assert camera.info["train_windows"] == len(both)
    in_sample, held = camera.score_stats(both), np.concatenate(fitted.held_scores)
    assert np.quantile(in_sample, 0.99) < np.quantile(held, 0.99)
    # and the threshold is the one those out-of-fold scores give, over the whole footage
    from calibration.thresholds import fit_threshold

    again = fit_threshold(fitted.held_scores, 30.0, 10.0, 3, 30, footage_hours=frames / 30 / 3600)
    assert again.threshold == fitted.threshold.threshold and again.windows == split.count(0) + split.count(1)


# -- the command and the daemon ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def learned(site_recording, mocap, tmp_path_factory):
    """``appliance learn --from`` the site recording, as a plant engineer runs it."""
    tmp = tmp_path_factory.mktemp("learned")
    runs = [s for s in mocap.test if s.meta["action"] == "run"][:2]
    walks = [s for s in mocap.test if s.meta["action"].startswith("walk")][:2]
    clips = tmp / "shift.csv"  # two people, each walking and then running (one track each)
    people = [continued(w, r, f"worker{i}") for i, (w, r) in enumerate(zip(walks, runs, strict=True))]
    write_keypoints_csv(clips, lanes(people, lanes=1, gap=40))
    config = replay_config(tmp, clips)
    out = appliance_cli("learn", "--config", str(config), "--from", str(site_recording), "--minutes", "10",
                        "--target-alarms-per-hour", "60")  # fmt: skip
    return tmp, config, out


def test_learn_from_a_recording_saves_an_active_site_model_with_its_provenance(learned):
    tmp, config, out = learned
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.splitlines()[0])
    assert summary["site_model"] == "s1" and summary["camera"] == "aisle"
    assert summary["base"] == "starter-walking-fused 2.2.0" and summary["tracks"] == 24
    assert 1.4 < summary["footage_minutes"] < 2.0 and summary["windows"] > 700  # at the starter's 10 fps
    assert "held only" in out.stderr  # 10 minutes asked, the recording holds less: said
    assert "appliance rollback --camera aisle" in out.stdout
    site = json.loads(
        (tmp / "state" / "models" / "site" / "aisle" / "versions" / "s1" / "site.json").read_text()
    )
    assert site["base"]["name"] == "starter-walking-fused" and len(site["base"]["manifest_sha256"]) == 64
    assert site["provenance"]["software_version"] and site["provenance"]["windows"] == summary["windows"]
    assert site["map_calibration"]["scale"] > 0 and site["threshold"]["threshold"] == summary["threshold"]
    listing = appliance_cli("models", "--config", str(config))
    assert listing.returncode == 0, listing.stderr
    assert "site models of camera aisle" in listing.stdout and "* s1" in listing.stdout
    assert "base starter-walking-fused 2.2.0" in listing.stdout


def test_the_daemon_scores_with_the_site_model_after_a_restart_and_rollback_returns_to_the_bundle(
    learned, tmp_path
):
    config = own_copy(learned, tmp_path)
    status, events = run_to_end(config)  # a fresh daemon: the site model survives the restart
    cam = status["cameras"]["aisle"]
    assert cam["site_model"] == "s1" and cam["threshold_source"] == "site_model"
    assert status["model_install"]["site_models"]["aisle"]["id"] == "s1"
    starts = [e for e in events if e["type"] == "start"]
    assert starts and all(e["model"]["version"] == "2.2.0+site.s1" for e in events)
    assert len({e["track_id"] for e in starts}) == 2  # both workers, when they start running
    back = appliance_cli("rollback", "--config", str(config))
    assert back.returncode == 0 and "camera aisle scores with the bundle" in back.stdout, back.stderr
    (tmp_path / "events.jsonl").unlink()
    status, events = run_to_end(config)
    cam = status["cameras"]["aisle"]
    assert cam.get("site_model") is None and cam["threshold_source"] == "uncalibrated"
    assert events == []  # the bundle is uncalibrated here: scored, nothing raised
    assert not status["model_install"].get("site_models")


def test_a_base_bundle_the_site_model_does_not_fit_leaves_the_camera_uncalibrated_and_says_why(
    learned, tmp_path
):
    config = own_copy(learned, tmp_path, bundle=LSTM_ONLY)  # a field update to another kind of model
    status, events = run_to_end(config)
    cam = status["cameras"]["aisle"]
    assert cam["threshold_source"] == "uncalibrated" and cam.get("site_model") is None
    assert "site models do not extend" in cam["site_model_problem"] and events == []


def test_a_damaged_site_model_is_not_used_and_the_status_says_so(learned, tmp_path):
    config = own_copy(learned, tmp_path)
    params = tmp_path / "state" / "models" / "site" / "aisle" / "versions" / "s1" / "params.npz"
    params.write_bytes(params.read_bytes()[:-10] + b"0123456789")
    status, events = run_to_end(config)
    cam = status["cameras"]["aisle"]
    assert cam["threshold_source"] == "uncalibrated" and "damaged" in cam["site_model_problem"]
    assert events == []


def test_learn_at_the_cameras_full_rate_gives_a_site_model_scored_at_that_rate(
    learned, site_recording, tmp_path
):
    """``--fps 30`` on 30 fps footage: more than three times the windows of the starter's 10 fps, kept in the
    site model, and the daemon scores the camera at 30 fps from then on."""
    config = replay_config(tmp_path, site_recording)
    out = appliance_cli("learn", "--config", str(config), "--from", str(site_recording), "--minutes", "10",
                        "--target-alarms-per-hour", "60", "--fps", "30")  # fmt: skip
    assert out.returncode == 0, out.stderr
    at_30 = json.loads(out.stdout.splitlines()[0])
    at_10 = json.loads(learned[2].stdout.splitlines()[0])  # the same footage at the base's 10 fps
    # a track of L frames: L - 29 windows at 30 fps, L / 3 - 29 at 10 fps (more than a third fewer)
    assert at_30["windows"] > 3 * at_10["windows"] and at_30["footage_minutes"] == at_10["footage_minutes"]
    site = json.loads(
        (tmp_path / "state" / "models" / "site" / "aisle" / "versions" / "s1" / "site.json").read_text()
    )
    assert site["provenance"]["fps"] == 30.0
    status, _ = run_to_end(config)
    assert (
        status["cameras"]["aisle"]["model_fps"] == 30.0 and status["cameras"]["aisle"]["site_model"] == "s1"
    )
    bad = appliance_cli("learn", "--config", str(config), "--from", str(site_recording), "--fps", "0")
    assert bad.returncode == 2 and "--fps 0" in bad.stderr and "Traceback" not in bad.stderr


def test_a_target_the_footage_cannot_support_is_refused_before_any_processing(site_recording, tmp_path):
    config = replay_config(tmp_path, site_recording)
    out = appliance_cli("learn", "--config", str(config), "--minutes", "2", "--target-alarms-per-hour", "1",
                        "--from", str(site_recording), timeout=60)  # fmt: skip
    assert out.returncode == 2
    assert "needs at least 6.0 min of footage" in out.stderr and "--minutes 6" in out.stderr
    assert "learning:" not in out.stderr and "Traceback" not in out.stderr
    out = appliance_cli("learn", "--config", str(config), "--minutes", "10", "--target-alarms-per-hour", "3",
                        "--from", str(site_recording), timeout=60)  # fmt: skip
    assert out.returncode == 2 and "holds 1." in out.stderr and "needs at least 2.0 min" in out.stderr
    assert "learning:" not in out.stderr
    assert not (tmp_path / "state" / "models" / "site").exists()


def test_the_running_daemon_learns_a_cameras_site_model_on_command_and_switches_to_it(mocap, tmp_path):
    """``cmd/learn`` (here called as the MQTT command handler calls it): the camera keeps watching while
    the running pipeline's skeletons are recorded; then the site model is saved and the camera switches
    to it between frames, without a restart."""
    from appliance.config import load_config
    from appliance.service.daemon import Appliance

    recording = tmp_path / "walks.csv"
    write_keypoints_csv(recording, lanes(mocap.train, lanes=2))  # 48 clips, ~3 min of two people walking
    from calibration.live import register_live_commands

    app = Appliance(load_config(replay_config(tmp_path, recording, loop=True)))  # outlasts the 0.7 min
    register_live_commands(app)  # as `appliance run` does
    app.start()
    try:
        worker = app.workers[0]
        # a high alarm target, so that 40 s of footage supports a threshold counted directly (the
        # replay runs as fast as the shared CPU allows; the test checks the flow, not the threshold)
        answer = app.command("learn", {"minutes": 0.7, "target_alarms_per_hour": 1000})
        assert answer["ok"] is True and answer["site_model"] == "s1", answer
        assert answer["method"] == "empirical"
        assert worker.thread.is_alive() and app.status()["cameras"]["aisle"]["site_model"] == "s1"
        assert app.camera_models["aisle"].ref.version == "2.2.0+site.s1"
        from calibration.run import CalibrationAborted

        with pytest.raises(CalibrationAborted, match="needs at least"):
            app.command("learn", {"minutes": 0.01, "target_alarms_per_hour": 60})
    finally:
        app.stop()
    site = json.loads(
        (tmp_path / "state" / "models" / "site" / "aisle" / "versions" / "s1" / "site.json").read_text()
    )
    assert site["provenance"]["source"] == "live camera aisle (learn command)"


def test_live_learning_cuts_footage_into_blocks_of_camera_time_when_the_camera_drops_frames():
    """A camera that keeps up with only a third of its frames (a loaded device) must still have its
    footage cut into 15 s blocks of real time: numbered by frame count, 30 s of it would all fall
    into the first block and the held-out fold would be empty. The clock is a stand-in so that the
    test does not have to load a CPU; the recorder is the real one."""
    from calibration.learn import TeeRecorder, block_of

    class Scorer:
        input_kind = "body"

        def push(self, inputs):
            return dict.fromkeys(inputs, 1.0)

    now = [100.0]
    tee = TeeRecorder(Scorer(), fps=10.0, clock=lambda: now[0])
    body = np.zeros((15, 3), np.float32)
    for _ in range(100):  # 100 frames scored over 30 s of camera time: 3.3 a second, not 10
        assert tee.push({1: body}) == {1: 1.0}  # the running scorer still scores
        now[0] += 0.3
    frames = np.asarray(tee.records()[0].frames)
    assert frames[0] == 0 and frames[-1] == 297 and np.all(np.diff(frames) == 3)
    assert np.bincount(block_of(frames, 10.0)).tolist() == [50, 50]  # 0-15 s and 15-30 s
    assert (tee.frame + 1) / 10.0 == pytest.approx(29.8)  # the footage, in seconds of camera time
    counted = TeeRecorder(Scorer())  # no time base known: frames are counted
    for _ in range(3):
        counted.push({1: body})
    assert counted.records()[0].frames == [0, 1, 2]
