"""The console's routes: the page, login, the JSON API it reads, the live skeleton stream, the alarm
actions (through the same command handlers and audit as MQTT ``cmd/ack|shelve|unshelve``) and
Prometheus ``/metrics``.

Roles: ``viewer`` for everything that reads, ``operator`` for the alarm actions. Every change is a
POST carrying the session's CSRF token in ``X-CSRF-Token``.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import ValidationError

from appliance.publish.commands import REQUESTS, describe_errors
from appliance.publish.sinks import mqtt_link
from appliance.service.live_feed import skeleton_layout
from appliance.web.replies import refusal, worker_of
from appliance.web.sessions import COOKIE

if TYPE_CHECKING:
    from appliance.web.server import Console

LIVE_PERIOD_S = 0.1  # at most 10 skeleton frames a second per watcher
ACTIONS = {"ack": "operator", "shelve": "operator", "unshelve": "operator"}


def add_routes(webapp: web.Application, console: Console) -> None:
    r = Routes(console)
    webapp.router.add_get("/", r.index)
    webapp.router.add_post("/api/login", r.login)
    webapp.router.add_post("/api/logout", r.logout)
    webapp.router.add_get("/api/session", r.session)
    webapp.router.add_get("/api/overview", r.overview)
    webapp.router.add_get("/api/cameras/{camera}/live", r.live)
    webapp.router.add_get("/api/cameras/{camera}/heat", r.heat)
    webapp.router.add_get("/api/cameras/{camera}/still", r.still)
    webapp.router.add_get("/api/events", r.events)
    webapp.router.add_get("/api/events/{event_id}", r.event)
    webapp.router.add_post("/api/alarms/{camera}/{point}/{action}", r.alarm_action)
    from appliance.web.calibration_routes import add_calibration_routes
    from appliance.web.model_routes import add_model_routes
    from appliance.web.zone_routes import add_zone_routes

    add_model_routes(webapp, console)
    add_calibration_routes(webapp, console)
    add_zone_routes(webapp, console)
    if console.cfg.metrics:
        from appliance.web.metrics import metrics_handler

        webapp.router.add_get("/metrics", metrics_handler(console.app))


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, allow_nan=False))


class Routes:
    def __init__(self, console: Console) -> None:
        self.c = console
        self.app = console.app

    async def index(self, request: web.Request) -> web.FileResponse:
        from appliance.web.server import STATIC

        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    # -- login
    async def login(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            user, password = str(body["user"])[:64], str(body["password"])[:256]
        except (ValueError, KeyError, TypeError):
            raise refusal(400, "send {user, password}") from None
        keys = (f"addr:{request.remote}", f"user:{user}")
        if self.c.limiter.blocked(*keys):
            self.c.audit(request, "login_refused", user, "too many failed logins; wait a minute")
            raise refusal(429, "too many failed logins; wait a minute")
        role = await self.c.call(self.c.users.check, user, password)
        if role is None:
            self.c.limiter.failed(*keys)
            self.c.audit(request, "login_failed", user)
            raise refusal(401, "wrong user name or password")
        sid, session = self.c.sessions.create(user, role)
        self.c.audit(request, "login", user, role)
        response = _json({"user": user, "role": role, "csrf": session.csrf})
        self.c.set_cookie(response, sid)
        return response

    async def logout(self, request: web.Request) -> web.Response:
        session = self.c.require(request, "viewer", change=True)
        self.c.sessions.drop(request.cookies.get(COOKIE))
        self.c.audit(request, "logout", session.user)
        response = _json({"ok": True})
        response.del_cookie(COOKIE, path="/")
        return response

    async def session(self, request: web.Request) -> web.Response:
        s = self.c.require(request, "viewer")
        return _json({"user": s.user, "role": s.role, "csrf": s.csrf})

    # -- reading
    async def overview(self, request: web.Request) -> web.Response:
        self.c.require(request, "viewer")
        return _json(await self.c.call(self._overview))

    def _overview(self) -> dict[str, Any]:
        app = self.app
        link = mqtt_link(app.sinks)
        cameras = {
            c.id: {"zones": [z.model_dump(mode="json", include={"name", "kind", "polygon"}) for z in c.zones]}
            for c in app.cfg.cameras
        }
        return {
            "status": app.status(),
            "alarms": [
                a.model_dump(exclude_none=True) for a in (app.alarms.messages() if app.alarms else [])
            ],
            "events": self.c.recent.select(limit=20),
            "broker": None
            if link is None
            else {"link": link.health.status(), "outbox": link.outbox.status()},
            "cameras": cameras,
            "skeleton": skeleton_layout(),
        }

    async def live(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: the camera's newest skeletons, at most 10 a second, while logged in."""
        self.c.require(request, "viewer")
        worker = self._worker(request)
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
        )
        await response.prepare(request)
        last = None
        try:
            while self.c.session_of(request) is not None:
                snap = worker.live.snapshot()
                if snap is not None and snap["frame"] != last:
                    last = snap["frame"]
                    await response.write(f"data: {json.dumps(snap)}\n\n".encode())
                await asyncio.sleep(LIVE_PERIOD_S)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return response

    async def heat(self, request: web.Request) -> web.Response:
        self.c.require(request, "viewer")
        grid = self._worker(request).live.heat.grid(time.time())
        return _json({"rows": int(grid.shape[0]), "cols": int(grid.shape[1]), "counts": grid.tolist()})

    async def still(self, request: web.Request) -> web.Response:
        """One camera frame for aiming: admins only, and only with ``web.setup_image`` on; made now,
        never stored, never cached."""
        session = self.c.require(request, "admin")
        if not self.c.cfg.setup_image:
            raise refusal(404, "the setup image is off (web.setup_image)")
        jpeg = await self.c.call(self._worker(request).live.still_jpeg)
        if jpeg is None:
            raise refusal(404, "no frame yet")
        self.c.audit(request, "setup_image", session.user, request.match_info["camera"])
        return web.Response(body=jpeg, content_type="image/jpeg", headers={"Cache-Control": "no-store"})

    async def events(self, request: web.Request) -> web.Response:
        self.c.require(request, "viewer")
        q = request.query
        try:
            since = int(q["since_ms"]) if "since_ms" in q else None
            limit = max(1, min(int(q.get("limit", 100)), 500))
        except ValueError:
            raise refusal(400, "since_ms and limit are integers") from None
        return _json(self.c.recent.select(q.get("camera"), q.get("zone"), since, limit))

    async def event(self, request: web.Request) -> web.Response:
        self.c.require(request, "viewer")
        found = self.c.recent.get(request.match_info["event_id"], request.query.get("type"))
        if not found:
            raise refusal(404, "no such recent event with a skeleton clip")
        return _json(found)

    # -- changing
    async def alarm_action(self, request: web.Request) -> web.Response:
        action = request.match_info["action"]
        if action not in ACTIONS:
            raise refusal(404, f"unknown action {action!r}; use {', '.join(ACTIONS)}")
        session = self.c.require(request, ACTIONS[action], change=True)
        try:
            body = await request.json() if request.can_read_body else {}
            if not isinstance(body, dict):
                raise TypeError
        except (ValueError, TypeError):
            raise refusal(400, "send a JSON object") from None
        fields = {k: body[k] for k in ("comment", "minutes") if k in body}
        req = {
            "camera": request.match_info["camera"],
            "point": request.match_info["point"],
            "by": session.user,
        }
        try:
            args = REQUESTS[action].model_validate({**req, **fields}).arguments()
        except ValidationError as exc:
            raise refusal(400, describe_errors(exc)) from None
        answer = await self.c.call(self.app.command, action, args)
        return _json(answer, 200 if answer.get("ok") else 409)

    def _worker(self, request: web.Request):
        return worker_of(self.app, request)
