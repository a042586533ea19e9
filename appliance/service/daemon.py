"""The appliance daemon: every camera's capture -> pose -> tracks -> features -> scores -> events -> sinks.

Start-up checks everything a technician can get wrong before the first frame (bundle and its smoke
test, pose model files, sinks, cameras) and fails with one clear message and an exit code:
2 configuration, 3 model, 4 camera. :class:`Appliance` composes the pieces, each with one job:

- one :class:`~appliance.service.camera_worker.CameraWorker` per camera (its own thread and pose
  backend; restarts with backoff, per-camera health);
- the :class:`~appliance.service.model_manager.ModelManager` (which model each camera runs; load,
  health window, rollback);
- the :class:`~appliance.service.status.StatusBuilder` (status payload, status line, telemetry);
- the :class:`~appliance.service.command_handler.CommandHandler` (operator commands).

The appliance itself hands models and thresholds to the cameras between frames, sends events to the
journal and the sinks, and runs the main loop (watchdog, status, polling for calibrations, site
models and model updates, reloads).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance.alarms.detector import HysteresisRule
from appliance.alarms.events import AnomalyEvent
from appliance.alarms.journal import AnomalyJournal
from appliance.alarms.threshold_store import load_thresholds, thresholds_path
from appliance.capture.camera import Camera, source_problem
from appliance.capture.frame_rate import RateGate, too_slow
from appliance.config import ApplianceConfig, CameraConfig, ConfigError, KeypointsPoseConfig
from appliance.errors import ApplianceError, ModelError
from appliance.models.bundle import Bundle
from appliance.models.site import SiteModelStore
from appliance.pose.base import PoseBackend
from appliance.pose.registry import create_backend
from appliance.publish.sinks import EventSink, open_sinks
from appliance.redact import redact
from appliance.service.camera_worker import STALLED_AFTER_S, CameraWorker, ReplayFrames, ScoringFailure
from appliance.service.command_handler import CommandHandler
from appliance.service.model_manager import CameraModel, LoadedModel, ModelManager
from appliance.service.pipeline import CameraPipeline
from appliance.service.status import StatusBuilder
from appliance.service.systemd import Notifier
from appliance.tracking.tracker import Tracker
from appliance.updates.inbox import Inbox
from appliance.updates.store import FACTORY, ModelStore

__all__ = ["STALLED_AFTER_S", "Appliance", "CameraModel", "LoadedModel", "ReplayFrames", "ScoringFailure"]

CALIBRATION_POLL_S = 2.0  # how soon a recalibration reaches the running daemon

log = logging.getLogger("appliance")


class Appliance:
    """Everything configured, started in order, stopped in reverse."""

    def __init__(
        self,
        cfg: ApplianceConfig,
        scorer_override: Callable[[LoadedModel], Any] | None = None,
        learn_fps: float | None = None,
        purpose: str = "run",
    ) -> None:
        self.cfg = cfg
        self.purpose = purpose  # run, calibrate or learn: what the start-up log says the cameras do
        # learning replaces every camera's scorer with a recorder (calibration.learn)
        self.scorer_override = scorer_override
        self.models = ModelManager(cfg, scorer_override, learn_fps)
        self.camera_models: dict[str, CameraModel] = {}
        self._site_stamp: tuple = ()
        self.bundle: Bundle | None = None
        self.sinks: list[EventSink] = []
        self.workers: list[CameraWorker] = []
        self.started_at = time.monotonic()
        self._emit_lock = threading.Lock()
        self.events_emitted = 0
        self.inbox: Inbox | None = None
        self.journal = AnomalyJournal(cfg.state_dir / "open-anomalies.json")
        self.commands = CommandHandler(self)
        self.reporter = StatusBuilder(self)

    @property
    def store(self) -> ModelStore:
        return self.models.store

    @property
    def sites(self) -> SiteModelStore:
        return self.models.sites

    @property
    def loaded(self) -> LoadedModel | None:
        return self.models.loaded

    @property
    def last_update(self) -> dict[str, Any] | None:
        return self.models.last_update

    # -- start-up ---------------------------------------------------------------------------------
    def start(self) -> None:
        cfg = self.cfg
        self.started_at = time.monotonic()
        for i, cam in enumerate(cfg.cameras):  # a source that can never work is a configuration mistake
            if not isinstance(cfg.pose, KeypointsPoseConfig) and (why := source_problem(cam.source)):
                raise ConfigError(f"cameras[{i}].source ({cam.id}): {redact(str(cam.source))}: {why}")
        if cfg.model.allow_unsigned:
            log.warning("model.allow_unsigned is set: unsigned model bundles are accepted (development only)")
        loaded = self.models.load_initial()
        self._use(loaded)
        if loaded.version_id != FACTORY:
            self.models.boot.starting(loaded.version_id)
        log.info(
            "model %s (%s, %s on %s), smoke test passed",
            loaded.bundle.name, loaded.version_id, loaded.variant, loaded.runtime.name,
        )  # fmt: skip
        model = self.model
        path = thresholds_path(cfg.state_dir)
        self._calibration_stamp = path.stat().st_mtime_ns if path.exists() else None
        self.calibrations = load_thresholds(cfg.state_dir, model.name, model.version, self.score_scale)
        self._site_stamp = self.sites.stamp()
        self.camera_models = {cam.id: self.models.camera_model(cam.id, loaded) for cam in cfg.cameras}
        self.models.refresh_last_update()
        if cfg.model.watch_inbox:
            self.inbox = Inbox(cfg.state_dir / "inbox", self.models.install_from_inbox)
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
    def _use(self, loaded: LoadedModel) -> None:
        self.models.loaded = loaded
        self.bundle = loaded.bundle
        self.variant = loaded.variant
        self.model = loaded.ref
        self.score_scale = loaded.score_scale
        self.runtime_name = f"{loaded.runtime.name} {loaded.variant}"

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
            chosen = self.models.camera_model(w.cfg.id, self.loaded)
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

    def _on_scoring_error(self, worker: CameraWorker, exc: Exception) -> bool:
        """From a camera thread: whether the model manager handles the failure (a rollback follows)."""
        return self.models.on_scoring_error(worker.running_version, worker.cfg.id, exc)

    def switch_model(self, target: str) -> bool:
        """Load ``target`` beside the running model and hand it to every camera between frames."""
        current = self.loaded.version_id if self.loaded else None
        try:
            new = self.models.load_version(target)
        except ModelError as exc:
            self.store.record("load", "failed", version=target, message=str(exc))
            if (self.store.state().active or FACTORY) == target:
                self.models.auto_rollback(target, f"failed to load: {exc}")
            self.status_changed()
            return False
        self._use(new)
        self.calibrations = load_thresholds(
            self.cfg.state_dir, self.model.name, self.model.version, self.score_scale
        )
        for w in self.workers:
            chosen = self.camera_models[w.cfg.id] = self.models.camera_model(w.cfg.id, new)
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
        self.models.switched(target)
        self.store.record("load", "ok", version=target, bundle=new.bundle, message=f"was {current}")
        self.models.refresh_last_update()
        for sink in self.sinks:
            set_version = getattr(sink, "set_model_version", None)
            if set_version is not None:
                set_version(self.model.version)
        self.status_changed()
        return True

    def poll_model_store(self) -> None:
        """Between frames, from the main loop: health rollbacks, a new active version, the update log."""
        self.models.take_health_failure()
        target = self.store.state().active or FACTORY
        if self.loaded is not None and target != self.loaded.version_id:
            self.switch_model(target)
        if self.models.refresh_last_update():
            self.status_changed()
        if self.inbox is not None:
            self.inbox.poll()

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
        """One score telemetry record per camera for the interval that ends now."""
        return self.reporter.telemetry(interval_s)

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
            if self.models.boot.version is not None and now >= healthy_at:
                self.models.boot.healthy()
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
            if time.monotonic() >= next_check or self.models.failure_pending:
                next_check = time.monotonic() + CALIBRATION_POLL_S
                self.reload_calibration_if_changed()
                self.poll_site_models()
                self.poll_model_store()
        self.models.boot.healthy()  # a clean stop is not a crash

    def command(self, name: str, request: dict[str, Any]) -> dict[str, Any]:
        """An operator command (MQTT ``cmd/<name>`` when enabled); returns the answer to publish."""
        return self.commands(name, request)

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
        return self.reporter.stalled_cameras(max_age_s)

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

    def status_line(self) -> str:
        return self.reporter.line()

    def status(self) -> dict[str, Any]:
        """The retained status payload (:class:`ApplianceStatus`), as a dict."""
        return self.reporter.payload()

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
