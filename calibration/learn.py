"""``appliance learn``: fit a camera's site model from its own normal footage, then its threshold.

The daemon's own pipeline (capture, pose, tracking) runs on the live camera or a recording, as for
``calibrate``; instead of scoring, each track's body keypoints are recorded (skeletons only, never
pixels) and, on a fused base, the map part's window scores. Then, with numpy alone:

1. **Cross-fitting.** The footage is cut into blocks of ``BLOCK_S`` seconds of camera time, even
   blocks one fold, odd blocks the other; a window that straddles two blocks is dropped, so the
   folds share no frame. Each fold's model (Gaussians on its fold, shrinkage chosen on the other)
   scores the other fold; the alarm threshold is chosen on these out-of-fold scores over the whole
   footage. A threshold chosen on the fitting windows would sit too low: a model scores the windows
   it memorised as more normal than the ones it will meet. The camera then runs the Gaussians
   refitted on both folds, z-scored on the fold models' out-of-fold scale (:func:`fit_site`).
2. **Robust fit** (optional, ``trim``): drop the share of fitting windows the first fit scores worst
   and refit. Off by default: on the validation splits it lowered AUROC at every contamination
   level tried (0-5 %), because it also cuts the rare but normal moments; the Gaussians' shrinkage
   already keeps a few odd windows from dominating.
3. **Threshold** for the plant's false-alarm target exactly as ``calibrate`` chooses it
   (:mod:`calibration.thresholds`), per track run, in camera time.

The result is saved as the camera's active site model (:mod:`appliance.models.site`).
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from appliance import __version__
from appliance.config import ApplianceConfig
from appliance.features.motion import normalise_window, sequence_features
from appliance.features.window import sliding_windows
from appliance.models.fused import MapCalibration, fit_map_calibration
from appliance.models.posture_motion_fit import (
    STAT_GROUPS,
    PostureMotionParams,
    fit_robust,
    refit,
    stat_dim,
    window_stats,
)
from appliance.redact import redact
from calibration.run import (
    CalibrationAborted,
    calibration_config,
    check_minutes,
    refuse_short_recording,
    scoring_fps,
    watch_live,
)
from calibration.thresholds import CalibrationResult, fit_threshold

log = logging.getLogger("appliance.learn")

BLOCK_S = 15.0  # cross-fitting blocks of camera time: even ones fit, odd ones are held out
TRIM = 0.0  # share of fitting windows dropped before a refit (0: chosen on validation splits, see README)
CHUNK = 512  # windows made at a time when reducing them to statistics (~25 MB of float64 working arrays)
MIN_WINDOWS = 60  # per part: fewer cannot estimate the Gaussians' spread, nor a threshold


@dataclass
class TrackRecord:
    """One track's skeletons in the order seen: body-graph keypoints, camera frame numbers and, on a
    fused base, the map part's score of the window ending at each frame (NaN until it has T frames)."""

    bodies: list[np.ndarray] = field(default_factory=list)
    frames: list[int] = field(default_factory=list)
    map_scores: list[float] = field(default_factory=list)


class SkeletonRecorder:
    """Takes the scorer's place in a camera's pipeline while it learns: records, scores nothing."""

    def __init__(self, input_kind: str, maps_scorer=None) -> None:
        self.input_kind = input_kind  # "body" (posture-motion base) or "both" (fused base)
        self.maps = maps_scorer
        self.frame = -1  # camera frames seen (push is called once per frame)
        self.live: dict[int, TrackRecord] = {}
        self.done: list[TrackRecord] = []
        self.people = 0

    def push(self, inputs: dict) -> dict[int, float | None]:
        map_scores = self.maps.push({t: m for t, (m, _) in inputs.items()}) if self.maps is not None else {}
        self._record(inputs, map_scores)
        return {}

    def _next_frame(self) -> int:
        return self.frame + 1

    def _record(self, inputs: dict, map_scores: dict) -> None:
        self.frame = self._next_frame()
        self.people = max(self.people, len(inputs))
        both = self.input_kind == "both"
        for tid, x in inputs.items():
            rec = self.live.setdefault(tid, TrackRecord())
            rec.bodies.append(np.asarray(x[1] if both else x, np.float32))
            rec.frames.append(self.frame)
            if both:
                s = map_scores.get(tid)
                rec.map_scores.append(math.nan if s is None else float(s))

    def drop(self, track_id: int) -> None:
        rec = self.live.pop(track_id, None)
        if rec is not None:
            self.done.append(rec)
        if self.maps is not None:
            self.maps.drop(track_id)

    def clear(self) -> None:
        for tid in list(self.live):
            self.drop(tid)

    def take_over(self, old: object) -> None:
        """Learning starts from fresh tracks."""

    def records(self) -> list[TrackRecord]:
        return [*self.done, *self.live.values()]

    def windows(self, window: int) -> int:
        return sum(max(0, len(r.frames) - window + 1) for r in self.records())


