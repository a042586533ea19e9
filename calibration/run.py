"""``appliance calibrate``: run the daemon's own pipeline on normal work and learn a camera's threshold.

The same capture, pose backend, tracker, skeleton maps and scorer as ``appliance run`` (the
:class:`appliance.service.daemon.Appliance` itself, with no sinks), on the live camera for ``minutes`` of
footage, or on a recording with ``--from`` (a video file, or a keypoint file replayed). Every
track's window scores are collected in time order; :mod:`calibration.thresholds` turns them into
the threshold that gives the plant's chosen false-alarm rate, and the result is written beside the
appliance's state, tagged with the model (:mod:`appliance.alarms.threshold_store`).
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from pathlib import Path

import numpy as np

from appliance.config import ApplianceConfig, CameraConfig, KeypointsPoseConfig
from appliance.errors import ApplianceError
from appliance.redact import redact

log = logging.getLogger("appliance.calibrate")

KEYPOINT_SUFFIXES = {".csv", ".json", ".npz", ".bvh"}


class CalibrationAborted(ApplianceError):
    """Calibration could not produce a trustworthy threshold; the message says why and what to do."""


def calibration_config(cfg: ApplianceConfig, camera_id: str | None, source: Path | None) -> ApplianceConfig:
    """The config to calibrate with: one camera, no sinks, no alarms; ``source`` replaces its input."""
    cams = cfg.cameras
    if camera_id is not None:
        cams = [c for c in cams if c.id == camera_id]
        if not cams:
            known = ", ".join(c.id for c in cfg.cameras)
            raise CalibrationAborted(f"no camera {camera_id!r} in the configuration; cameras: {known}")
    elif len(cams) > 1:
        raise CalibrationAborted(
            f"the configuration has {len(cams)} cameras; name one with --camera "
            f"({', '.join(c.id for c in cams)})"
        )
    cam = cams[0]
    pose = cfg.pose
    if source is not None:
        if not source.exists():
            raise CalibrationAborted(f"--from {source}: no such file or folder")
        if source.is_dir() or source.suffix.lower() in KEYPOINT_SUFFIXES:
            pose = KeypointsPoseConfig(path=source)
            cam = cam.model_copy(update={"source": "replay", "loop": False, "realtime": False})
        else:
            if isinstance(pose, KeypointsPoseConfig):
                raise CalibrationAborted("--from a video needs a camera pose backend, not 'keypoints'")
            cam = cam.model_copy(
                update={"source": str(source), "loop": False, "realtime": False, "fps": None}
            )
    detector = cfg.detector.model_copy(update={"when_uncalibrated": "suppress", "threshold": None})
    cam = cam.model_copy(update={"threshold": None})
    return cfg.model_copy(update={"cameras": [cam], "pose": pose, "sinks": [], "detector": detector})


class ScoreCollector:
    """A camera worker's ``on_result`` hook: every track's window scores in time order."""

    def __init__(self) -> None:
        self.tracks: dict[int, list[float]] = {}
        self.people = 0  # most people seen in one frame

    def __call__(self, result) -> None:
        self.people = max(self.people, result.people)
        for tid, score in result.scores.items():
            self.tracks.setdefault(tid, []).append(score)

    def sequences(self) -> list[np.ndarray]:
        return [np.asarray(v, dtype=np.float64) for v in self.tracks.values() if v]

    def info(self, footage_minutes: float, frames: int, fps: float) -> dict:
        """What the calibration summary records about the collected footage."""
        return {
            "footage_minutes": round(footage_minutes, 2),
            "frames": frames,
            "fps": fps,
            "people_seen_max": self.people,
            "tracks": len(self.tracks),
            "windows": sum(len(v) for v in self.tracks.values()),
        }


def collect_scores(
    cfg: ApplianceConfig, minutes: float, progress: bool = True, need_minutes: float = 0.0
) -> tuple[list[np.ndarray], dict]:
    """Per-track window scores (time order) from ``minutes`` of footage of the config's one camera;
    a recording shorter than ``need_minutes`` is refused before it is processed."""
    from appliance.service.daemon import Appliance

    app = Appliance(cfg, purpose="calibrate")
    collected = ScoreCollector()
    lost = threading.Event()
    app.start()
    worker = app.workers[0]
    worker.on_result = collected
    fps = scoring_fps(worker)
    refuse_short_recording(app, worker, fps, need_minutes)
    frames_wanted = round(minutes * 60 * fps)
    stop = threading.Event()
    started = time.monotonic()
    next_line = started
    tty = progress and sys.stderr.isatty()
    try:
        while not stop.is_set() and worker.thread.is_alive():
            done = worker.stats.frames
            if done >= frames_wanted:
                break
            if worker.state in ("reconnecting", "restarting", "failed"):
                lost.set()
                break
            now = time.monotonic()
            if progress and now >= next_line:
                line = _progress_line(
                    done, frames_wanted, fps, worker.stats.people, collected.tracks, now - started
                )
                print(("\r" + line) if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True)
                next_line = now + (0.5 if tty else 10.0)
            stop.wait(0.2)
    finally:
        app.stop()
        if tty:
            print(file=sys.stderr)
    if lost.is_set() and worker.stats.frames == 0:
        why = worker.last_error or worker.source.stats().get("last_error") or worker.state
        raise CalibrationAborted(
            f"camera {cfg.cameras[0].id} could not be opened ({redact(why)}); nothing was saved: "
            "check the camera and calibrate again"
        )
    if lost.is_set():
        raise CalibrationAborted(
            f"camera {cfg.cameras[0].id} was lost after {worker.stats.frames / fps / 60:.1f} min of "
            f"calibration (state {worker.state}); nothing was saved: fix the camera and calibrate again"
        )
    footage_min = worker.stats.frames / fps / 60
    if collected.people == 0:
        raise CalibrationAborted(
            f"no person was seen in {footage_min:.1f} min of footage from camera {cfg.cameras[0].id}: "
            "calibrate while people do their normal work in view (check the camera view and pose backend)"
        )
    info = collected.info(footage_min, worker.stats.frames, fps)
    info["short_of_requested"] = footage_min < minutes * 0.99
    info["model"] = scoring_model(app, cfg.cameras[0].id)
    return collected.sequences(), info


def watch_live(worker, minutes: float, doing: str, changed=lambda: False) -> tuple[int, float]:
    """Let a running camera work for ``minutes`` while a calibration or learning records it; returns
    (frames processed, seconds). A camera lost meanwhile, or ``changed()`` (its model switched),
    aborts: nothing is saved."""
    t0, frames0 = time.monotonic(), worker.stats.frames
    while time.monotonic() - t0 < minutes * 60:
        if not worker.thread.is_alive() or worker.state in ("reconnecting", "restarting", "failed"):
            raise CalibrationAborted(
                f"camera {worker.cfg.id} was lost during {doing} ({worker.state}); nothing was saved"
            )
        if changed():
            raise CalibrationAborted(
                f"the model of camera {worker.cfg.id} changed during {doing}; nothing was saved"
            )
        time.sleep(0.2)
    return worker.stats.frames - frames0, time.monotonic() - t0


def scoring_model(app, camera_id: str) -> dict:
    """The model whose scores a calibration collected: the running bundle, and the camera's site
    model when it runs one (its threshold then belongs to the site model)."""
    model = {**app.model.model_dump(), "score_scale": app.score_scale}
    chosen = app.camera_models.get(camera_id)
    if chosen is not None and chosen.site is not None:
        model["site_model"] = chosen.site.id
    return model


def scoring_fps(worker) -> float:
    """The rate the camera's frames are scored at: the model's time base, else the source's rate."""
    return worker.gate.fps or _source_fps(worker)


