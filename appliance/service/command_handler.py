"""Operator commands (MQTT ``cmd/<name>``, authorised and rate-limited by
:mod:`appliance.publish.commands`): a table of handlers, each answering one request with a dict.

The service answers ``status`` and ``reload`` itself. Commands that need on-site learning
(``recalibrate``, ``learn``) are registered by :mod:`calibration.live` when the appliance is run as a
service, so the service never imports the calibration package (which builds on the service).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from appliance.service.daemon import Appliance

Handler = Callable[["Appliance", dict[str, Any]], dict[str, Any]]


class CommandHandler:
    def __init__(self, app: Appliance, more: dict[str, Handler] | None = None) -> None:
        self.app = app
        self.handlers: dict[str, Handler] = {"status": _status, "reload": _reload, **(more or {})}

    def register(self, name: str, handler: Handler) -> None:
        self.handlers[name] = handler

    def __call__(self, name: str, request: dict[str, Any]) -> dict[str, Any]:
        """The answer to publish for one command."""
        handler = self.handlers.get(name)
        if handler is None:
            known = ", ".join(sorted(self.handlers))
            return {"ok": False, "error": f"unknown command {name!r}; known: {known}"}
        return handler(self.app, request)


def _status(app: Appliance, request: dict[str, Any]) -> dict[str, Any]:
    app.status_changed()
    return {"ok": True}


def _reload(app: Appliance, request: dict[str, Any]) -> dict[str, Any]:
    changed = app.reload_calibration_if_changed()
    return {"ok": True, "thresholds_changed": app.poll_site_models() or changed}


def camera_of(app: Appliance, request: dict[str, Any]) -> str | None:
    """The camera a command names, or the only camera when there is one."""
    camera = request.get("camera") or (app.workers[0].cfg.id if len(app.workers) == 1 else None)
    return None if camera is None else str(camera)
