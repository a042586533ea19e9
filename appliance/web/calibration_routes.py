"""Calibration and learning from the console: an admin starts the ``recalibrate`` or ``learn``
command of the running service for a camera (the same commands as MQTT ``cmd/recalibrate`` and
``cmd/learn``: live footage from the running pipeline, the threshold or site model saved and applied
between frames), follows its progress, and sees the report's chart. A site model can be rolled back
from the models page.

Both commands block for the footage's minutes (learning then fits for a few seconds more), so each
runs on a thread of its own, one per camera at a time; the page polls the job. The chart is the
report's ``chart`` data (``calibration/report.py``), drawn in the browser with uPlot.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import ValidationError

from appliance.alarms.threshold_store import thresholds_path
from appliance.errors import ApplianceError
from appliance.publish.commands import REQUESTS, describe_errors
from appliance.web.replies import refusal, worker_of

if TYPE_CHECKING:
    from appliance.web.server import Console


JOBS = {"calibrate": "recalibrate", "learn": "learn"}  # route -> the service command it runs


@dataclass
class LiveJob:
    """One calibration or learning run on a camera, as the page follows it."""

    kind: str  # calibrate or learn
    camera: str
    minutes: float
    target_alarms_per_hour: float
    by: str
    started: float = field(default_factory=time.time)
    state: str = "running"  # running, done, failed
    result: dict[str, Any] | None = None
    error: str | None = None

    def view(self) -> dict[str, Any]:
        out = asdict(self)
        span = self.minutes * 60.0
        out["progress"] = 1.0 if self.state != "running" else min(0.99, (time.time() - self.started) / span)
        return out


def add_calibration_routes(webapp: web.Application, console: Console) -> None:
    r = CalibrationRoutes(console)
    webapp.router.add_post("/api/cameras/{camera}/calibrate", r.start)
    webapp.router.add_post("/api/cameras/{camera}/learn", r.start)
    webapp.router.add_get("/api/cameras/{camera}/calibration", r.status)
    webapp.router.add_post("/api/cameras/{camera}/site-model/rollback", r.rollback_site_model)


class CalibrationRoutes:
    def __init__(self, console: Console) -> None:
        self.c = console
        self.app = console.app
        self.jobs: dict[str, LiveJob] = {}
        self._lock = threading.Lock()

    async def start(self, request: web.Request) -> web.Response:
        session = self.c.require(request, "admin", change=True)
        kind = request.path.rsplit("/", 1)[-1]
        camera = worker_of(self.app, request).cfg.id
        run = self.app.commands.handlers.get(JOBS[kind])
        if run is None:
            raise refusal(503, f"{JOBS[kind]} is not available in this process")
        try:
            body = await request.json() if request.can_read_body else {}
            args = REQUESTS[JOBS[kind]].model_validate({**body, "camera": camera}).arguments()
        except (ValueError, TypeError):
            raise refusal(400, "send a JSON object") from None
        except ValidationError as exc:
            raise refusal(400, describe_errors(exc)) from None
        with self._lock:
            if (job := self.jobs.get(camera)) is not None and job.state == "running":
                busy = f"camera {camera} is {'being calibrated' if job.kind == 'calibrate' else 'learning'}"
                raise refusal(409, busy)
            job = self.jobs[camera] = LiveJob(
                kind, camera, args["minutes"], args["target_alarms_per_hour"], session.user
            )
        self.c.audit(request, kind, session.user, f"{camera}: {args['minutes']:g} min, started")
        threading.Thread(
            target=self._run, args=(job, run, args, request), name=f"{kind}-{camera}", daemon=True
        ).start()
        return web.json_response({"ok": True, "job": job.view()}, status=202)

    def _run(self, job: LiveJob, run, args: dict[str, Any], request: web.Request) -> None:
        try:
            answer = run(self.app, args)
        except ApplianceError as exc:
            answer = {"ok": False, "error": str(exc)}
        except Exception as exc:  # the thread must not die silently: the page says what happened
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        job.state = "done" if answer.get("ok") else "failed"
        job.result, job.error = (answer, None) if answer.get("ok") else (None, answer.get("error"))
        made = f"site model {answer.get('site_model')}, " if answer.get("site_model") else ""
        outcome = f"{made}threshold {answer.get('threshold')}" if answer.get("ok") else f"failed: {job.error}"
        self.c.audit(request, job.kind, job.by, f"{job.camera}: {outcome}")

    async def rollback_site_model(self, request: web.Request) -> web.Response:
        """The camera goes back to its previous site model, or to the bundle alone."""
        session = self.c.require(request, "admin", change=True)
        camera = worker_of(self.app, request).cfg.id
        try:
            by = f"from the console by {session.user}"
            now = await self.c.call(self.app.sites.rollback_logged, camera, self.app.store.log, by)
        except ApplianceError as exc:
            self.c.audit(request, "site_model_rollback", session.user, f"{camera}: refused: {exc}")
            raise refusal(409, str(exc)) from None
        await self.c.call(self.app.poll_site_models)  # applied between frames, as after `appliance learn`
        detail = f"{camera}: now {now or 'the bundle alone'}"
        self.c.audit(request, "site_model_rollback", session.user, detail)
        return web.json_response({"ok": True, "camera": camera, "site_model": now})

    async def status(self, request: web.Request) -> web.Response:
        self.c.require(request, "viewer")
        camera = request.match_info["camera"]
        job = self.jobs.get(camera)
        report = await self.c.call(self._report, camera)
        return web.json_response({"job": job.view() if job else None, "report": report})

    def _report(self, camera: str) -> dict[str, Any] | None:
        path = thresholds_path(self.app.cfg.state_dir).parent / f"{camera}-report.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None
