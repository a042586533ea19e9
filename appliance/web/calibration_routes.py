"""Calibration from the console: an admin starts the ``recalibrate`` command of the running service
for a camera (the same command MQTT ``cmd/recalibrate`` runs: live footage from the running pipeline,
the threshold saved and applied between frames), watches its progress, and sees the report's chart.

The command blocks for the footage's minutes, so it runs on a thread of its own, one per camera at a
time; the page polls the job. The chart is the report's ``chart`` data (``calibration/report.py``),
drawn in the browser with uPlot.
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

if TYPE_CHECKING:
    from appliance.web.server import Console


@dataclass
class CalibrationJob:
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
    webapp.router.add_get("/api/cameras/{camera}/calibration", r.status)


class CalibrationRoutes:
    def __init__(self, console: Console) -> None:
        self.c = console
        self.app = console.app
        self.jobs: dict[str, CalibrationJob] = {}
        self._lock = threading.Lock()

    async def start(self, request: web.Request) -> web.Response:
        session = self.c.require(request, "admin", change=True)
        camera = request.match_info["camera"]
        if camera not in {w.cfg.id for w in self.app.workers}:
            return web.json_response({"ok": False, "error": f"no camera {camera!r}"}, status=404)
        run = self.app.commands.handlers.get("recalibrate")
        if run is None:
            return web.json_response(
                {"ok": False, "error": "calibration is not available in this process"}, status=503
            )
        try:
            body = await request.json() if request.can_read_body else {}
            args = REQUESTS["recalibrate"].model_validate({**body, "camera": camera}).arguments()
        except (ValueError, TypeError):
            return web.json_response({"ok": False, "error": "send a JSON object"}, status=400)
        except ValidationError as exc:
            return web.json_response({"ok": False, "error": describe_errors(exc)}, status=400)
        with self._lock:
            if (job := self.jobs.get(camera)) is not None and job.state == "running":
                return web.json_response(
                    {"ok": False, "error": f"camera {camera} is being calibrated"}, status=409
                )
            job = self.jobs[camera] = CalibrationJob(
                camera, args["minutes"], args["target_alarms_per_hour"], session.user
            )
        self.c.audit(request, "calibrate", session.user, f"{camera}: {args['minutes']:g} min, started")
        threading.Thread(
            target=self._run, args=(job, run, args, request), name=f"calibrate-{camera}", daemon=True
        ).start()
        return web.json_response({"ok": True, "job": job.view()}, status=202)

    def _run(self, job: CalibrationJob, run, args: dict[str, Any], request: web.Request) -> None:
        try:
            answer = run(self.app, args)
        except ApplianceError as exc:
            answer = {"ok": False, "error": str(exc)}
        except Exception as exc:  # the thread must not die silently: the page says what happened
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        job.state = "done" if answer.get("ok") else "failed"
        job.result, job.error = (answer, None) if answer.get("ok") else (None, answer.get("error"))
        outcome = f"threshold {answer.get('threshold')}" if answer.get("ok") else f"failed: {job.error}"
        self.c.audit(request, "calibrate", job.by, f"{job.camera}: {outcome}")

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
