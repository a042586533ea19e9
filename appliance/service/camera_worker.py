"""The camera supervisor: one thread per camera that reads the newest frame, keeps the model's time
base, runs pose and the pipeline, and hands events on; a crash of that loop restarts it with backoff
(the state says ``restarting``, then ``failed``), never silently ends it. The heartbeat lets the
watchdog and the status tell a hung loop from a slow one.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from appliance.alarms.events import AnomalyEvent, ModelRef
from appliance.capture.camera import Camera, CameraState
from appliance.capture.frame_rate import RateGate
from appliance.capture.newest_frame import Frame
from appliance.config import CameraConfig
from appliance.errors import ApplianceError
from appliance.models.lstm_vae import MultiTrackScorer
from appliance.pose.base import PoseBackend
from appliance.service.latency import LatencyHistogram
from appliance.service.live_feed import LiveFeed
from appliance.service.pipeline import CameraPipeline, FrameResult

RESTART_BACKOFF_INITIAL_S = 1.0  # a crashed camera loop restarts after this, doubling
RESTART_BACKOFF_MAX_S = 60.0
RESTARTS_BEFORE_FAILED = 5  # crashes in a row before the camera is reported ``failed`` (still retried)
STABLE_AFTER_S = 60.0  # a loop that ran this long before crashing starts the count afresh
STALLED_AFTER_S = 10.0  # the status calls a camera loop that has not turned for this long ``stalled``

log = logging.getLogger("appliance")


class ScoringFailure(ApplianceError):
    """The scoring stage raised, or gave a non-finite score (a model fault, not a camera one)."""


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
    pose_ms: deque = field(default_factory=lambda: deque(maxlen=2000))  # pose work, without the wait
    pose_wait_ms: deque = field(default_factory=lambda: deque(maxlen=2000))  # for a pose model copy
    frame_age_ms: deque = field(default_factory=lambda: deque(maxlen=2000))  # captured -> taken up
    pipeline_ms: deque = field(default_factory=lambda: deque(maxlen=2000))
    publish_ms: deque = field(default_factory=lambda: deque(maxlen=2000))
    frame_times: deque = field(default_factory=lambda: deque(maxlen=300))
    interval_peaks: dict[int, float] = field(default_factory=dict)  # for score telemetry
    pose_latency: LatencyHistogram = field(default_factory=LatencyHistogram)  # /metrics, cumulative
    scoring_latency: LatencyHistogram = field(default_factory=LatencyHistogram)

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
        self.live = LiveFeed()  # the newest skeletons and the foot heat map, for the console
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
        taken = time.monotonic()  # how long the frame waited in the newest-frame buffer, for the stats
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
        self.live.update(
            frame.index, frame.wall_time, size, result.tracks, result.scores, self.threshold, frame.image
        )
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
        wait_s = getattr(self.backend, "last_wait_s", 0.0)  # waiting for the shared pose engine
        s.pose_wait_ms.append(wait_s * 1e3)
        s.pose_ms.append((t1 - t0 - wait_s) * 1e3)
        s.pose_latency.observe(s.pose_ms[-1])
        s.scoring_latency.observe((t2 - t1) * 1e3)
        s.frame_age_ms.append((taken - frame.mono_time) * 1e3)
        s.pipeline_ms.append((t2 - t1) * 1e3)
        s.publish_ms.append((t3 - t2) * 1e3)
        s.frame_times.append(time.monotonic())

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.source.stop()
