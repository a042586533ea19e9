"""The zones editor's routes: read a camera's zones, save the ones an admin drew, or go back to the
configuration file's.

A save is checked like the file's zones (:class:`~appliance.config.zones.ZoneConfig`, unique names,
at most 32), written to ``<state_dir>/zones.yaml`` (:mod:`appliance.config.console_zones`; the
configuration file itself is never written) and applied by the same reload as SIGHUP, between
frames, without a restart. Every save is audited.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import ValidationError

from appliance.alarms.events import iso_utc
from appliance.config import CameraConfig, ConfigError, load_config
from appliance.config.console_zones import (
    CameraZoneEdit,
    apply_console_zones,
    read_console_zones,
    write_console_zones,
)
from appliance.config.load import validation_lines
from appliance.web.replies import refusal, worker_of

if TYPE_CHECKING:
    from appliance.web.server import Console


def add_zone_routes(webapp: web.Application, console: Console) -> None:
    r = ZoneRoutes(console)
    webapp.router.add_get("/api/cameras/{camera}/zones", r.read)
    webapp.router.add_put("/api/cameras/{camera}/zones", r.save)
    webapp.router.add_delete("/api/cameras/{camera}/zones", r.revert)


def _dump(zones) -> list[dict[str, Any]]:
    return [z.model_dump(mode="json", exclude_none=True) for z in zones]


class ZoneRoutes:
    def __init__(self, console: Console) -> None:
        self.c = console
        self.app = console.app
        self._lock = threading.Lock()  # one save at a time: read, change, write, apply

    def _camera(self, request: web.Request) -> CameraConfig:
        return worker_of(self.app, request).cfg  # the running camera's settings (a reload updates them)

    async def read(self, request: web.Request) -> web.Response:
        self.c.require(request, "viewer")
        cam = self._camera(request)
        try:
            saved = await self.c.call(read_console_zones, self.app.cfg.state_dir)
        except ConfigError as exc:
            raise refusal(409, str(exc)) from None
        edit = saved.cameras.get(cam.id)
        return web.json_response({
            "camera": cam.id,
            "zones": _dump(cam.zones),
            "source": "console" if edit is not None else "file",
            "saved_by": edit.saved_by if edit else None,
            "saved_at": edit.saved_at if edit else None,
            "editable": self.app.config_path is not None,
        })  # fmt: skip

    async def save(self, request: web.Request) -> web.Response:
        session = self.c.require(request, "admin", change=True)
        cam = self._camera(request)
        try:
            body = await request.json()
            zones = body["zones"]
        except (ValueError, KeyError, TypeError):
            raise refusal(400, 'send {"zones": [...]}') from None
        try:
            edit = CameraZoneEdit.model_validate(
                {"zones": zones, "saved_by": session.user, "saved_at": iso_utc(time.time())}
            )
        except ValidationError as exc:
            errors = validation_lines(exc, "", None, CameraZoneEdit)
            self.c.audit(request, "zones_refused", session.user, f"{cam.id}: {'; '.join(errors)[:300]}")
            raise refusal(400, "; ".join(errors[:5]), errors=errors) from None
        return await self._apply(request, session.user, cam.id, edit)

    async def revert(self, request: web.Request) -> web.Response:
        session = self.c.require(request, "admin", change=True)
        cam = self._camera(request)
        return await self._apply(request, session.user, cam.id, None)

    async def _apply(self, request: web.Request, user: str, camera: str, edit: CameraZoneEdit | None):
        if self.app.config_path is None:
            raise refusal(503, "this appliance runs without a configuration file; edit its zones there")
        try:
            applied = await self.c.call(self._write_and_reload, camera, edit)
        except ConfigError as exc:
            raise refusal(409, f"not saved: {exc}") from None
        except OSError as exc:  # a full or read-only state directory: nothing was applied
            raise refusal(500, f"not saved: cannot write the zones ({exc.strerror or exc})") from None
        what = ", ".join(f"{z['name']} ({z['kind']}, {len(z['polygon'])} corners)" for z in applied) or "none"
        how = "saved" if edit is not None else "back to the configuration file's"
        self.c.audit(request, "zones", user, f"{camera}: {how}: {what}")
        return web.json_response({"ok": True, "camera": camera, "zones": applied,
                                  "source": "console" if edit is not None else "file"})  # fmt: skip

    def _write_and_reload(self, camera: str, edit: CameraZoneEdit | None) -> list[dict[str, Any]]:
        """Check the whole configuration with the new zones, write them, apply them (the SIGHUP
        path); a configuration file that does not load now refuses the save and writes nothing."""
        state_dir = self.app.cfg.state_dir
        with self._lock:
            base = load_config(self.app.config_path, console_zones=False)
            saved = read_console_zones(state_dir)
            if edit is None:
                saved.cameras.pop(camera, None)
            else:
                saved.cameras[camera] = edit
            new = apply_console_zones(base, saved)
            write_console_zones(state_dir, saved)
            self.app.reload(new)
        return _dump(next(w for w in self.app.workers if w.cfg.id == camera).cfg.zones)
