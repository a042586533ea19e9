"""Handing models and thresholds to the running cameras, between two frames: a new model version
(field update, rollback), a site model learned or rolled back, a recalibrated threshold, a SIGHUP.
Each camera takes what it is offered at its next frame; its tracks and the MQTT session stay."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

from appliance.alarms.alarm_points import points_of
from appliance.alarms.detector import HysteresisRule
from appliance.alarms.threshold_store import load_thresholds, thresholds_path
from appliance.alarms.zones import camera_zones
from appliance.capture.frame_rate import RateGate
from appliance.config import ApplianceConfig, CameraConfig, ConfigError, load_config
from appliance.errors import ModelError
from appliance.updates.update_log import FACTORY

if TYPE_CHECKING:
    from appliance.service.camera_worker import CameraWorker
    from appliance.service.daemon import Appliance
    from appliance.service.model_manager import CameraModel, LoadedModel

log = logging.getLogger("appliance")


def calibrations_of(app: Appliance) -> dict:
    """The thresholds file's cameras calibrated for the running model and its score scale."""
    return load_thresholds(app.cfg.state_dir, app.model.name, app.model.version, app.score_scale)


def offer(worker: CameraWorker, loaded: LoadedModel, chosen: CameraModel, threshold: float) -> None:
    """Queue ``chosen`` (the bundle or the camera's site model) for the camera's next frame, on its
    time base."""
    worker.offer_model(
        loaded.version_id, (chosen.scorer, loaded.bundle.contract.map_spec, chosen.ref, threshold)
    )
    worker.gate = RateGate(chosen.fps)


def poll_site_models(app: Appliance) -> bool:
    """A site model learned, rolled back or recalibrated while running: applied between frames."""
    stamp = app.sites.stamp()
    if stamp == app._site_stamp or app.loaded is None:
        return False
    app._site_stamp = stamp
    for w in app.workers:
        old = app.camera_models.get(w.cfg.id)
        chosen = app.models.camera_model(w.cfg.id, app.loaded)
        app.camera_models[w.cfg.id] = chosen
        threshold, source = app.threshold_and_source(w.cfg)
        if old is not None and old.key == chosen.key:
            if threshold != w.threshold:
                w.retarget_pending(threshold)
                w.pipeline.set_threshold(threshold)
                log.info("camera %s: threshold now %.2f (%s)", w.cfg.id, threshold, source)
            continue
        offer(w, app.loaded, chosen, threshold)
        what = f"site model {chosen.site.id}" if chosen.site else f"bundle {app.loaded.bundle.name}"
        log.info("camera %s: now scoring with %s (threshold %s, %s)", w.cfg.id, what, threshold, source)
    app.status_changed()
    return True


def switch_model(app: Appliance, target: str) -> bool:
    """Load ``target`` beside the running model and hand it to every camera between frames."""
    current = app.loaded.version_id if app.loaded else None
    try:
        new = app.models.load_version(target)
    except ModelError as exc:
        app.store.log.record("load", "failed", version=target, message=str(exc))
        if (app.store.state().active or FACTORY) == target:
            app.models.auto_rollback(target, f"failed to load: {exc}")
        app.status_changed()
        return False
    app._use(new)
    app.calibrations = calibrations_of(app)
    for w in app.workers:
        chosen = app.camera_models[w.cfg.id] = app.models.camera_model(w.cfg.id, new)
        threshold, source = app.threshold_and_source(w.cfg)
        offer(w, new, chosen, threshold)
        if chosen.problem is not None:
            log.warning("camera %s: %s; uncalibrated until `appliance learn`", w.cfg.id, chosen.problem)
        elif source == "uncalibrated":
            log.warning(
                "camera %s: model %s has another score scale: uncalibrated until recalibrated",
                w.cfg.id, new.bundle.name,
            )  # fmt: skip
    app.models.switched(target)
    app.store.log.record("load", "ok", version=target, bundle=new.bundle, message=f"was {current}")
    app.models.refresh_last_update()
    for sink in app.sinks:
        set_version = getattr(sink, "set_model_version", None)
        if set_version is not None:
            set_version(app.model.version)
    app.status_changed()
    return True


def poll_model_store(app: Appliance) -> None:
    """Between frames, from the main loop: health rollbacks, a new active version, the update log."""
    app.models.take_health_failure()
    target = app.store.state().active or FACTORY
    if app.loaded is not None and target != app.loaded.version_id:
        app.switch_model(target)
    if app.models.refresh_last_update():
        app.status_changed()
    if app.inbox is not None:
        app.inbox.poll()


