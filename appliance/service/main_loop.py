"""The daemon's main thread: the systemd watchdog (pinged only while every camera's loop turns), the
status line, start-up health for the boot counter, reloads on SIGHUP, and polling for calibrations,
site models and model updates. Cameras run in their own threads meanwhile."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from appliance.service.alarm_service import out_of_service
from appliance.service.systemd import Notifier

if TYPE_CHECKING:
    from appliance.service.daemon import Appliance

CALIBRATION_POLL_S = 2.0  # how soon a recalibration reaches the running daemon

log = logging.getLogger("appliance")


def run_until_stopped(
    app: Appliance,
    stop: threading.Event,
    status_interval_s: float = 30.0,
    notifier: Notifier | None = None,
    reload: Callable[[], None] | None = None,
    reload_requested: threading.Event | None = None,
) -> None:
    """Block until every camera's stream ended or ``stop`` is set: status lines, watchdog pings
    (only while every camera's processing loop keeps turning), reloads on request."""
    next_status = time.monotonic() + status_interval_s
    next_check = time.monotonic() + CALIBRATION_POLL_S
    ping_every = notifier.watchdog_interval_s if notifier is not None else None
    next_ping = time.monotonic()
    stalled_logged = False
    healthy_at = app.started_at + app.cfg.model.healthy_after_s
    while any(w.thread.is_alive() for w in app.workers):
        if stop.wait(0.2):
            break
        now = time.monotonic()
        if app.models.boot.version is not None and now >= healthy_at:
            app.models.boot.healthy()
        if reload_requested is not None and reload_requested.is_set() and reload is not None:
            reload_requested.clear()
            reload()
        if app.alarms is not None:
            app.alarms.tick(out_of_service(app))  # shelves that expire, cameras or zones out of service
        if ping_every is not None and now >= next_ping:
            next_ping = now + ping_every
            stalled = app.stalled_cameras(max_age_s=max(2.0, 2 * ping_every))
            if not stalled:
                notifier.watchdog()
                stalled_logged = False
            elif not stalled_logged:
                log.error("pipeline stalled on camera(s) %s: watchdog pings withheld", ", ".join(stalled))
                stalled_logged = True
                app.status_changed()
        if now >= next_status:
            log.info("status %s", app.status_line())
            if notifier is not None:
                notifier.status(app.status_line())
            next_status += status_interval_s
        if time.monotonic() >= next_check or app.models.failure_pending:
            next_check = time.monotonic() + CALIBRATION_POLL_S
            app.reload_calibration_if_changed()
            app.poll_site_models()
            app.poll_model_store()
    app.models.boot.healthy()  # a clean stop is not a crash