def _source_fps(worker) -> float:
    cfg_fps = worker.cfg.fps
    fps = getattr(worker.source, "fps", None)
    if isinstance(fps, (int, float)) and fps and fps > 0 and cfg_fps is None:
        return float(fps)
    if cfg_fps:
        return float(cfg_fps)
    from appliance.pose.extract import video_fps

    return video_fps(worker.cfg.source)


def refuse_short_recording(app, worker, fps: float, need_minutes: float) -> None:
    """Stop before processing a recording that cannot hold the footage the target needs."""
    have = footage_available(worker, fps)
    if have is not None and have < need_minutes:
        app.stop()
        raise CalibrationAborted(
            f"the recording holds {have:.1f} min of footage; the alarm target needs at least "
            f"{need_minutes:.1f} min: give a longer recording or raise the target"
        )


def check_minutes(minutes: float, target_alarms_per_hour: float) -> float:
    """The footage a target needs (minutes); refused at once when fewer minutes are asked for."""
    from calibration.thresholds import MAX_EXTRAPOLATION, minimum_footage_minutes

    need = minimum_footage_minutes(target_alarms_per_hour)
    if minutes < need:
        raise CalibrationAborted(
            f"a target of {target_alarms_per_hour:g} alarms/hour needs at least {need:.1f} min of footage "
            f"(the threshold may extrapolate at most {MAX_EXTRAPOLATION:g}x beyond the footage); pass "
            f"--minutes {math.ceil(need)} or raise the target"
        )
    return need


