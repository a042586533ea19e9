"""The appliance daemon: every camera's capture -> pose -> tracks -> maps -> scores -> events -> sinks.

Start-up checks everything a technician can get wrong before the first frame (bundle and its smoke
test, pose model files, sinks, cameras) and fails with one clear message and an exit code:
2 configuration, 3 model, 4 camera. Each camera then runs in its own thread with its own pose
backend (pose tracking state is per stream); the scorer runtime and the sinks are shared.
A camera that drops is reopened by the capture stage; its open tracks end with ``camera_lost``.

The model is the active version of the model store (field updates, ``appliance/updates/store.py``),
else the bundle named in the configuration. A new active version is loaded beside the running one
and handed to every camera between two frames; one that fails to load, or raises a scoring error in
its first ``model.health_window_s``, is rolled back automatically.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from appliance import __version__
from appliance.alarms.detector import HysteresisRule
from appliance.alarms.events import (
    ActiveModel,
    AnomalyEvent,
    ApplianceStatus,
    CameraStatus,
    ModelRef,
    ModelUpdate,
    ScoreTelemetry,
    SiteModelInfo,
    iso_utc,
)
from appliance.alarms.journal import AnomalyJournal
from appliance.capture.camera import Camera, CameraState, Frame, source_problem
from appliance.capture.frame_rate import RateGate, too_slow
from appliance.config import ApplianceConfig, CameraConfig, ConfigError, KeypointsPoseConfig
from appliance.errors import ApplianceError, ModelError
from appliance.models.bundle import Bundle, open_bundle
from appliance.models.fused import FusedScorer
from appliance.models.lstm_vae import MultiTrackScorer
from appliance.models.posture_motion import PostureMotionScorer
from appliance.models.runtimes import ScoringRuntime, WindowRuntime
from appliance.models.site import SiteModel, SiteModelError, SiteModelStore
from appliance.pose.base import PoseBackend
from appliance.pose.registry import create_backend
from appliance.publish.sinks import EventSink, open_sinks
from appliance.redact import redact
from appliance.service.pipeline import CameraPipeline, FrameResult
from appliance.service.systemd import Notifier
from appliance.tracking.tracker import Tracker
from appliance.updates.boot_guard import BootGuard
from appliance.updates.inbox import Inbox
from appliance.updates.signing import SignaturePolicy
from appliance.updates.store import FACTORY, ModelStore, UpdateRefused, compatibility_problems, policy_for
from calibration.store import load_thresholds, thresholds_path

CALIBRATION_POLL_S = 2.0  # how soon a recalibration reaches the running daemon
RESTART_BACKOFF_INITIAL_S = 1.0  # a crashed camera loop restarts after this, doubling
RESTART_BACKOFF_MAX_S = 60.0
RESTARTS_BEFORE_FAILED = 5  # crashes in a row before the camera is reported ``failed`` (still retried)
STABLE_AFTER_S = 60.0  # a loop that ran this long before crashing starts the count afresh
STALLED_AFTER_S = 10.0  # the status calls a camera loop that has not turned for this long ``stalled``

log = logging.getLogger("appliance")

REPLAY_SOURCE = "replay"


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


class ScoringFailure(ApplianceError):
    """The scoring stage raised, or gave a non-finite score (a model fault, not a camera one)."""


@dataclass
class LoadedModel:
    """A verified, smoke-tested bundle with its runtime open, ready to hand to the cameras."""

    bundle: Bundle
    runtime: ScoringRuntime | WindowRuntime
    variant: str
    version_id: str  # installed version id, or FACTORY (the configured bundle)

    @property
    def ref(self) -> ModelRef:
        m = self.bundle.manifest["model"]
        return ModelRef(name=str(m["name"]), version=str(m["version"]))

    @property
    def score_scale(self) -> str | None:
        return self.bundle.manifest["score"].get("scale")

    def scorer(self) -> MultiTrackScorer | PostureMotionScorer | FusedScorer:
        return self.bundle.kind.scorer(self.bundle, self.runtime)


@dataclass
class CameraModel:
    """What one camera scores with: the loaded bundle, or its own site model on top of it."""

    scorer: MultiTrackScorer | PostureMotionScorer | FusedScorer | Any
    ref: ModelRef
    site: SiteModel | None = None
    problem: str | None = None  # why the camera's site model is not used (then it is uncalibrated)
    fps: float | None = None  # the time base it is scored at (None: the bundle does not record one)

    @property
    def key(self) -> tuple:
        """Equal for two selections that score alike (no model swap needed between them)."""
        return (self.ref, self.site.id if self.site else None, self.problem)


class ReplayFrames:
    """Frame clock for the ``keypoints`` backend: one empty frame per replayed keypoint frame.

    The replayed skeletons carry the pixels' meaning; the frames only pace the pipeline (at the
    file's fps when ``realtime``) and give it timestamps, like a camera would.
    """

    def __init__(
        self, camera_id: str, frames: int, fps: float, realtime: bool, loop: bool = False, on_loop=None
    ) -> None:
        self.camera_id, self.total, self.fps, self.realtime = camera_id, frames, fps, realtime
        self.loop, self._on_loop = loop, on_loop  # ``loop``: start over at the end (``on_loop`` rewinds)
        self.loops = 0
        self._next = 0
        self._t0 = 0.0
        self.state = CameraState.STARTING

    def start(self) -> ReplayFrames:
        self._t0 = time.monotonic()
        self.state = CameraState.STREAMING
        return self

    def read(self, timeout: float | None = 1.0) -> Frame | None:
        if self.loop and self.total and self._next >= self.total and self.state != CameraState.STOPPED:
            self._next, self._t0 = 0, time.monotonic()  # source time starts over, as a looped file's
            self.loops += 1
            if self._on_loop is not None:
                self._on_loop()
        if self._next >= self.total or self.state == CameraState.STOPPED:
            self.state = CameraState.ENDED if self.state != CameraState.STOPPED else self.state
            return None
        if self.realtime:
            due = self._t0 + self._next / self.fps
            time.sleep(max(0.0, due - time.monotonic()))
        frame = Frame(
            np.zeros((1, 1, 3), np.uint8), self._next, self.camera_id, time.time(), time.monotonic(),
            source_frame=self._next, source_ms=1000.0 * self._next / self.fps,
        )  # fmt: skip
        self._next += 1
        return frame

    def stop(self, timeout: float = 5.0) -> None:
        self.state = CameraState.STOPPED

    def stats(self) -> dict[str, Any]:
        return {"camera_id": self.camera_id, "state": self.state.value, "frames_read": self._next}


@dataclass
class CameraStats:
    """Rolling figures of one camera's processing thread."""

    frames: int = 0
    people: int = 0
    windows: int = 0
    events: int = 0
    first_score_at: float | None = None
    pose_ms: deque = field(default_factory=lambda: deque(maxlen=2000))
    pipeline_ms: deque = field(default_factory=lambda: deque(maxlen=2000))
    publish_ms: deque = field(default_factory=lambda: deque(maxlen=2000))
    frame_times: deque = field(default_factory=lambda: deque(maxlen=300))
    interval_peaks: dict[int, float] = field(default_factory=dict)  # for score telemetry

    def fps(self) -> float:
        if len(self.frame_times) < 2:
            return 0.0
        span = self.frame_times[-1] - self.frame_times[0]
        return (len(self.frame_times) - 1) / span if span > 0 else 0.0


