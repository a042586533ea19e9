"""What the appliance says about itself: the retained status payload, the one-line status for the
journal and systemd, per-interval score telemetry, and each camera's state in words (``stalled``
when its loop hangs in one call, the reason behind any state other than streaming)."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from appliance import __version__
from appliance.alarms.events import (
    ActiveModel,
    ApplianceStatus,
    CameraStatus,
    ConsoleStatus,
    ScoreTelemetry,
    SiteModelInfo,
    iso_utc,
)
from appliance.capture.camera import Camera
from appliance.capture.frame_rate import too_slow
from appliance.redact import redact
from appliance.service.camera_worker import STALLED_AFTER_S, CameraWorker
from appliance.service.model_manager import CameraModel

if TYPE_CHECKING:
    from appliance.service.daemon import Appliance


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


class StatusBuilder:
    """Reads the running appliance; changes nothing."""

    def __init__(self, app: Appliance) -> None:
        self.app = app

    def stalled_cameras(self, max_age_s: float) -> list[str]:
        """Cameras whose processing loop has not turned for ``max_age_s`` (a hung pose or scorer call)."""
        now = time.monotonic()
        return [w.cfg.id for w in self.app.workers if w.thread.is_alive() and now - w.heartbeat > max_age_s]

    def camera_state(self, worker: CameraWorker, stalled: list[str] | None = None) -> str:
        """What the camera is doing now; ``stalled`` when its loop has hung in one call."""
        if stalled is None:
            stalled = self.stalled_cameras(STALLED_AFTER_S)
        return "stalled" if worker.cfg.id in stalled else worker.state

    def line(self) -> str:
        parts = []
        stalled = self.stalled_cameras(STALLED_AFTER_S)
        for w in self.app.workers:
            state = self.camera_state(w, stalled)
            if state in ("restarting", "failed", "stalled"):
                parts.append(
                    f"{w.cfg.id}: {state} ({w.last_error or 'no progress'}), {w.stats.events} events"
                )
                continue
            fps = f" {w.stats.fps():.1f} fps" if state == "streaming" else ""
            parts.append(
                f"{w.cfg.id}: {state}{fps}, {w.stats.frames} frames, "
                f"{w.stats.windows} windows, {w.stats.events} events"
            )
        return "; ".join(parts)

    def payload(self) -> dict[str, Any]:
        """The retained status payload (:class:`ApplianceStatus`), as a dict."""
        app = self.app
        cameras = {}
        stalled = self.stalled_cameras(STALLED_AFTER_S)
        for w in app.workers:
            _, source = app.threshold_and_source(w.cfg)
            chosen = app.camera_models.get(w.cfg.id)
            state = self.camera_state(w, stalled)
            streaming = state == "streaming"
            cameras[w.cfg.id] = CameraStatus(
                state=state,
                error=None if streaming else self._camera_error(w, state),
                restarts=w.restarts,
                fps=round(w.stats.fps(), 2) if streaming else 0.0,
                frames=w.stats.frames,
                pose_carried=int(getattr(w.backend, "stats", {}).get("carried", 0)),
                pose_shed=int(getattr(w.backend, "stats", {}).get("shed", 0)),
                tracks=len(w.pipeline.tracker.tracks),
                windows=w.stats.windows,
                events=w.stats.events,
                active_anomalies=sum(d.active for d in list(w.pipeline.detectors.values())),
                threshold=_finite(w.threshold),
                threshold_source=source,
                site_model=chosen.site.id if chosen and chosen.site else None,
                site_model_problem=chosen.problem if chosen else None,
                model_fps=chosen.fps if chosen else None,
                rate_warning=self._rate_warning(w, chosen) if streaming else None,
            )
        status = ApplianceStatus(
            appliance_id=app.cfg.appliance_id,
            version=__version__,
            time=iso_utc(time.time()),
            uptime_s=round(time.monotonic() - app.started_at, 1),
            model=app.model,
            model_install=self._model_install(),
            last_model_update=app.models.last_update_record(),
            runtime=app.runtime_name,
            cameras=cameras,
            console=self._console(),
        )
        return status.model_dump(exclude_none=True)

    def _console(self) -> ConsoleStatus | None:
        app = self.app
        if not app.cfg.web.enabled:
            return None
        if app.console is not None:
            return ConsoleStatus(state="serving", address=app.console.address)
        if app.console_problem is None:
            return ConsoleStatus(state="starting")
        return ConsoleStatus(state="not_started", error=app.console_problem)

    def telemetry(self, interval_s: float) -> list[dict[str, Any]]:
        """One :class:`ScoreTelemetry` per camera for the interval that ends now (and start a new one)."""
        now = time.time()
        out = []
        for w in self.app.workers:
            peaks, w.stats.interval_peaks = w.stats.interval_peaks, {}
            out.append(
                ScoreTelemetry(
                    appliance_id=self.app.cfg.appliance_id,
                    camera_id=w.cfg.id,
                    time=iso_utc(now),
                    time_ms=round(now * 1000),
                    interval_s=interval_s,
                    threshold=_finite(w.threshold),
                    tracks={str(t): round(v, 3) for t, v in peaks.items()},
                    max_score=round(max(peaks.values()), 3) if peaks else None,
                ).model_dump()
            )
        return out

    @staticmethod
    def _rate_warning(w: CameraWorker, chosen: CameraModel | None) -> str | None:
        """A live camera that delivers fewer frames than its model's time base needs (files and
        replays are checked at start from the rate they declare)."""
        if chosen is None or chosen.fps is None or not isinstance(w.source, Camera):
            return None
        if w.source.source.is_file or len(w.stats.frame_times) < 30:
            return None
        got = w.stats.fps()
        if not too_slow(got, chosen.fps):
            return None
        return f"camera delivers {got:.1f} frames per second; the model was learned at {chosen.fps:g}"

    @staticmethod
    def _camera_error(w: CameraWorker, state: str) -> str | None:
        """The reason, in words, behind a state other than streaming."""
        if state == "stalled":
            age = time.monotonic() - w.heartbeat
            return f"processing loop has not turned for {age:.0f} s (a hung pose or scoring call)"
        if state in ("restarting", "failed"):
            when = f"; next attempt at {iso_utc(w.restart_at)}" if w.restart_at else ""
            return f"processing crashed {w.restarts} time(s): {w.last_error}{when}"
        if state in ("reconnecting", "failed", "starting"):
            stats = w.source.stats()
            error = stats.get("last_error")
            return redact(error) if error else None
        return None

    def _model_install(self) -> ActiveModel | None:
        app = self.app
        loaded = app.loaded
        if loaded is None:
            return None
        signer = loaded.bundle.signer
        return ActiveModel(
            version_id=loaded.version_id,
            signer=signer.__dict__ if signer else None,
            allow_unsigned=app.cfg.model.allow_unsigned,
            variant=loaded.variant,
            site_models={
                cam: SiteModelInfo(
                    id=c.site.id,
                    learned_at=str(c.site.provenance.get("learned_at", "")),
                    footage_minutes=float(c.site.provenance.get("footage_minutes", 0.0)),
                    base=f"{c.site.base.get('name')} {c.site.base.get('version')}",
                )
                for cam, c in app.camera_models.items()
                if c.site is not None
            },
        )
