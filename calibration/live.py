"""Calibration and learning on a running service: the ``recalibrate`` and ``learn`` commands.

Both record from the running pipeline: there is no second capture, and the camera keeps watching
with its current model meanwhile. The service's command table gets them from
:func:`register_live_commands`; the service itself never imports this package.
"""

from __future__ import annotations

import logging
from typing import Any

from appliance.service.command_handler import camera_of
from calibration.learn import learn_live
from calibration.run import (
    CalibrationAborted,
    ScoreCollector,
    check_minutes,
    fit_and_save,
    scoring_model,
    watch_live,
)

log = logging.getLogger("appliance")


def register_live_commands(app) -> None:
    """Give a running appliance the ``recalibrate`` and ``learn`` commands."""
    app.commands.register("recalibrate", recalibrate_command)
    app.commands.register("learn", learn_command)


def recalibrate_command(app, request: dict[str, Any]) -> dict[str, Any]:
    camera = camera_of(app, request)
    if camera is None:
        return {"ok": False, "error": 'name the camera: {"camera": "<id>", "minutes": 3}'}
    summary = recalibrate_live(
        app, camera, float(request.get("minutes", 3.0)),
        float(request.get("target_alarms_per_hour", 0.125)), bool(request.get("accept_drift", False)),
    )  # fmt: skip
    keys = ("camera", "threshold", "method", "windows", "footage_minutes", "warnings")
    return {"ok": True, **{k: summary[k] for k in keys if k in summary}}


def learn_command(app, request: dict[str, Any]) -> dict[str, Any]:
    camera = camera_of(app, request)
    if camera is None:
        return {"ok": False, "error": 'name the camera: {"camera": "<id>", "minutes": 10}'}
    summary = learn_live(
        app, camera, float(request.get("minutes", 10.0)), float(request.get("target_alarms_per_hour", 2.0))
    )
    keys = ("camera", "site_model", "threshold", "method", "footage_minutes", "tracks", "warnings")
    return {"ok": True, **{k: summary[k] for k in keys if k in summary}}


def recalibrate_live(app, camera_id: str, minutes: float, target: float, accept_drift: bool = False) -> dict:
    """Calibrate one camera from the running pipeline (no second capture, no restart); blocks."""
    check_minutes(minutes, target)  # a target the minutes cannot support: refused at once
    worker = next((w for w in app.workers if w.cfg.id == camera_id), None)
    if worker is None:
        cameras = ", ".join(w.cfg.id for w in app.workers)
        raise CalibrationAborted(f"no camera {camera_id!r}; cameras: {cameras}")
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
    info["model"] = scoring_model(app, camera_id)
    summary = fit_and_save(app.cfg, camera_id, collected.sequences(), info, minutes, target, accept_drift)
    app.reload_calibration_if_changed()
    app.poll_site_models()
    return summary