class CameraWorker:
    """One camera's thread: read the newest frame, run pose and the pipeline, hand events on."""

    def __init__(
        self,
        cfg: CameraConfig,
        source: Camera | ReplayFrames,
        backend: PoseBackend,
        pipeline: CameraPipeline,
        emit,
        image_size: tuple[int, int] | None = None,
    ) -> None:
        self.cfg, self.source, self.backend, self.pipeline, self._emit = cfg, source, backend, pipeline, emit
        self.image_size = image_size
        self.stats = CameraStats()
        self.on_result: Callable[[FrameResult], None] | None = None  # calibration collects scores here
        # a scoring failure is offered here first: True = handled (a rollback is coming), go on
        self.on_scoring_error: Callable[[CameraWorker, Exception], bool] | None = None
        # a model switch waiting for the next frame (scorer, map spec, model, threshold), and its version;
        # written by the main thread, taken by this one, both under the lock
        self.pending_model: tuple[MultiTrackScorer, Any, ModelRef, float] | None = None
        self.pending_version: str | None = None
        self._pending_lock = threading.Lock()
        self.scoring_errors = 0
        self.running_version: str | None = None  # the model version this camera's scorer runs
        self.heartbeat = time.monotonic()
        self.supervisor_state: str | None = None  # restarting / failed while the loop is brought back
        self.last_error: str | None = None  # the last unexpected error of the processing loop
        self.restarts = 0
        self.restart_at: float | None = None  # epoch s of the next restart attempt
        self.on_health_change: Callable[[], None] | None = None  # publishes the status now
        self.gate = RateGate(None)  # the model's time base: frames off its clock are dropped before pose
        self._stop = threading.Event()
        self._lost = False
        self.thread = threading.Thread(target=self._run, name=f"camera-{cfg.id}", daemon=True)

    @property
    def state(self) -> str:
        """The supervisor's state while it restarts the loop, else the source's capture state."""
        return self.supervisor_state or self.source.state.value

    @property
    def failed(self) -> bool:
        return self.supervisor_state == "failed"

    @property
    def threshold(self) -> float:
        """The threshold in force, or the one a model switch waiting for the next frame brings."""
        pending = self.pending_model
        return pending[3] if pending is not None else self.pipeline.rule.threshold

    def offer_model(self, version: str, model: tuple[MultiTrackScorer, Any, ModelRef, float]) -> None:
        """Queue a model for this camera's next frame (replacing one not yet taken)."""
        with self._pending_lock:
            self.pending_version, self.pending_model = version, model

    def retarget_pending(self, threshold: float) -> None:
        """A recalibration while a switch waits: the switch brings the new threshold."""
        with self._pending_lock:
            if self.pending_model is not None:
                self.pending_model = (*self.pending_model[:3], threshold)

    def _take_pending_model(self, when: float) -> None:
        with self._pending_lock:
            swap, version = self.pending_model, self.pending_version
        if swap is None:
            return
        self.running_version = version  # errors from here on are the new model's
        # the status keeps reporting the pending threshold until the switch is complete
        self.emit(self.pipeline.swap_model(*swap, when=when))
        with self._pending_lock:
            left = self.pending_model
            if left is not None and left[0] is swap[0]:  # not replaced by another model meanwhile
                self.pending_model = None
                if left[3] != swap[3]:  # recalibrated during the switch
                    self.pipeline.set_threshold(left[3])

    def emit(self, events: list[AnomalyEvent]) -> None:
        self.stats.events += len(events)
        self._emit(events)

    def _run(self) -> None:
        """Supervise the processing loop: an unexpected error restarts it with backoff, never ends it.

        The camera's open anomalies end (``camera_lost``: nobody is watching them while it restarts),
        tracks and pose state are reset, and the state says ``restarting`` with the reason; after
        ``RESTARTS_BEFORE_FAILED`` crashes in a row (each within ``STABLE_AFTER_S`` of its restart)
        it says ``failed`` and goes on retrying every ``RESTART_BACKOFF_MAX_S``. The heartbeat keeps
        turning while it waits, so the watchdog only fires for a loop that hangs.
        """
        crashes, backoff = 0, RESTART_BACKOFF_INITIAL_S
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                reason = self._loop()
            except Exception as exc:
                why = f"{type(exc).__name__}: {exc}"
                if why != self.last_error:
                    log.exception(
                        "camera %s: processing failed (%s); restarting the camera loop", self.cfg.id, why
                    )
                else:
                    log.error("camera %s: processing failed again (%s); restarting", self.cfg.id, why)
                crashes = 1 if time.monotonic() - started > STABLE_AFTER_S else crashes + 1
                if crashes == 1:
                    backoff = RESTART_BACKOFF_INITIAL_S
                self.restarts += 1
                self.last_error = why
                self.supervisor_state = "failed" if crashes >= RESTARTS_BEFORE_FAILED else "restarting"
                self.restart_at = time.time() + backoff
                self._end_all_safely("camera_lost")
                self._reset_after_crash()
                self._health_changed()
                self._wait_turning(backoff)
                backoff = min(backoff * 2, RESTART_BACKOFF_MAX_S)
                continue
            self._end_all_safely(reason)
            return
        self._end_all_safely("shutdown")

    def _loop(self) -> str:
        """Read the newest frame, process it, until the stream ends or the camera is stopped."""
        while not self._stop.is_set():
            self.heartbeat = time.monotonic()  # the watchdog checks the loop turns, not just the process
            frame = self.source.read(timeout=0.5)
            if frame is None:
                state = self.source.state
                if state in (CameraState.ENDED, CameraState.FAILED, CameraState.STOPPED):
                    if self._stop.is_set():
                        return "shutdown"
                    return "stream_ended" if state == CameraState.ENDED else "camera_lost"
                if state == CameraState.RECONNECTING and not self._lost:
                    self._lost = True
                    if self.stats.frames:  # (one never up since start was logged by the capture stage)
                        log.warning("camera %s: source lost, reconnecting", self.cfg.id)
                    self.emit(self.pipeline.end_all(time.time(), "camera_lost"))
                    self.backend.reset()
                continue
            self._lost = False
            if not self.gate.keep(
                frame.source_ms / 1000.0 if frame.source_ms is not None else frame.mono_time
            ):
                skip = getattr(self.backend, "skip", None)  # a keypoint replay moves on without pose
                if skip is not None:
                    skip()
                continue
            try:
                self.process(frame)
            except ScoringFailure as exc:
                if self.on_scoring_error is None or not self.on_scoring_error(self, exc):
                    raise
                self.scoring_errors += 1
                continue
            if self.supervisor_state is not None:  # back after a restart
                log.info("camera %s: processing again after %d restart(s)", self.cfg.id, self.restarts)
                self.supervisor_state, self.restart_at = None, None
                self._health_changed()
        return "shutdown"

    def _end_all_safely(self, reason: str) -> None:
        try:
            self.emit(self.pipeline.end_all(time.time(), reason))
        except Exception as exc:  # the pipeline's state may be what broke: say so, go on
            log.error("camera %s: could not end open anomalies (%s): %s", self.cfg.id, reason, exc)

    def _reset_after_crash(self) -> None:
        for reset in (self.backend.reset, self.pipeline.scorer.clear):
            try:
                reset()
            except Exception as exc:
                log.error("camera %s: reset after a crash failed: %s", self.cfg.id, exc)
        self.pipeline.detectors.clear()

    def _wait_turning(self, seconds: float) -> None:
        """Wait (stop-aware) while keeping the heartbeat fresh: a restarting loop is not a hung one."""
        deadline = time.monotonic() + seconds
        while not self._stop.is_set() and (left := deadline - time.monotonic()) > 0:
            self.heartbeat = time.monotonic()
            self._stop.wait(min(0.5, left))

    def _health_changed(self) -> None:
        if self.on_health_change is not None:
            try:
                self.on_health_change()
            except Exception as exc:
                log.error("camera %s: status update failed: %s", self.cfg.id, exc)

    def process(self, frame: Frame) -> None:
        self._take_pending_model(frame.wall_time)  # a new model takes over between two frames
        t0 = time.perf_counter()
        people = self.backend.infer(frame.image)
        t1 = time.perf_counter()
        h, w = frame.image.shape[:2]
        size = self.image_size or (w, h)
        try:
            result = self.pipeline.process(people, size, frame.wall_time, frame.index)
        except Exception as exc:
            raise ScoringFailure(f"scoring failed on frame {frame.index}: {exc}") from exc
        if self.on_result is not None:
            self.on_result(result)
        t2 = time.perf_counter()
        self.emit(result.events)
        t3 = time.perf_counter()
        bad = [tid for tid, v in result.scores.items() if not math.isfinite(v)]
        if bad:
            raise ScoringFailure(f"non-finite score for track(s) {bad} on frame {frame.index}")
        s = self.stats
        s.frames += 1
        s.people += result.people
        s.windows += len(result.scores)
        for tid, score in result.scores.items():
            if score > s.interval_peaks.get(tid, float("-inf")):
                s.interval_peaks[tid] = score
        if result.scores and s.first_score_at is None:
            s.first_score_at = time.monotonic()
        s.pose_ms.append((t1 - t0) * 1e3)
        s.pipeline_ms.append((t2 - t1) * 1e3)
        s.publish_ms.append((t3 - t2) * 1e3)
        s.frame_times.append(time.monotonic())

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.source.stop()


