"""The appliance daemon: every camera's capture -> pose -> tracks -> features -> scores -> events -> sinks.

Start-up checks everything a technician can get wrong before the first frame (bundle and its smoke
test, pose model files, sinks, cameras) and fails with one clear message and an exit code:
2 configuration, 3 model, 4 camera. :class:`Appliance` composes the pieces, each with one job:

- one :class:`~appliance.service.camera_worker.CameraWorker` per camera (its own thread and pose
  tracking state on the pose models all cameras share; restarts with backoff, per-camera health);
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
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance.alarms.alarm_points import AlarmBoard
from appliance.alarms.events import AnomalyEvent
from appliance.alarms.journal import AnomalyJournal
from appliance.alarms.threshold_store import thresholds_path
from appliance.capture.sources import source_problem
from appliance.config import ApplianceConfig, CameraConfig, ConfigError, KeypointsPoseConfig
from appliance.models.bundle import Bundle
from appliance.models.site import SiteModelStore
from appliance.pose.registry import close_engine
from appliance.publish.sinks import EventSink, open_sinks
from appliance.redact import redact
from appliance.service import handover, main_loop
from appliance.service.alarm_service import HANDLERS as ALARM_COMMANDS
from appliance.service.alarm_service import open_alarm_board
from appliance.service.camera_worker import STALLED_AFTER_S, CameraWorker, ReplayFrames, ScoringFailure
from appliance.service.cameras import open_camera, pose_engine
from appliance.service.command_handler import CommandHandler
from appliance.service.malloc_arenas import limit_malloc_arenas
from appliance.service.model_manager import CameraModel, LoadedModel, ModelManager
from appliance.service.status import StatusBuilder
from appliance.service.systemd import Notifier
from appliance.updates.inbox import Inbox
from appliance.updates.store import ModelStore
from appliance.updates.update_log import FACTORY
from appliance.web import open_console

__all__ = ["STALLED_AFTER_S", "Appliance", "CameraModel", "LoadedModel", "ReplayFrames", "ScoringFailure"]

if TYPE_CHECKING:
    from appliance.web.server import Console

log = logging.getLogger("appliance")


class Appliance:
    """Everything configured, started in order, stopped in reverse."""

    def __init__(
        self,
        cfg: ApplianceConfig,
        scorer_override: Callable[[LoadedModel], Any] | None = None,
        learn_fps: float | None = None,
        purpose: str = "run",
        config_path: Path | None = None,
    ) -> None:
        self.cfg = cfg
        self.config_path = config_path  # re-read on SIGHUP; None: reloads and zone edits are refused
        self._reload_lock = threading.Lock()  # SIGHUP and the console's zone saves, one at a time
        self.purpose = purpose  # run, calibrate or learn: what the start-up log says the cameras do
        # learning replaces every camera's scorer with a recorder (calibration.learn)
        self.scorer_override = scorer_override
        self.models = ModelManager(cfg, scorer_override, learn_fps)
        self.camera_models: dict[str, CameraModel] = {}
        self._site_stamp: tuple = ()
        self.bundle: Bundle | None = None
        self.sinks: list[EventSink] = []
        self.workers: list[CameraWorker] = []
        self.pose_engine: Any | None = None  # the pose models every camera shares
        self.started_at = time.monotonic()
        self._emit_lock = threading.Lock()
        self.events_emitted = 0
        self.inbox: Inbox | None = None
        self.journal = AnomalyJournal(cfg.state_dir / "open-anomalies.json")
        self.commands = CommandHandler(self, ALARM_COMMANDS)  # status, reload; ack, shelve, unshelve
        self.reporter = StatusBuilder(self)
        self.alarms: AlarmBoard | None = None  # the alarm points, from start()
        self.console: Console | None = None  # the web console, from start() when web.enabled
        self.console_problem: str | None = None  # why it is not serving although enabled

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
        limit_malloc_arenas()  # before the camera threads start (appliance/service/malloc_arenas.py)
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
            "model %s (%s, %s on %s, %s), smoke test passed",
            loaded.bundle.name, loaded.version_id, loaded.variant, loaded.runtime.name, loaded.runtime.device,
        )  # fmt: skip
        model = self.model
        path = thresholds_path(cfg.state_dir)
        self._calibration_stamp = path.stat().st_mtime_ns if path.exists() else None
        self.calibrations = handover.calibrations_of(self)
        self._site_stamp = self.sites.stamp()
        self.camera_models = {cam.id: self.models.camera_model(cam.id, loaded) for cam in cfg.cameras}
        self.models.refresh_last_update()
        if cfg.model.watch_inbox:
            self.inbox = Inbox(cfg.state_dir / "inbox", self.models.install_from_inbox)
        thresholds = {cam.id: self.threshold_for(cam) for cam in cfg.cameras}
        self.alarms = open_alarm_board(self)
        self.sinks = open_sinks(
            cfg.sinks,
            cfg.appliance_id,
            cfg.state_dir,
            self.status,
            thresholds,
            model.version,
            self.telemetry,
            self.command,
            self.alarms,
        )
        self.emit(self.journal.restart_ends(time.time()))  # anomalies a hard kill left open
        self.alarms.restarted()
        try:
            self.pose_engine = pose_engine(self)  # one set of pose models for every camera
            for cam in cfg.cameras:
                self.workers.append(open_camera(self, cam, loaded))
        except BaseException:
            for w in self.workers:
                w.source.stop()
            close_engine(self.pose_engine)
            self.close_sinks()
            raise
        for w in self.workers:
            w.start()
        self.console, self.console_problem = open_console(self)  # the web console, when web.enabled
        self.status_changed()

    # -- models -----------------------------------------------------------------------------------
    def _use(self, loaded: LoadedModel) -> None:
        self.models.loaded = loaded
        self.bundle = loaded.bundle
        self.variant = loaded.variant
        self.model = loaded.ref
        self.score_scale = loaded.score_scale
        self.runtime_name = f"{loaded.runtime.name} {loaded.variant} on {loaded.runtime.device}"

    def poll_site_models(self) -> bool:
        """A site model learned, rolled back or recalibrated while running: applied between frames."""
        return handover.poll_site_models(self)

    def _on_scoring_error(self, worker: CameraWorker, exc: Exception) -> bool:
        """From a camera thread: whether the model manager handles the failure (a rollback follows)."""
        return self.models.on_scoring_error(worker.running_version, worker.cfg.id, exc)

    def switch_model(self, target: str) -> bool:
        """Load ``target`` beside the running model and hand it to every camera between frames."""
        return handover.switch_model(self, target)

    def poll_model_store(self) -> None:
        """Between frames, from the main loop: health rollbacks, a new active version, the update log."""
        handover.poll_model_store(self)

    def telemetry(self, interval_s: float) -> list[dict[str, Any]]:
        """One score telemetry record per camera for the interval that ends now."""
        return self.reporter.telemetry(interval_s)

    def alarms_changed(self) -> None:
        """An alarm point changed: its retained state goes out now."""
        for sink in self.sinks:
            getattr(sink, "publish_alarms", lambda: None)()

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
        """The camera's threshold and where it comes from (camera, detector, site_model, ...)."""
        return handover.threshold_and_source(self, cam)

    # -- running ----------------------------------------------------------------------------------
    def emit(self, events: list[AnomalyEvent]) -> None:
        if not events:
            return
        with self._emit_lock:
            self.journal.record(events)  # before the sinks: a hard kill from here on still ends them
            if self.alarms is not None:
                self.alarms.on_events(events)
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
        main_loop.run_until_stopped(self, stop, status_interval_s, notifier, reload, reload_requested)

    def command(self, name: str, request: dict[str, Any]) -> dict[str, Any]:
        """An operator command (MQTT ``cmd/<name>`` when enabled); returns the answer to publish."""
        return self.commands(name, request)

    def reload_calibration_if_changed(self) -> bool:
        """Apply a thresholds file written by ``appliance calibrate`` while the service runs.

        Thresholds change between frames; cameras, tracks and the MQTT session are untouched.
        """
        return handover.reload_calibration_if_changed(self)

    def stalled_cameras(self, max_age_s: float) -> list[str]:
        return self.reporter.stalled_cameras(max_age_s)

    def reload(self, new: ApplianceConfig) -> None:
        """SIGHUP: apply thresholds, hysteresis and zones from a re-read config and the calibration
        file, between frames, keeping cameras, tracks and the MQTT session; say what needs a restart."""
        with self._reload_lock:
            handover.reload_config(self, new)

    def reload_from_file(self) -> None:
        """Re-read the configuration file (with the console's zones) and apply it; a
        :class:`ConfigError` leaves the running configuration as it is."""
        self.reload(handover.read_config_file(self))

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
        close_engine(self.pose_engine)
        self.pose_engine = None
        self.close_sinks()

    def close_sinks(self) -> None:
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:
                log.warning("closing sink %s: %s", type(sink).__name__, exc)
        self.sinks = []