def reload_calibration_if_changed(app: Appliance) -> bool:
    """Apply a thresholds file written by ``appliance calibrate`` while the service runs.

    Thresholds change between frames; cameras, tracks and the MQTT session are untouched.
    """
    path = thresholds_path(app.cfg.state_dir)
    stamp = path.stat().st_mtime_ns if path.exists() else None
    if stamp == app._calibration_stamp:
        return False
    app._calibration_stamp = stamp
    app.calibrations = calibrations_of(app)
    for w in app.workers:
        threshold, source = app.threshold_and_source(w.cfg)
        w.retarget_pending(threshold)
        if threshold != w.pipeline.rule.threshold:
            w.pipeline.set_threshold(threshold)
            log.info("camera %s: threshold now %.2f (%s)", w.cfg.id, threshold, source)
    app.status_changed()
    return True


def reload_config(app: Appliance, new: ApplianceConfig) -> None:
    """SIGHUP: apply thresholds and hysteresis from a re-read config and the calibration file,
    and each camera's zones, between frames, keeping cameras, tracks and the MQTT session; say what
    needs a restart."""
    old = app.cfg
    restart = [
        key
        for key in ("appliance_id", "state_dir", "model", "pose", "tracking", "sinks")
        if getattr(new, key) != getattr(old, key)
    ]
    live = {"threshold": None, "zones": []}  # what a reload applies to a running camera
    old_cams = {c.id: c.model_copy(update=live) for c in old.cameras}
    new_cams = {c.id: c.model_copy(update=live) for c in new.cameras}
    if old_cams != new_cams:
        restart.append("cameras (other than their thresholds and zones)")
    applied = {c.id: {"threshold": c.threshold, "zones": c.zones} for c in new.cameras}
    cameras = [c.model_copy(update=applied.get(c.id, live)) for c in old.cameras]
    app.cfg = old.model_copy(update={"detector": new.detector, "cameras": cameras})
    for w in app.workers:
        before = w.cfg.zones
        w.cfg = next(c for c in cameras if c.id == w.cfg.id)
        d = app.cfg.detector
        w.pipeline.rule = HysteresisRule(
            w.pipeline.rule.threshold, d.start_windows, d.end_windows, d.update_interval_s
        )
        w.pipeline.evidence = d.evidence
        if w.cfg.zones != before:  # from the next window on; each track's dwell starts again
            w.pipeline.zones = camera_zones(w.cfg.zones)
            if app.alarms is not None:
                app.alarms.sync(w.cfg.id, points_of([w.cfg]))
            log.info("camera %s: zones now %s", w.cfg.id, ", ".join(z.name for z in w.cfg.zones) or "none")
    app._calibration_stamp = -1  # force: re-read the calibration file and apply every threshold
    app.reload_calibration_if_changed()
    if restart:
        log.warning("reloaded thresholds; changes to %s take effect after a restart", ", ".join(restart))
    else:
        log.info("reloaded thresholds and detector settings")


def threshold_and_source(app: Appliance, cam: CameraConfig) -> tuple[float, str]:
    """The camera's threshold and where it comes from: its own, the detector's, its site model's, its
    calibration, the bundle's default, or none yet (uncalibrated: scored, never above)."""
    if cam.threshold is not None:
        return cam.threshold, "camera"
    if app.cfg.detector.threshold is not None:
        return app.cfg.detector.threshold, "detector"
    chosen = app.camera_models.get(cam.id)
    if chosen is not None and chosen.site is not None:
        return chosen.site.threshold_value, "site_model"
    if chosen is not None and chosen.problem is not None:
        return math.inf, "uncalibrated"  # the bundle's scale is not the site model's: learn again
    if cam.id in app.calibrations:
        return app.calibrations[cam.id].threshold, "calibration"
    assert app.bundle is not None
    if app.cfg.detector.when_uncalibrated == "bundle_default":
        return app.bundle.default_threshold, "bundle"
    return math.inf, "uncalibrated"  # scored, never above: no events until calibrated


def read_config_file(app: Appliance) -> ApplianceConfig:
    """The configuration file as it is now, with the console's zones (SIGHUP, a zone save)."""
    if app.config_path is None:
        raise ConfigError("this appliance was started without a configuration file")
    return load_config(app.config_path)