class TeeRecorder(SkeletonRecorder):
    """Live learning: records what a camera's running scorer is fed, and lets it score as before.

    With the model's ``fps``, frames are numbered by camera time on that time base: a camera that
    cannot keep up (frames dropped under load) still has its footage cut into blocks of real time,
    and its alarm rates counted per hour of real time, as the camera will run.
    """

    def __init__(self, inner, fps: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(getattr(inner, "input_kind", "maps"))
        self.inner = inner
        self.fps = fps
        self.clock = clock
        self._t0: float | None = None

    def _next_frame(self) -> int:
        if self.fps is None:
            return super()._next_frame()
        now = self.clock()
        if self._t0 is None:
            self._t0 = now
        return max(self.frame + 1, round((now - self._t0) * self.fps))

    def push(self, inputs: dict) -> dict[int, float | None]:
        out = self.inner.push(inputs)
        self._record(inputs, getattr(self.inner, "last_map_scores", {}))
        return out

    def drop(self, track_id: int) -> None:
        self.inner.drop(track_id)
        super().drop(track_id)

    def clear(self) -> None:
        self.inner.clear()
        super().clear()

    def take_over(self, old: object) -> None:
        self.inner.take_over(old)


def not_learnable(bundle) -> None:
    """Refuse a base bundle whose kind has no site model (the LSTM-VAE alone is retrained on a server)."""
    if not bundle.kind.site_learnable:
        from appliance.models.registry import site_learnable_types

        raise CalibrationAborted(
            f"model {bundle.name} is a {bundle.model_type} bundle: a site model is learned on top of a "
            f"{' or '.join(site_learnable_types())} bundle (the LSTM-VAE alone is retrained on a server: "
            "appliance-export train)"
        )


def learn_live(app, camera_id: str, minutes: float, target_alarms_per_hour: float) -> dict[str, Any]:
    """``cmd/learn``: learn a camera's site model from the running pipeline (no second capture, the
    camera keeps watching with its current model meanwhile); blocks for ``minutes``."""
    check_minutes(minutes, target_alarms_per_hour)
    worker = next((w for w in app.workers if w.cfg.id == camera_id), None)
    if worker is None:
        raise CalibrationAborted(
            f"no camera {camera_id!r}; cameras: {', '.join(w.cfg.id for w in app.workers)}"
        )
    loaded = app.loaded
    not_learnable(loaded.bundle)
    pipeline = worker.pipeline
    if isinstance(pipeline.scorer, SkeletonRecorder):
        raise CalibrationAborted(f"camera {camera_id} is already learning")
    tee = TeeRecorder(pipeline.scorer, worker.gate.fps)
    pipeline.scorer = tee
    log.info("camera %s: learning a site model from %.1f min of live footage", camera_id, minutes)
    try:
        frames, elapsed = watch_live(
            worker, minutes, "learning", lambda: pipeline.scorer is not tee or worker.pipeline is not pipeline
        )
    finally:
        if pipeline.scorer is tee:
            pipeline.scorer = tee.inner
    fps = worker.gate.fps or (frames / elapsed if elapsed > 0 else 30.0)
    summary = fit_and_save_site(
        app.cfg, camera_id, loaded, tee, fps, minutes, target_alarms_per_hour,
        f"live camera {camera_id} (learn command)",
    )  # fmt: skip
    app.poll_site_models()
    return summary


# -- cross-fitting -------------------------------------------------------------------------------
@dataclass
class Run:
    """Consecutive windows of one track within one block of time."""

    stats: np.ndarray  # (n, stat_dim) the windows' statistics (all the posture-motion model needs)
    maps: np.ndarray  # (n,) the map part's scores (zeros without a map part)


@dataclass
class SplitWindows:
    """The recorded windows, split by time into two folds (even and odd blocks) for cross-fitting."""

    folds: tuple[list[Run], list[Run]]
    frames: int
    tracks: int

    def stats(self, fold: int) -> np.ndarray:
        runs = self.folds[fold]
        return np.concatenate([r.stats for r in runs]) if runs else np.zeros((0, stat_dim(STAT_GROUPS)))

    def maps(self, fold: int) -> np.ndarray:
        runs = self.folds[fold]
        return np.concatenate([r.maps for r in runs]) if runs else np.zeros(0)

    def count(self, fold: int) -> int:
        return sum(len(r.maps) for r in self.folds[fold])


def block_of(frames: np.ndarray, fps: float, block_s: float = BLOCK_S) -> np.ndarray:
    return (np.asarray(frames, np.float64) / (fps * block_s)).astype(np.int64)


def split_windows(
    records: list[TrackRecord], frames: int, fps: float, window: int, block_s: float = BLOCK_S
) -> SplitWindows:
    """Every track's windows, by the block of time they lie in: even blocks are fold 0, odd blocks
    fold 1. A window straddling two blocks is left out, so the folds share no frame. Windows are
    kept as their statistics, made a few thousand at a time (an hour of one track's windows would
    take 1.6 GB; their statistics take a tenth)."""
    folds: tuple[list[Run], list[Run]] = ([], [])
    tracks = 0
    for rec in records:
        n = len(rec.frames) - window + 1
        if n <= 0:
            continue
        tracks += 1
        f = np.asarray(rec.frames)
        start, end = block_of(f[:n], fps, block_s), block_of(f[window - 1 :], fps, block_s)
        maps = np.asarray(rec.map_scores, np.float64)[window - 1 :] if rec.map_scores else np.zeros(n)
        idx = np.flatnonzero(start == end)
        if len(idx) == 0:
            continue
        views = sliding_windows(sequence_features(np.stack(rec.bodies)), window)  # a view: no copy
        stats = np.concatenate(
            [window_stats(normalise_window(views[idx[i : i + CHUNK]])) for i in range(0, len(idx), CHUNK)]
        )
        cuts = np.flatnonzero((np.diff(idx) != 1) | (np.diff(end[idx]) != 0)) + 1
        at = 0
        for run in np.split(idx, cuts):
            folds[int(end[run[0]] % 2)].append(Run(stats[at : at + len(run)], maps[run]))
            at += len(run)
    return SplitWindows(folds, frames, tracks)


@dataclass
class SiteFit:
    params: PostureMotionParams  # the model the camera runs: refitted on both folds (see :func:`fit_site`)
    map_calibration: tuple[float, float] | None
    held_scores: list[np.ndarray]  # out-of-fold scores, per run (what the threshold was chosen on)
    threshold: CalibrationResult
    trimmed: int
    fold_windows: tuple[int, int]


def fuse(motion: np.ndarray, cal: tuple[float, float] | None, maps) -> np.ndarray:
    """Posture-motion scores, or on a fused base the larger of them and the map part's calibrated
    score (as :class:`appliance.models.fused.FusedScorer` computes them live)."""
    if cal is None:
        return motion
    return np.maximum(motion, MapCalibration(*cal)(np.asarray(maps, np.float64)))


def score_with(params: PostureMotionParams, cal: tuple[float, float] | None, stats, maps) -> np.ndarray:
    """The site model's scores of windows given by their statistics (and, fused, their map scores)."""
    return fuse(params.score_stats(stats), cal, maps)


def _map_calibration(split: SplitWindows) -> tuple[float, float]:
    """The map part's calibration onto the site's scale, on every recorded window: its LSTM-VAE never
    saw this footage, so no window is in-sample for it."""
    maps = np.concatenate([split.maps(0), split.maps(1)])
    finite = maps[np.isfinite(maps)]
    if len(finite) < 2 * MIN_WINDOWS:
        raise CalibrationAborted("the map part scored too few windows to calibrate it")
    c = fit_map_calibration(finite)
    return (c.loc, c.scale)


def fit_site(
    split: SplitWindows,
    fps: float,
    target_alarms_per_hour: float,
    start_windows: int,
    end_windows: int,
    fused: bool,
    trim: float = TRIM,
) -> SiteFit:
    """Two-fold cross-fitting, then a refit on all the footage.

    Each fold's model (Gaussians on its fold, shrinkage chosen on the other) gives log distances of
    the other fold's windows; pooled, they set the components' z-scale, and the out-of-fold scores on
    that scale are what the threshold is chosen on, over the whole footage. The camera runs the
    Gaussians refitted on both folds (:func:`appliance.models.posture_motion_fit.refit`): half the footage
    ranks anomalies measurably worse (``benchmarks/site_learning.py``)."""
    counts = (split.count(0), split.count(1))
    if min(counts) < MIN_WINDOWS:
        raise CalibrationAborted(
            f"too few windows to learn from: {counts[0]} and {counts[1]} in the two halves of the footage "
            f"(at least {MIN_WINDOWS} each); record more footage with people at their normal work in view"
        )
    stats = (split.stats(0), split.stats(1))
    fits = [fit_robust(stats[k], stats[1 - k], trim) for k in (0, 1)]
    held_logs = [fits[k][0].log_components_stats(stats[1 - k]) for k in (0, 1)]
    params = refit(np.concatenate([stats[k][fits[k][1]] for k in (0, 1)]), [f for f, _ in fits], held_logs)
    cal = _map_calibration(split) if fused else None
    scores = []
    for held in (0, 1):  # fold ``held`` as the other fold's model scored it, on the pooled z-scale
        motion = ((held_logs[1 - held] - params.loc) / params.scale).max(axis=1)
        runs = split.folds[held]
        ends = np.cumsum([len(r.maps) for r in runs])[:-1]
        scores += [fuse(m, cal, r.maps) for m, r in zip(np.split(motion, ends), runs, strict=True)]
    result = fit_threshold(
        scores, fps, target_alarms_per_hour, start_windows, end_windows,
        footage_hours=split.frames / fps / 3600,
    )  # fmt: skip
    trimmed = sum(int((~keep).sum()) for _, keep in fits)
    return SiteFit(params, cal, scores, result, trimmed, counts)


# -- the command -----------------------------------------------------------------------------------
def learn(
    cfg: ApplianceConfig,
    minutes: float,
    target_alarms_per_hour: float,
    camera_id: str | None = None,
    source: Path | None = None,
    progress: bool = True,
    trim: float = TRIM,
    fps: float | None = None,
) -> dict[str, Any]:
    """Learn and activate one camera's site model; returns the summary printed by the CLI.

    ``fps``: the site model's time base (default: the base bundle's). The site model is scored at the
    rate it learned at; on a fused base the map part's scale is refitted at that rate too."""
    run_cfg = calibration_config(cfg, camera_id, source)  # an unknown camera or file is named first
    need = check_minutes(minutes, target_alarms_per_hour)
    cam = run_cfg.cameras[0]
    from appliance.service.daemon import Appliance

    recorder: dict[str, SkeletonRecorder] = {}

    def make_recorder(loaded) -> SkeletonRecorder:
        not_learnable(loaded.bundle)
        both = loaded.bundle.kind.input_kind == "both"  # a fused base: its map part's scores are recorded
        rec = SkeletonRecorder(loaded.bundle.kind.input_kind, loaded.scorer().maps if both else None)
        recorder["rec"] = rec
        return rec

    app = Appliance(run_cfg, scorer_override=make_recorder, learn_fps=fps)
    app.start()
    worker = app.workers[0]
    rec = recorder["rec"]
    loaded = app.loaded
    fps = scoring_fps(worker)
    refuse_short_recording(app, worker, fps, need)
    frames_wanted = round(minutes * 60 * fps)
    _run_until(app, worker, rec, frames_wanted, fps, progress)
    return fit_and_save_site(cfg, cam.id, loaded, rec, fps, minutes, target_alarms_per_hour, source, trim)


def fit_and_save_site(
    cfg: ApplianceConfig,
    camera_id: str,
    loaded,
    rec: SkeletonRecorder,
    fps: float,
    minutes: float,
    target_alarms_per_hour: float,
    source: Path | str | None,
    trim: float = TRIM,
) -> dict[str, Any]:
    """Cross-fit the recorded skeletons and save the camera's active site model (CLI and live)."""
    footage_min = (rec.frame + 1) / fps / 60
    if rec.people == 0:
        raise CalibrationAborted(
            f"no person was seen in {footage_min:.1f} min of footage from camera {camera_id}: learn while "
            "people do their normal work in view (check the camera view and pose backend)"
        )
    t0 = time.perf_counter()
    split = split_windows(rec.records(), rec.frame + 1, fps, loaded.bundle.contract.window)
    det = cfg.detector
    fitted = fit_site(
        split, fps, target_alarms_per_hour, det.start_windows, det.end_windows,
        loaded.bundle.kind.input_kind == "both", trim,
    )  # fmt: skip
    fit_seconds = time.perf_counter() - t0
    return _save(cfg, camera_id, loaded, fitted, split, footage_min, minutes, fps, source, fit_seconds, trim)


def _run_until(app, worker, rec: SkeletonRecorder, frames_wanted: int, fps: float, progress: bool) -> None:
    stop = threading.Event()
    started = time.monotonic()
    next_line = started
    tty = progress and sys.stderr.isatty()
    lost = False
    try:
        while not stop.is_set() and worker.thread.is_alive():
            done = worker.stats.frames
            if done >= frames_wanted:
                break
            if worker.state in ("reconnecting", "restarting", "failed"):
                lost = True
                break
            now = time.monotonic()
            if progress and now >= next_line:
                line = (
                    f"learning: {done / fps / 60:.1f}/{frames_wanted / fps / 60:.1f} min of footage "
                    f"({now - started:.0f} s), {len(rec.records())} tracks, {rec.windows(30)} windows"
                )
                print(("\r" + line) if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True)
                next_line = now + (0.5 if tty else 10.0)
            stop.wait(0.2)
    finally:
        app.stop()
        if tty:
            print(file=sys.stderr)
    if lost:
        why = worker.last_error or worker.source.stats().get("last_error") or worker.state
        raise CalibrationAborted(
            f"camera {worker.cfg.id} was lost after {worker.stats.frames / fps / 60:.1f} min "
            f"({redact(str(why))}); nothing was saved: fix the camera and learn again"
        )


def _save(cfg, camera_id, loaded, fitted: SiteFit, split: SplitWindows, footage_min, minutes, fps, source,
          fit_seconds, trim) -> dict[str, Any]:  # fmt: skip
    from appliance.models.site import SiteModelStore, base_identity
    from appliance.updates.store import ModelStore
    from calibration.report import write_report

    result = fitted.threshold
    det = cfg.detector
    summary = {
        **result.to_dict(),
        "camera": camera_id,
        "calibrated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "start_windows": det.start_windows,
        "end_windows": det.end_windows,
        "cross_fitted": f"two folds of alternating {BLOCK_S:g} s blocks; threshold on out-of-fold scores; "
        "the model refitted on both",
    }
    if footage_min < minutes * 0.99:
        summary["warnings"] = [
            *summary.get("warnings", []),
            f"the footage held only {footage_min:.1f} of the {minutes:g} minutes asked for",
        ]
    provenance = {
        "camera": camera_id,
        "footage_minutes": round(footage_min, 2),
        "fps": fps,
        "frames": split.frames,
        "tracks": split.tracks,
        "windows": sum(fitted.fold_windows),  # all fitted by the camera's model, each scored out-of-fold
        "fold_windows": list(fitted.fold_windows),
        "trimmed_windows": fitted.trimmed,
        "trim": trim,
        "source": str(source) if source else redact(str(cfg.cameras[0].source)),  # (live: said by caller)
        "software_version": __version__,
        "fit_seconds": round(fit_seconds, 2),
    }
    store = SiteModelStore(cfg.state_dir)
    site_id = store.save(
        camera_id, fitted.params, fitted.map_calibration, summary, base_identity(loaded.bundle), provenance
    )
    ModelStore(cfg.state_dir).log.record(
        "learn", "ok", version=f"site:{camera_id}/{site_id}", bundle=loaded.bundle,
        message=f"site model {site_id} of camera {camera_id} on base {loaded.version_id}",
    )  # fmt: skip
    report_dir = Path(cfg.state_dir) / "calibration"
    png, js = report_dir / f"{camera_id}-report.png", report_dir / f"{camera_id}-report.json"
    write_report(result, fitted.held_scores, png, js)
    return {
        "camera": camera_id,
        "site_model": site_id,
        "base": loaded.bundle.name,
        "threshold": result.threshold,
        "method": result.method,
        "expected_alarms_per_hour": result.expected_alarms_per_hour,
        **provenance,
        "warnings": summary.get("warnings", []),
        "saved_to": str(store.pointer(camera_id).parent),
        "report": str(png),
    }