class Appliance:
    """Everything configured, started in order, stopped in reverse."""

    def __init__(
        self,
        cfg: ApplianceConfig,
        scorer_override: Callable[[LoadedModel], Any] | None = None,
        purpose: str = "run",
    ) -> None:
        self.cfg = cfg
        self.purpose = purpose  # run, calibrate or learn: what the start-up log says the cameras do
        # learning replaces every camera's scorer with a recorder (calibration.learn)
        self.scorer_override = scorer_override
        self.sites = SiteModelStore(cfg.state_dir)
        self.camera_models: dict[str, CameraModel] = {}
        self._site_stamp: tuple = ()
        self.bundle: Bundle | None = None
        self.sinks: list[EventSink] = []
        self.workers: list[CameraWorker] = []
        self.started_at = time.monotonic()
        self._emit_lock = threading.Lock()
        self.events_emitted = 0
        self.store = ModelStore(cfg.state_dir)
        self.loaded: LoadedModel | None = None
        self.last_update: dict[str, Any] | None = None
        self._health: tuple[str, float] | None = None  # (version, monotonic deadline) after a switch
        self._health_failure: tuple[str, str, bool] | None = None  # (version that failed, why, on probation)
        self._updates_stamp: int | None = None
        self.inbox: Inbox | None = None
        self.journal = AnomalyJournal(cfg.state_dir / "open-anomalies.json")
        self.boot = BootGuard(
            cfg.state_dir, cfg.model.failed_starts_before_bad, cfg.model.failed_starts_window_s
        )

    # -- start-up ---------------------------------------------------------------------------------
    def start(self) -> None:
        cfg = self.cfg
        self.started_at = time.monotonic()
        for i, cam in enumerate(cfg.cameras):  # a source that can never work is a configuration mistake
            if not isinstance(cfg.pose, KeypointsPoseConfig) and (why := source_problem(cam.source)):
                raise ConfigError(f"cameras[{i}].source ({cam.id}): {redact(str(cam.source))}: {why}")
        if cfg.model.allow_unsigned:
            log.warning("model.allow_unsigned is set: unsigned model bundles are accepted (development only)")
        self._mark_crash_looping_version_bad()
        loaded = self._load_initial_model()
        self._use(loaded)
        if loaded.version_id != FACTORY:
            self.boot.starting(loaded.version_id)
        log.info(
            "model %s (%s, %s on %s), smoke test passed",
            loaded.bundle.name, loaded.version_id, loaded.variant, loaded.runtime.name,
        )  # fmt: skip
        model = self.model
        path = thresholds_path(cfg.state_dir)
        self._calibration_stamp = path.stat().st_mtime_ns if path.exists() else None
        self.calibrations = load_thresholds(cfg.state_dir, model.name, model.version, self.score_scale)
        self._site_stamp = self.sites.stamp()
        self.camera_models = {cam.id: self._camera_model(cam.id, loaded) for cam in cfg.cameras}
        self._refresh_last_update()
        if cfg.model.watch_inbox:
            self.inbox = Inbox(cfg.state_dir / "inbox", self._install_from_inbox)
        thresholds = {cam.id: self.threshold_for(cam) for cam in cfg.cameras}
        self.sinks = open_sinks(
            cfg.sinks,
            cfg.appliance_id,
            cfg.state_dir,
            self.status,
            thresholds,
            model.version,
            self.telemetry,
            self.command,
        )
        self.emit(self.journal.restart_ends(time.time()))  # anomalies a hard kill left open
        try:
            for cam in cfg.cameras:
                backend = self._backend()
                chosen = self.camera_models[cam.id]
                threshold = self.threshold_for(cam)
                pipeline = CameraPipeline(
                    appliance_id=cfg.appliance_id,
                    camera_id=cam.id,
                    scorer=chosen.scorer,
                    map_spec=loaded.bundle.contract.map_spec,
                    model=chosen.ref,
                    rule=HysteresisRule(
                        threshold,
                        cfg.detector.start_windows,
                        cfg.detector.end_windows,
                        cfg.detector.update_interval_s,
                    ),
                    tracker=Tracker(
                        cfg.tracking.min_iou, cfg.tracking.max_missed_frames, cfg.tracking.min_hits
                    ),
                    whole_frame=cam.whole_frame,
                )
                self._check_rate(cam, backend, chosen)
                source, size = self._source(cam, backend)
                worker = CameraWorker(cam, source, backend, pipeline, self.emit, size)
                worker.gate = RateGate(chosen.fps)
                worker.on_scoring_error = self._on_scoring_error
                worker.on_health_change = self.status_changed
                worker.running_version = loaded.version_id
                self.workers.append(worker)
                if chosen.site is not None:
                    log.info(
                        "camera %s: %s, site model %s (learned %s), threshold %.2f", cam.id,
                        redact(str(cam.source)), chosen.site.id, chosen.site.provenance.get("learned_at"),
                        threshold,
                    )  # fmt: skip
                elif self.scorer_override is not None:
                    log.info(
                        "camera %s: %s, recording skeletons to learn from", cam.id, redact(str(cam.source))
                    )
                elif math.isfinite(threshold):
                    log.info("camera %s: %s, threshold %.2f", cam.id, redact(str(cam.source)), threshold)
                else:
                    log.warning(
                        "camera %s: %s, uncalibrated for model %s: scoring, but no events until "
                        "`appliance calibrate` (or detector.when_uncalibrated: bundle_default)",
                        cam.id, redact(str(cam.source)), self.bundle.name,
                    )  # fmt: skip
        except BaseException:
            for w in self.workers:
                w.source.stop()
            self.close_sinks()
            raise
        for w in self.workers:
            w.start()
        self.status_changed()

    # -- models -----------------------------------------------------------------------------------
    def _load_version(self, version_id: str) -> LoadedModel:
        cfg = self.cfg
        if version_id == FACTORY:
            # the configured bundle is trusted like the configuration itself; a signature it carries
            # is still checked, so a tampered factory bundle is refused
            policy = SignaturePolicy(cfg.model.trusted_keys, allow_unsigned=True)
            bundle = open_bundle(cfg.model.bundle, signatures=policy)
        else:
            bundle = self.store.open_version(version_id, policy_for(cfg))
            if problems := compatibility_problems(bundle, cfg):
                raise UpdateRefused(f"version {version_id}: " + "; ".join(problems))
        runtime, variant = bundle.open(cfg.model.runtime, cfg.model.variant, cfg.model.threads)
        return LoadedModel(bundle, runtime, variant, version_id)

    def _load_initial_model(self) -> LoadedModel:
        """The active installed version; if it cannot load, roll back until one does (else the factory)."""
        state = self.store.state()
        while state.active is not None:
            try:
                loaded = self._load_version(state.active)
            except ModelError as exc:
                self._auto_rollback(state.active, f"failed to load at start: {exc}")
                if self.store.state().active == state.active:
                    break  # could not roll back: run the configured bundle
                state = self.store.state()
                continue
            if state.switched_at and self.cfg.model.health_window_s > 0:
                age = time.time() - _epoch(state.switched_at)
                if age < self.cfg.model.health_window_s:  # restarted soon after a switch: still on probation
                    self._health = (state.active, time.monotonic() + self.cfg.model.health_window_s - age)
            return loaded
        return self._load_version(FACTORY)

    def _use(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self.bundle = loaded.bundle
        self.variant = loaded.variant
        self.model = loaded.ref
        self.score_scale = loaded.score_scale
        self.runtime_name = f"{loaded.runtime.name} {loaded.variant}"

    def _camera_model(self, camera_id: str, loaded: LoadedModel) -> CameraModel:
        """The bundle, or the camera's active site model on top of it when it fits the bundle."""
        fps = loaded.bundle.contract.fps
        if self.scorer_override is not None:
            return CameraModel(self.scorer_override(loaded), loaded.ref, fps=fps)
        try:
            site = self.sites.active(camera_id)
            if site is None:
                return CameraModel(loaded.scorer(), loaded.ref, fps=fps)
            if (why := site.problem_with(loaded.bundle)) is not None:
                return CameraModel(loaded.scorer(), loaded.ref, problem=why, fps=fps)
            scorer = site.scorer(loaded.bundle, loaded.runtime)
        except SiteModelError as exc:
            log.error("camera %s: %s; running the bundle, uncalibrated", camera_id, exc)
            return CameraModel(loaded.scorer(), loaded.ref, problem=str(exc), fps=fps)
        ref = ModelRef(name=loaded.ref.name, version=site.version_label(loaded.ref.version))
        return CameraModel(scorer, ref, site, fps=site.fps or fps)

    def _check_rate(self, cam: CameraConfig, backend: PoseBackend, chosen: CameraModel) -> None:
        """A source that declares a lower rate than the model's time base cannot feed it: refused."""
        if chosen.fps is None:
            return
        declared = getattr(backend, "fps", None) if isinstance(self.cfg.pose, KeypointsPoseConfig) else None
        if declared is None and isinstance(cam.source, str) and Path(cam.source).is_file():
            from appliance.pose.extract import video_fps

            declared = video_fps(cam.source)
        if cam.fps is not None and (declared is None or cam.fps < declared):
            declared = cam.fps  # the configured cap
        if too_slow(declared, chosen.fps):
            i = next(i for i, c in enumerate(self.cfg.cameras) if c.id == cam.id)
            what = f"site model {chosen.site.id}" if chosen.site else f"model {self.bundle.name}"
            raise ConfigError(
                f"cameras[{i}] ({cam.id}): the source gives {declared:g} frames per second, but {what} was "
                f"learned at {chosen.fps:g} fps and a window of its frames would last longer than it "
                f"learned: use a camera stream of at least {chosen.fps:g} fps (cameras[{i}].fps)"
            )

    def poll_site_models(self) -> bool:
        """A site model learned, rolled back or recalibrated while running: applied between frames."""
        stamp = self.sites.stamp()
        if stamp == self._site_stamp or self.loaded is None:
            return False
        self._site_stamp = stamp
        for w in self.workers:
            old = self.camera_models.get(w.cfg.id)
            chosen = self._camera_model(w.cfg.id, self.loaded)
            self.camera_models[w.cfg.id] = chosen
            threshold, source = self.threshold_and_source(w.cfg)
            if old is not None and old.key == chosen.key:
                if threshold != w.threshold:
                    w.retarget_pending(threshold)
                    w.pipeline.set_threshold(threshold)
                    log.info("camera %s: threshold now %.2f (%s)", w.cfg.id, threshold, source)
                continue
            w.offer_model(
                self.loaded.version_id,
                (chosen.scorer, self.loaded.bundle.contract.map_spec, chosen.ref, threshold),
            )
            w.gate = RateGate(chosen.fps)
            what = f"site model {chosen.site.id}" if chosen.site else f"bundle {self.loaded.bundle.name}"
            log.info("camera %s: now scoring with %s (threshold %s, %s)", w.cfg.id, what, threshold, source)
        self.status_changed()
        return True

    def _mark_bad(self, version_id: str, why: str) -> None:
        log.error("model version %s marked bad: %s", version_id, why)
        try:
            self.store.mark_bad(version_id, why)
        except Exception as exc:  # the rollback that follows matters more than the mark
            log.error("could not mark model version %s bad: %s", version_id, exc)

    def _mark_crash_looping_version_bad(self) -> None:
        """Boot counter: the active version's last starts all died before becoming healthy."""
        active = self.store.state().active
        if active is None or not self.boot.should_mark_bad(active):
            return
        m = self.cfg.model
        why = (
            f"{self.boot.failed_starts(active)} starts in a row did not become healthy "
            f"(running {m.healthy_after_s:g} s) within {m.failed_starts_window_s / 60:g} min"
        )
        self._mark_bad(active, why)
        self._auto_rollback(active, why)

    def _auto_rollback(self, version_id: str, why: str) -> None:
        log.error("model version %s: %s; rolling back", version_id, why)
        try:
            self.store.rollback(self.cfg, reason="auto_rollback", message=f"{version_id} {why}")
        except UpdateRefused as exc:
            log.error("automatic rollback impossible: %s", exc)
        self._refresh_last_update()

    def _on_scoring_error(self, worker: CameraWorker, exc: Exception) -> bool:
        """Called from a camera thread: a scoring failure of an installed version rolls it back, at any
        time (within its probation it is also marked bad). The factory model has nothing to fall back
        to: the camera's supervisor restarts its loop and the status says why."""
        running = worker.running_version
        if self.loaded is not None and running != self.loaded.version_id:
            return True  # this camera still runs a model being replaced: skip the frame
        if running is None or running == FACTORY:
            return False
        if self._health_failure is None:
            health = self._health
            on_probation = health is not None and running == health[0] and time.monotonic() <= health[1]
            self._health_failure = (running, f"scoring error on camera {worker.cfg.id} ({exc})", on_probation)
        return True

    def switch_model(self, target: str) -> bool:
        """Load ``target`` beside the running model and hand it to every camera between frames."""
        current = self.loaded.version_id if self.loaded else None
        try:
            new = self._load_version(target)
        except ModelError as exc:
            self.store.record("load", "failed", version=target, message=str(exc))
            if (self.store.state().active or FACTORY) == target:
                self._auto_rollback(target, f"failed to load: {exc}")
            self.status_changed()
            return False
        self._use(new)
        self.calibrations = load_thresholds(
            self.cfg.state_dir, self.model.name, self.model.version, self.score_scale
        )
        for w in self.workers:
            chosen = self.camera_models[w.cfg.id] = self._camera_model(w.cfg.id, new)
            threshold, source = self.threshold_and_source(w.cfg)
            w.offer_model(target, (chosen.scorer, new.bundle.contract.map_spec, chosen.ref, threshold))
            w.gate = RateGate(chosen.fps)
            if chosen.problem is not None:
                log.warning("camera %s: %s; uncalibrated until `appliance learn`", w.cfg.id, chosen.problem)
            elif source == "uncalibrated":
                log.warning(
                    "camera %s: model %s has another score scale: uncalibrated until recalibrated",
                    w.cfg.id, new.bundle.name,
                )  # fmt: skip
        health_s = self.cfg.model.health_window_s
        on_probation = target != FACTORY and health_s > 0 and self.store.state().reason == "install"
        self._health = (target, time.monotonic() + health_s) if on_probation else None  # not after a rollback
        self._health_failure = None
        self.store.record("load", "ok", version=target, bundle=new.bundle, message=f"was {current}")
        self._refresh_last_update()
        for sink in self.sinks:
            set_version = getattr(sink, "set_model_version", None)
            if set_version is not None:
                set_version(self.model.version)
        self.status_changed()
        return True

    def poll_model_store(self) -> None:
        """Between frames, from the main loop: health rollbacks, a new active version, the update log."""
        if (failure := self._health_failure) is not None and self.loaded is not None:
            self._health_failure = None
            version, why, on_probation = failure
            if version == self.loaded.version_id:  # (not one already replaced)
                if on_probation:
                    self._mark_bad(
                        version, f"{why} within its {self.cfg.model.health_window_s:g} s probation"
                    )
                self._auto_rollback(version, why)
        target = self.store.state().active or FACTORY
        if self.loaded is not None and target != self.loaded.version_id:
            self.switch_model(target)
        if self._refresh_last_update():
            self.status_changed()
        if self.inbox is not None:
            self.inbox.poll()

    def _refresh_last_update(self) -> bool:
        path = self.store.log_path
        stamp = path.stat().st_mtime_ns if path.exists() else None
        if stamp == self._updates_stamp:
            return False
        self._updates_stamp = stamp
        last = self.store.updates(1)
        self.last_update = last[-1] if last else None
        return True

    def _install_from_inbox(self, path) -> str:
        result = self.store.install(path, self.cfg)
        signer = f", signed by {result.signer}" if result.signer else ", unsigned"
        return f"installed as {result.version_id}: {result.bundle_name}{signer}"

    def _backend(self) -> PoseBackend:
        try:
            return create_backend(self.cfg.pose)
        except ModelError:
            raise
        except ApplianceError as exc:
            raise ModelError(f"pose backend {self.cfg.pose.type}: {exc}") from None

    def _source(self, cam: CameraConfig, backend: PoseBackend) -> tuple[Camera | ReplayFrames, tuple | None]:
        if isinstance(self.cfg.pose, KeypointsPoseConfig):
            replay = backend  # a KeypointReplay
            frames = ReplayFrames(
                cam.id, len(replay), replay.fps, bool(cam.realtime), bool(cam.loop), replay.reset
            )
            return frames.start(), (replay.width, replay.height)
        camera = Camera(
            cam.source,
            cam.id,
            fps=cam.fps,
            stall_timeout_s=cam.stall_timeout_s,
            loop=cam.loop,
            realtime=bool(cam.realtime),
            require_open_at_start=False,  # a camera that boots after the box is retried, not fatal
            on_state_change=lambda *_: self.status_changed(),
        )
        return camera.start(), None

    def telemetry(self, interval_s: float) -> list[dict[str, Any]]:
        """One :class:`ScoreTelemetry` per camera for the interval that ends now (and start a new one)."""
        now = time.time()
        out = []
        for w in self.workers:
            peaks, w.stats.interval_peaks = w.stats.interval_peaks, {}
            out.append(
                ScoreTelemetry(
                    appliance_id=self.cfg.appliance_id,
                    camera_id=w.cfg.id,
                    time=iso_utc(now),
                    time_ms=round(now * 1000),
                    interval_s=interval_s,
                    threshold=_finite(w.threshold),
                    tracks={str(t): round(v, 3) for t, v in peaks.items()},
                    max_score=round(max(peaks.values()), 3) if peaks else None,
                ).model_dump()
            )
        return out

    def status_changed(self) -> None:
        """A camera changed state (or the appliance started): publish status now, not at the next tick."""
        for sink in self.sinks:
            notify = getattr(sink, "publish_status", None)
            if notify is not None:
                notify()
            camera_state = getattr(sink, "camera_state", None)  # Sparkplug: Camera/State metric
            if camera_state is not None:
                for w in self.workers:
                    camera_state(w.cfg.id, w.state)

    def threshold_for(self, cam: CameraConfig) -> float:
        return self.threshold_and_source(cam)[0]

    def threshold_and_source(self, cam: CameraConfig) -> tuple[float, str]:
        if cam.threshold is not None:
            return cam.threshold, "camera"
        if self.cfg.detector.threshold is not None:
            return self.cfg.detector.threshold, "detector"
        chosen = self.camera_models.get(cam.id)
        if chosen is not None and chosen.site is not None:
            return chosen.site.threshold_value, "site_model"
        if chosen is not None and chosen.problem is not None:
            return math.inf, "uncalibrated"  # the bundle's scale is not the site model's: learn again
        if cam.id in self.calibrations:
            return self.calibrations[cam.id].threshold, "calibration"
        assert self.bundle is not None
        if self.cfg.detector.when_uncalibrated == "bundle_default":
            return self.bundle.default_threshold, "bundle"
        return math.inf, "uncalibrated"  # scored, never above: no events until calibrated

    # -- running ----------------------------------------------------------------------------------
    def emit(self, events: list[AnomalyEvent]) -> None:
        if not events:
            return
        with self._emit_lock:
            self.journal.record(events)  # before the sinks: a hard kill from here on still ends them
            for event in events:
                self.events_emitted += 1
                log.info(
                    "%s anomaly %s on camera %s track %d (score %.1f, threshold %.1f)",
                    event.type, event.event_id, event.camera_id, event.track_id, event.score, event.threshold,
                    extra={"CAMERA": event.camera_id, "TRACK": event.track_id, "EVENT_ID": event.event_id},
                )  # fmt: skip
                for sink in self.sinks:
                    try:
                        sink.publish(event)
                    except Exception as exc:  # one failing sink must not stop the others or the camera
                        log.error("sink %s failed on event %s: %s", type(sink).__name__, event.event_id, exc)

    def wait(
        self,
        stop: threading.Event,
        status_interval_s: float = 30.0,
        notifier: Notifier | None = None,
        reload: Callable[[], None] | None = None,
        reload_requested: threading.Event | None = None,
    ) -> None:
        """Block until every camera's stream ended or ``stop`` is set: status lines, watchdog pings
        (only while every camera's processing loop keeps turning), reloads on request."""
        next_status = time.monotonic() + status_interval_s
        next_check = time.monotonic() + CALIBRATION_POLL_S
        ping_every = notifier.watchdog_interval_s if notifier is not None else None
        next_ping = time.monotonic()
        stalled_logged = False
        healthy_at = self.started_at + self.cfg.model.healthy_after_s
        while any(w.thread.is_alive() for w in self.workers):
            if stop.wait(0.2):
                break
            now = time.monotonic()
            if self.boot.version is not None and now >= healthy_at:
                self.boot.healthy()
            if reload_requested is not None and reload_requested.is_set() and reload is not None:
                reload_requested.clear()
                reload()
            if ping_every is not None and now >= next_ping:
                next_ping = now + ping_every
                stalled = self.stalled_cameras(max_age_s=max(2.0, 2 * ping_every))
                if not stalled:
                    notifier.watchdog()
                    stalled_logged = False
                elif not stalled_logged:
                    log.error("pipeline stalled on camera(s) %s: watchdog pings withheld", ", ".join(stalled))
                    stalled_logged = True
                    self.status_changed()
            if now >= next_status:
                log.info("status %s", self.status_line())
                if notifier is not None:
                    notifier.status(self.status_line())
                next_status += status_interval_s
            if time.monotonic() >= next_check or self._health_failure is not None:
                next_check = time.monotonic() + CALIBRATION_POLL_S
                self.reload_calibration_if_changed()
                self.poll_site_models()
                self.poll_model_store()
        self.boot.healthy()  # a clean stop is not a crash

    def command(self, name: str, request: dict[str, Any]) -> dict[str, Any]:
        """An operator command (MQTT ``cmd/<name>`` when enabled); returns the answer to publish."""
        if name == "status":
            self.status_changed()
            return {"ok": True}
        if name == "reload":
            changed = self.reload_calibration_if_changed()
            return {"ok": True, "thresholds_changed": self.poll_site_models() or changed}
        if name == "recalibrate":
            camera = request.get("camera") or (self.workers[0].cfg.id if len(self.workers) == 1 else None)
            if camera is None:
                return {"ok": False, "error": 'name the camera: {"camera": "<id>", "minutes": 3}'}
            summary = self.recalibrate(
                str(camera), float(request.get("minutes", 3.0)),
                float(request.get("target_alarms_per_hour", 0.125)), bool(request.get("accept_drift", False)),
            )  # fmt: skip
            keys = ("camera", "threshold", "method", "windows", "footage_minutes", "warnings")
            return {"ok": True, **{k: summary[k] for k in keys if k in summary}}
        if name == "learn":
            from calibration.learn import learn_live

            camera = request.get("camera") or (self.workers[0].cfg.id if len(self.workers) == 1 else None)
            if camera is None:
                return {"ok": False, "error": 'name the camera: {"camera": "<id>", "minutes": 10}'}
            summary = learn_live(
                self, str(camera), float(request.get("minutes", 10.0)),
                float(request.get("target_alarms_per_hour", 2.0)),
            )  # fmt: skip
            keys = ("camera", "site_model", "threshold", "method", "footage_minutes", "tracks", "warnings")
            return {"ok": True, **{k: summary[k] for k in keys if k in summary}}
        known = ", ".join(sorted(("learn", "recalibrate", "reload", "status")))
        return {"ok": False, "error": f"unknown command {name!r}; known: {known}"}

    def recalibrate(self, camera_id: str, minutes: float, target: float, accept_drift: bool = False) -> dict:
        """Calibrate one camera from the running pipeline (no second capture, no restart); blocks."""
        from calibration.run import (
            CalibrationAborted,
            ScoreCollector,
            check_minutes,
            fit_and_save,
            scoring_model,
            watch_live,
        )

        check_minutes(minutes, target)  # a target the minutes cannot support: refused at once
        worker = next((w for w in self.workers if w.cfg.id == camera_id), None)
        if worker is None:
            raise CalibrationAborted(
                f"no camera {camera_id!r}; cameras: {', '.join(w.cfg.id for w in self.workers)}"
            )
        if worker.on_result is not None:
            raise CalibrationAborted(f"camera {camera_id} is already being calibrated")
        collected = ScoreCollector()
        worker.on_result = collected
        log.info("camera %s: recalibrating from %.1f min of live footage", camera_id, minutes)
        try:
            frames, elapsed = watch_live(worker, minutes, "calibration")
        finally:
            worker.on_result = None
        if collected.people == 0:
            raise CalibrationAborted(f"no person was seen on camera {camera_id} in {elapsed / 60:.1f} min")
        info = collected.info(elapsed / 60, frames, frames / elapsed if elapsed > 0 else 30.0)
        info["source"] = f"live camera {camera_id} (recalibrate command)"
        info["model"] = scoring_model(self, camera_id)
        summary = fit_and_save(
            self.cfg, camera_id, collected.sequences(), info, minutes, target, accept_drift
        )
        self.reload_calibration_if_changed()
        self.poll_site_models()
        return summary

    def reload_calibration_if_changed(self) -> bool:
        """Apply a thresholds file written by ``appliance calibrate`` while the service runs.

        Thresholds change between frames; cameras, tracks and the MQTT session are untouched.
        """
        path = thresholds_path(self.cfg.state_dir)
        stamp = path.stat().st_mtime_ns if path.exists() else None
        if stamp == self._calibration_stamp:
            return False
        self._calibration_stamp = stamp
        self.calibrations = load_thresholds(
            self.cfg.state_dir, self.model.name, self.model.version, self.score_scale
        )
        for w in self.workers:
            threshold, source = self.threshold_and_source(w.cfg)
            w.retarget_pending(threshold)
            if threshold != w.pipeline.rule.threshold:
                w.pipeline.set_threshold(threshold)
                log.info("camera %s: threshold now %.2f (%s)", w.cfg.id, threshold, source)
        self.status_changed()
        return True

    def stalled_cameras(self, max_age_s: float) -> list[str]:
        """Cameras whose processing loop has not turned for ``max_age_s`` (a hung pose or scorer call)."""
        now = time.monotonic()
        return [w.cfg.id for w in self.workers if w.thread.is_alive() and now - w.heartbeat > max_age_s]

    def reload(self, new: ApplianceConfig) -> None:
        """SIGHUP: apply thresholds and hysteresis from a re-read config and the calibration file,
        between frames, keeping cameras, tracks and the MQTT session; say what needs a restart."""
        old = self.cfg
        restart = [
            key
            for key in ("appliance_id", "state_dir", "model", "pose", "tracking", "sinks")
            if getattr(new, key) != getattr(old, key)
        ]
        old_cams = {c.id: c.model_copy(update={"threshold": None}) for c in old.cameras}
        new_cams = {c.id: c.model_copy(update={"threshold": None}) for c in new.cameras}
        if old_cams != new_cams:
            restart.append("cameras (other than their thresholds)")
        thresholds = {c.id: c.threshold for c in new.cameras}
        cameras = [c.model_copy(update={"threshold": thresholds.get(c.id)}) for c in old.cameras]
        self.cfg = old.model_copy(update={"detector": new.detector, "cameras": cameras})
        for w in self.workers:
            w.cfg = next(c for c in cameras if c.id == w.cfg.id)
            d = self.cfg.detector
            w.pipeline.rule = HysteresisRule(
                w.pipeline.rule.threshold, d.start_windows, d.end_windows, d.update_interval_s
            )
        self._calibration_stamp = -1  # force: re-read the calibration file and apply every threshold
        self.reload_calibration_if_changed()
        if restart:
            log.warning("reloaded thresholds; changes to %s take effect after a restart", ", ".join(restart))
        else:
            log.info("reloaded thresholds and detector settings")

    def camera_state(self, worker: CameraWorker, stalled: list[str] | None = None) -> str:
        """What the camera is doing now; ``stalled`` when its loop has hung in one call."""
        if stalled is None:
            stalled = self.stalled_cameras(STALLED_AFTER_S)
        return "stalled" if worker.cfg.id in stalled else worker.state

    def status_line(self) -> str:
        parts = []
        stalled = self.stalled_cameras(STALLED_AFTER_S)
        for w in self.workers:
            state = self.camera_state(w, stalled)
            if state in ("restarting", "failed", "stalled"):
                parts.append(
                    f"{w.cfg.id}: {state} ({w.last_error or 'no progress'}), {w.stats.events} events"
                )
                continue
            fps = f" {w.stats.fps():.1f} fps" if state == "streaming" else ""
            parts.append(
                f"{w.cfg.id}: {state}{fps}, {w.stats.frames} frames, "
                f"{w.stats.windows} windows, {w.stats.events} events"
            )
        return "; ".join(parts)

    def status(self) -> dict[str, Any]:
        """The retained status payload (:class:`ApplianceStatus`), as a dict."""
        cameras = {}
        stalled = self.stalled_cameras(STALLED_AFTER_S)
        for w in self.workers:
            _, source = self.threshold_and_source(w.cfg)
            chosen = self.camera_models.get(w.cfg.id)
            state = self.camera_state(w, stalled)
            streaming = state == "streaming"
            cameras[w.cfg.id] = CameraStatus(
                state=state,
                error=None if streaming else self._camera_error(w, state),
                restarts=w.restarts,
                fps=round(w.stats.fps(), 2) if streaming else 0.0,
                frames=w.stats.frames,
                tracks=len(w.pipeline.tracker.tracks),
                windows=w.stats.windows,
                events=w.stats.events,
                active_anomalies=sum(d.active for d in list(w.pipeline.detectors.values())),
                threshold=_finite(w.threshold),
                threshold_source=source,
                site_model=chosen.site.id if chosen and chosen.site else None,
                site_model_problem=chosen.problem if chosen else None,
                model_fps=chosen.fps if chosen else None,
                rate_warning=self._rate_warning(w, chosen) if streaming else None,
            )
        status = ApplianceStatus(
            appliance_id=self.cfg.appliance_id,
            version=__version__,
            time=iso_utc(time.time()),
            uptime_s=round(time.monotonic() - self.started_at, 1),
            model=self.model,
            model_install=self._model_install(),
            last_model_update=_model_update(self.last_update),
            runtime=self.runtime_name,
            cameras=cameras,
        )
        return status.model_dump(exclude_none=True)

    @staticmethod
    def _rate_warning(w: CameraWorker, chosen: CameraModel | None) -> str | None:
        """A live camera that delivers fewer frames than its model's time base needs (files and
        replays are checked at start from the rate they declare)."""
        if chosen is None or chosen.fps is None or not isinstance(w.source, Camera):
            return None
        if w.source.source.is_file or len(w.stats.frame_times) < 30:
            return None
        got = w.stats.fps()
        if not too_slow(got, chosen.fps):
            return None
        return f"camera delivers {got:.1f} frames per second; the model was learned at {chosen.fps:g}"

    def _camera_error(self, w: CameraWorker, state: str) -> str | None:
        """The reason, in words, behind a state other than streaming."""
        if state == "stalled":
            age = time.monotonic() - w.heartbeat
            return f"processing loop has not turned for {age:.0f} s (a hung pose or scoring call)"
        if state in ("restarting", "failed"):
            when = f"; next attempt at {iso_utc(w.restart_at)}" if w.restart_at else ""
            return f"processing crashed {w.restarts} time(s): {w.last_error}{when}"
        if state in ("reconnecting", "failed", "starting"):
            stats = w.source.stats()
            error = stats.get("last_error")
            return redact(error) if error else None
        return None

    def _model_install(self) -> ActiveModel | None:
        if self.loaded is None:
            return None
        signer = self.loaded.bundle.signer
        return ActiveModel(
            version_id=self.loaded.version_id,
            signer=signer.__dict__ if signer else None,
            allow_unsigned=self.cfg.model.allow_unsigned,
            variant=self.loaded.variant,
            site_models={
                cam: SiteModelInfo(
                    id=c.site.id,
                    learned_at=str(c.site.provenance.get("learned_at", "")),
                    footage_minutes=float(c.site.provenance.get("footage_minutes", 0.0)),
                    base=f"{c.site.base.get('name')} {c.site.base.get('version')}",
                )
                for cam, c in self.camera_models.items()
                if c.site is not None
            },
        )

    def stop(self) -> None:
        if self.inbox is not None:
            self.inbox.wait(60.0)  # an install in progress finishes (or is refused) before exit
        for w in self.workers:
            w.stop()
        for w in self.workers:
            if w.thread.ident is not None:  # (never started: start-up failed before it)
                w.thread.join(10.0)
        for w in self.workers:
            w.backend.close()
        self.close_sinks()

    def close_sinks(self) -> None:
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:
                log.warning("closing sink %s: %s", type(sink).__name__, exc)
        self.sinks = []


def _epoch(iso: str) -> float:
    from datetime import datetime

    try:
        return datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return 0.0


def _model_update(record: dict[str, Any] | None) -> ModelUpdate | None:
    if not record:
        return None
    try:
        return ModelUpdate.model_validate(record)
    except ValueError:
        return None
