"""The console's HTTP server: aiohttp on its own thread and event loop inside the daemon.

Login with a user of ``appliance web-passwd`` (:mod:`.users`) gives an HttpOnly, SameSite=Strict
session cookie (Secure under TLS) and a CSRF token that every change must carry in
``X-CSRF-Token``; roles gate each route (:data:`appliance.web.sessions.RANK`). Failed logins are
limited per address and per user name, and every login, logout and refusal is audited in
``<state_dir>/web/audit.jsonl``. Responses carry a strict Content-Security-Policy (scripts and
styles from this server only). If the console cannot start (port taken, bad certificate) the
appliance keeps watching and says why in its log and status.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from appliance.alarms.events import iso_utc
from appliance.web.recent import RecentEvents
from appliance.web.replies import refusal
from appliance.web.routes import add_routes
from appliance.web.sessions import COOKIE, LoginLimiter, Session, SessionStore
from appliance.web.users import UserStore

if TYPE_CHECKING:
    from appliance.service.daemon import Appliance

log = logging.getLogger("appliance.web")

SHUTDOWN_S = 2.0
STATIC = Path(__file__).with_name("static")
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


class Console:
    """The console of one appliance: started by the daemon when ``web.enabled``."""

    def __init__(self, app: Appliance) -> None:
        self.app = app
        self.cfg = app.cfg.web
        self.users = UserStore(self.cfg.users_file or app.cfg.state_dir / "web" / "users.json")
        self.sessions = SessionStore(self.cfg.session_minutes * 60.0)
        self.limiter = LoginLimiter(self.cfg.login_attempts_per_minute)
        self.recent = RecentEvents()
        self.audit_path = app.cfg.state_dir / "web" / "audit.jsonl"
        self.tls = self._tls()
        self.error: str | None = None
        self.address = f"{'https' if self.tls else 'http'}://{self._host()}:{self.cfg.port}/"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="web-console", daemon=True)

    # -- life
    def start(self, timeout: float = 10.0) -> bool:
        """Start serving; False (and :attr:`error` says why) if the console could not start."""
        self._thread.start()
        self._started.wait(timeout)
        if self.error:
            log.error("web console not started: %s; the appliance goes on without it", self.error)
            return False
        log.info("web console at %s", self.address)
        return True

    def publish(self, event) -> None:
        """The sink interface: the console remembers recent events for its pages."""
        self.recent.publish(event)

    def close(self) -> None:
        """The sink interface: the daemon closes its sinks when it stops."""
        self.stop()

    def stop(self) -> None:
        loop, runner = self._loop, self._runner
        if loop is None or runner is None or not loop.is_running():
            return
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            # a browser watching the live stream must not hold up the daemon's stop (aiohttp: 60 s)
            self._runner = web.AppRunner(
                self.webapp(), access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_S
            )
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, self.cfg.bind, self.cfg.port, ssl_context=self.tls)
            loop.run_until_complete(site.start())
        except OSError as exc:
            self.error = f"cannot listen on {self.cfg.bind}:{self.cfg.port} ({exc.strerror or exc})"
            self._started.set()
            return
        self._started.set()
        loop.run_forever()
        loop.close()

    def webapp(self) -> web.Application:
        webapp = web.Application(middlewares=[self._headers], client_max_size=64 * 1024 * 1024)
        add_routes(webapp, self)
        webapp.router.add_static("/static/", STATIC, show_index=False)
        return webapp

    # -- request helpers (for routes.py)
    def session_of(self, request: web.Request) -> Session | None:
        return self.sessions.get(request.cookies.get(COOKIE))

    def require(self, request: web.Request, role: str, change: bool = False) -> Session:
        """The request's session if it may act as ``role`` (and, for a change, carries the CSRF token);
        otherwise the refusal is raised (401 without a session, 403 for the role or the token)."""
        session = self.session_of(request)
        if session is None:
            raise refusal(401, "log in first")
        if not session.may(role):
            self.audit(request, "refused", session.user, f"needs role {role}")
            raise refusal(403, f"needs the {role} role")
        if change and request.headers.get("X-CSRF-Token") != session.csrf:
            self.audit(request, "refused", session.user, "missing or wrong CSRF token")
            raise refusal(403, "missing or wrong CSRF token")
        return session

    def audit(self, request: web.Request, action: str, user: str | None, detail: str | None = None) -> None:
        entry = {"time": iso_utc(time.time()), "action": action, "by": user, "path": request.path,
                 "address": request.remote, "detail": detail}  # fmt: skip
        try:
            self.audit_path.parent.mkdir(parents=True, exist_ok=True)
            with self.audit_path.open("a") as fh:
                fh.write(json.dumps(entry) + "\n")
        except OSError as exc:
            log.error("web audit log %s: %s", self.audit_path, exc.strerror or exc)

    def set_cookie(self, response: web.Response, sid: str) -> None:
        response.set_cookie(
            COOKIE, sid, httponly=True, secure=self.tls is not None, samesite="Strict", path="/",
            max_age=int(self.cfg.session_minutes * 60),
        )  # fmt: skip

    async def call(self, fn, *args: Any) -> Any:
        """Run a blocking call of the daemon (a command, a file) off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    # -- internals
    @web.middleware
    async def _headers(self, request: web.Request, handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as refused:  # a refusal carries the same headers as an answer
            _secure_headers(request, refused.headers)
            raise
        _secure_headers(request, response.headers)
        return response

    def _tls(self) -> ssl.SSLContext | None:
        if self.cfg.tls_cert_file is None or self.cfg.tls_key_file is None:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(str(self.cfg.tls_cert_file), str(self.cfg.tls_key_file))
        except (OSError, ssl.SSLError) as exc:
            from appliance.config import ConfigError

            raise ConfigError(f"web: cannot load tls_cert_file/tls_key_file ({exc})") from None
        return ctx

    def _host(self) -> str:
        return "127.0.0.1" if self.cfg.bind in ("0.0.0.0", "") else self.cfg.bind


def _secure_headers(request: web.Request, headers) -> None:
    headers.setdefault("Content-Security-Policy", CSP)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "no-referrer")
    if request.path.startswith("/api/"):
        headers.setdefault("Cache-Control", "no-store")
