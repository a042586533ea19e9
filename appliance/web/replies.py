"""The console's refusals, one shape for every route: ``{"ok": false, "error": "..."}`` with the
HTTP status that says why, raised from wherever a handler finds the problem."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from appliance.service.camera_worker import CameraWorker
    from appliance.service.daemon import Appliance

_STATUS: dict[int, type[web.HTTPException]] = {
    400: web.HTTPBadRequest,
    401: web.HTTPUnauthorized,
    403: web.HTTPForbidden,
    404: web.HTTPNotFound,
    409: web.HTTPConflict,
    422: web.HTTPUnprocessableEntity,
    429: web.HTTPTooManyRequests,
    500: web.HTTPInternalServerError,
    503: web.HTTPServiceUnavailable,
}


def refusal(status: int, error: str, **more: Any) -> web.HTTPException:
    """The refusal to raise: ``raise refusal(409, "camera walkway is learning")``."""
    body = json.dumps({"ok": False, "error": error, **more})
    if status == 413:  # its constructor wants the sizes; the body says it in words
        return web.HTTPRequestEntityTooLarge(0, 0, text=body, content_type="application/json")
    return _STATUS[status](text=body, content_type="application/json")


def worker_of(app: Appliance, request: web.Request) -> CameraWorker:
    """The running camera the route's ``{camera}`` names, or a 404 refusal."""
    cam = request.match_info["camera"]
    worker = next((w for w in app.workers if w.cfg.id == cam), None)
    if worker is None:
        raise refusal(404, f"no camera {cam!r}")
    return worker
