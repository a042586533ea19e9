"""Opening one camera for the daemon: its own pose backend (tracking state per stream, on the pose
models all cameras share), its pipeline (tracker, scorer, detector), its source (a camera, a file, or
a keypoint replay's frame clock), and the check that the source can feed its model's time base."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from appliance.alarms.detector import HysteresisRule
from appliance.alarms.zones import camera_zones
from appliance.capture.camera import Camera
from appliance.capture.frame_rate import RateGate, too_slow
from appliance.config import BlazePoseConfig, CameraConfig, ConfigError, KeypointsPoseConfig
from appliance.errors import ApplianceError, ModelError
from appliance.pose.base import PoseBackend
from appliance.pose.engine import ENGINE_SHARE, engine_share_ms
from appliance.pose.registry import create_backend, create_engine
from appliance.redact import redact
from appliance.service.camera_worker import CameraWorker, ReplayFrames
from appliance.service.model_manager import CameraModel, LoadedModel
from appliance.service.pipeline import CameraPipeline
from appliance.tracking.tracker import Tracker

if TYPE_CHECKING:
    from appliance.service.daemon import Appliance

log = logging.getLogger("appliance")
T = TypeVar("T")


def open_camera(app: Appliance, cam: CameraConfig, loaded: LoadedModel) -> CameraWorker:
    """A camera's worker, ready to start, scoring with the model chosen for it."""
    cfg = app.cfg
    backend = pose_backend(app)
    chosen = app.camera_models[cam.id]
    threshold = app.threshold_for(cam)
    d, t = cfg.detector, cfg.tracking
    pipeline = CameraPipeline(
        appliance_id=cfg.appliance_id,
        camera_id=cam.id,
        scorer=chosen.scorer,
        map_spec=loaded.bundle.contract.map_spec,
        model=chosen.ref,
        rule=HysteresisRule(threshold, d.start_windows, d.end_windows, d.update_interval_s),
        tracker=Tracker(t.min_iou, t.max_missed_frames, t.min_hits),
        whole_frame=cam.whole_frame,
        zones=camera_zones(cam.zones),
        evidence=d.evidence,
        evidence_frames=d.evidence_frames,
    )
    check_rate(app, cam, backend, chosen)
    share_the_engine(app, cam, backend, chosen)
    source, size = open_source(app, cam, backend)
    worker = CameraWorker(cam, source, backend, pipeline, app.emit, size)
    worker.gate = RateGate(chosen.fps)
    worker.live.keep_image = app.cfg.web.enabled and app.cfg.web.setup_image  # for aiming, admins only
    worker.on_scoring_error = app._on_scoring_error
    worker.on_health_change = app.status_changed
    worker.running_version = loaded.version_id
    where = redact(str(cam.source))
    if chosen.site is not None:
        log.info(
            "camera %s: %s, site model %s (learned %s), threshold %.2f", cam.id, where, chosen.site.id,
            chosen.site.provenance.get("learned_at"), threshold,
        )  # fmt: skip
    elif app.scorer_override is not None:
        log.info("camera %s: %s, recording skeletons to learn from", cam.id, where)
    elif math.isfinite(threshold):
        log.info("camera %s: %s, threshold %.2f", cam.id, where, threshold)
    else:
        log.warning(
            "camera %s: %s, uncalibrated for model %s: scoring, but no events until "
            "`appliance calibrate` (or detector.when_uncalibrated: bundle_default)",
            cam.id, where, loaded.bundle.name,
        )  # fmt: skip
    return worker


def check_rate(app: Appliance, cam: CameraConfig, backend: PoseBackend, chosen: CameraModel) -> None:
    """A source that declares a lower rate than the model's time base cannot feed it: refused."""
    if chosen.fps is None:
        return
    declared = getattr(backend, "fps", None) if isinstance(app.cfg.pose, KeypointsPoseConfig) else None
    if declared is None and isinstance(cam.source, str) and Path(cam.source).is_file():
        from appliance.pose.extract import video_fps

        declared = video_fps(cam.source)
    if cam.fps is not None and (declared is None or cam.fps < declared):
        declared = cam.fps  # the configured cap
    if too_slow(declared, chosen.fps):
        i = next(i for i, c in enumerate(app.cfg.cameras) if c.id == cam.id)
        what = f"site model {chosen.site.id}" if chosen.site else f"model {app.bundle.name}"
        raise ConfigError(
            f"cameras[{i}] ({cam.id}): the source gives {declared:g} frames per second, but {what} was "
            f"learned at {chosen.fps:g} fps and a window of its frames would last longer than it "
            f"learned: use a camera stream of at least {chosen.fps:g} fps (cameras[{i}].fps)"
        )


def share_the_engine(app: Appliance, cam: CameraConfig, backend: PoseBackend, chosen: CameraModel) -> None:
    """``pose.frame_budget_ms: auto``: this camera's share of the pose engine as its frame budget,
    so that cameras sharing the engine shed work each in proportion instead of losing frames."""
    pose = app.cfg.pose
    if not isinstance(pose, BlazePoseConfig) or pose.frame_budget_ms != "auto":
        return
    fps = chosen.fps or cam.fps or 30.0  # frames are thinned to the model's rate before pose
    ms = engine_share_ms(fps, pose.model_copies, len(app.cfg.cameras))
    backend.set_frame_budget(ms)
    log.info(
        "camera %s: pose budget %.0f ms a frame (auto: %.0f%% of its %.0f ms frame period, %d model "
        "copies for %d cameras)",
        cam.id, ms, 100 * ENGINE_SHARE, 1000 / fps, pose.model_copies, len(app.cfg.cameras),
    )  # fmt: skip


def pose_engine(app: Appliance) -> Any | None:
    """The pose models every camera shares, built once at start (a mistake names the backend)."""
    return _naming_the_backend(app, lambda: create_engine(app.cfg.pose))


def pose_backend(app: Appliance) -> PoseBackend:
    return _naming_the_backend(app, lambda: create_backend(app.cfg.pose, app.pose_engine))


def _naming_the_backend(app: Appliance, build: Callable[[], T]) -> T:
    """``build()``, with a pose mistake reported as a model error that names the backend."""
    try:
        return build()
    except ModelError:
        raise
    except ApplianceError as exc:
        raise ModelError(f"pose backend {app.cfg.pose.type}: {exc}") from None


def open_source(
    app: Appliance, cam: CameraConfig, backend: PoseBackend
) -> tuple[Camera | ReplayFrames, tuple | None]:
    if isinstance(app.cfg.pose, KeypointsPoseConfig):
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
        on_state_change=lambda *_: app.status_changed(),
    )
    return camera.start(), None
