"""The daemon's side of the alarm points (:mod:`appliance.alarms.alarm_points`): which points exist,
why one is out of service right now, and the operator commands ``ack``, ``shelve`` and ``unshelve``
(the same handlers serve MQTT and, later, the local console)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from appliance.alarms.alarm_points import CAMERA_POINT, AlarmBoard, AlarmRefused, points_of
from appliance.alarms.zones import in_service
from appliance.service.command_handler import camera_of

if TYPE_CHECKING:
    from appliance.service.daemon import Appliance


def open_alarm_board(app: Appliance) -> AlarmBoard:
    """The appliance's alarm points, their journalled states restored."""
    cfg = app.cfg
    return AlarmBoard(cfg.appliance_id, cfg.state_dir, points_of(cfg.cameras), on_change=app.alarms_changed)


def out_of_service(app: Appliance) -> dict[str, str | None]:
    """Why each point is out of service now (None: in service)."""
    now_reasons: dict[str, str | None] = {}
    for w in app.workers:
        cam = w.cfg
        why = None
        if w.state != "streaming":
            why = f"camera {w.state}"  # the status says more; a reason that kept changing would republish
        elif not math.isfinite(w.threshold):
            why = "uncalibrated: run `appliance calibrate` or `appliance learn`"
        include = [z for z in cam.zones if z.kind == "include"]
        if not include:
            now_reasons[f"{cam.id}/{CAMERA_POINT}"] = why
        for z in include:
            zone_why = why
            if zone_why is None and not z.enabled:
                zone_why = "zone disabled"
            elif zone_why is None and not in_service(z, app.alarms.clock()):
                zone_why = "outside the zone's schedule"
            now_reasons[f"{cam.id}/{z.name}"] = zone_why
    return now_reasons


def _on_point(act):
    """An alarm command: find the point the request names, let ``act`` change it, answer."""

    def handler(app: Appliance, request: dict[str, Any]) -> dict[str, Any]:
        camera = camera_of(app, request)
        if camera is None:
            return {"ok": False, "error": "name the camera (camera)"}
        point = request.get("point") or CAMERA_POINT
        try:
            state = act(app.alarms, camera, point, request)
        except AlarmRefused as exc:
            return {"ok": False, "error": str(exc)}
        return {"ok": True, "alarm": state.model_dump(exclude_none=True)}

    return handler


HANDLERS = {
    "ack": _on_point(lambda board, cam, point, r: board.acknowledge(cam, point, r["by"], r.get("comment"))),
    "shelve": _on_point(
        lambda board, cam, point, r: board.shelve(
            cam, point, r["by"], float(r["minutes"]) * 60.0, r.get("comment")
        )
    ),
    "unshelve": _on_point(lambda board, cam, point, r: board.unshelve(cam, point, r["by"], r.get("comment"))),
}