def footage_available(worker, fps: float) -> float | None:
    """Minutes of footage a recording holds (a replayed keypoint file or a video file); None for a live
    camera or a file that does not say."""
    steps = getattr(worker.backend, "__len__", None)
    if steps is not None:
        return steps() / (getattr(worker.backend, "fps", None) or fps) / 60
    source = str(worker.cfg.source)
    if Path(source).is_file():
        import cv2

        cap = cv2.VideoCapture(source)
        try:
            frames, rate = cap.get(cv2.CAP_PROP_FRAME_COUNT), cap.get(cv2.CAP_PROP_FPS)
        finally:
            cap.release()
        if frames and frames > 0 and rate and rate > 0:
            return float(frames) / float(rate) / 60
    return None


def _progress_line(done: int, wanted: int, fps: float, people: int, tracks: dict, elapsed: float) -> str:
    scores = np.concatenate([np.asarray(v) for v in tracks.values()]) if tracks else np.empty(0)
    q = (
        "p50 {:.1f} p90 {:.1f} p99 {:.1f}".format(*np.percentile(scores, [50, 90, 99]))
        if len(scores)
        else "no windows yet"
    )
    return (
        f"calibrating: {done / fps / 60:.1f}/{wanted / fps / 60:.1f} min of footage ({elapsed:.0f} s), "
        f"{people} person-frames, {len(tracks)} tracks, {len(scores)} windows, scores {q}"
    )


def calibrate(
    cfg: ApplianceConfig,
    minutes: float,
    target_alarms_per_hour: float,
    camera_id: str | None = None,
    source: Path | None = None,
    accept_drift: bool = False,
    progress: bool = True,
) -> dict:
    """Learn and save one camera's threshold from a run of its own; returns the saved summary."""
    run_cfg = calibration_config(cfg, camera_id, source)  # an unknown camera or file is named first
    need = check_minutes(minutes, target_alarms_per_hour)
    cam: CameraConfig = run_cfg.cameras[0]
    sequences, info = collect_scores(run_cfg, minutes, progress, need)
    info["source"] = str(source) if source else redact(str(cam.source))
    return fit_and_save(cfg, cam.id, sequences, info, minutes, target_alarms_per_hour, accept_drift)


def fit_and_save(
    cfg: ApplianceConfig,
    camera_id: str,
    sequences: list[np.ndarray],
    info: dict,
    minutes: float,
    target_alarms_per_hour: float,
    accept_drift: bool = False,
) -> dict:
    """Threshold from collected per-track scores, saved for the active model with its report."""
    from appliance.alarms.threshold_store import save_threshold, thresholds_path
    from calibration.report import write_report
    from calibration.thresholds import drift_check, fit_threshold

    fps = info["fps"]
    drift = drift_check(sequences, fps)
    if drift and not accept_drift:
        raise CalibrationAborted(
            f"{drift}; the line does not look like steady normal work: calibrate again during normal "
            "operation (or pass --accept-drift if it is)"
        )
    det = cfg.detector
    # the plant's rate is per camera: count footage in camera time, however many people were in view
    result = fit_threshold(
        sequences, fps, target_alarms_per_hour, det.start_windows, det.end_windows,
        footage_hours=info["footage_minutes"] / 60,
    )  # fmt: skip
    model = info[
        "model"
    ]  # the model whose scores these are (the active version, not necessarily the config's)
    summary = {
        **result.to_dict(),
        **{k: v for k, v in info.items() if k not in result.to_dict() and k != "model"},
        "camera": camera_id,
        "calibrated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "start_windows": det.start_windows,
        "end_windows": det.end_windows,
    }
    if drift:
        summary.setdefault("warnings", []).append(drift)
    if info.get("short_of_requested"):
        summary.setdefault("warnings", []).append(
            f"the footage held only {info['footage_minutes']:.1f} of the {minutes:g} minutes asked for"
        )
    if model.get("site_model"):
        from appliance.models.site import SiteModelStore

        path = SiteModelStore(cfg.state_dir).set_threshold(camera_id, model["site_model"], summary)
    else:
        path = save_threshold(
            cfg.state_dir, model["name"], str(model["version"]), camera_id, summary, model.get("score_scale")
        )
    report_dir = thresholds_path(cfg.state_dir).parent
    png, js = report_dir / f"{camera_id}-report.png", report_dir / f"{camera_id}-report.json"
    write_report(result, sequences, png, js)
    summary["thresholds_file"] = str(path)
    summary["report"] = str(png)
    return summary
