"""Prometheus ``/metrics`` for the plant's existing Prometheus (prometheus-client): one collector that
reads the daemon's state when scraped, so nothing is counted twice and the camera threads pay
nothing beyond the latency histograms they keep anyway (:mod:`appliance.service.latency`).

Per camera: fps, frames, dropped frames (pose shed), people tracked, the highest current score and
the threshold, pose and scoring latency histograms; alarm points by state; the MQTT outbox's depth
and drops and the broker link; the model as an info metric; the process's CPU and RSS.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.registry import Collector

from appliance.publish.sinks import mqtt_link

if TYPE_CHECKING:
    from appliance.service.daemon import Appliance

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
ALARM_STATES = (
    "normal", "active_unacknowledged", "active_acknowledged", "returned_unacknowledged", "shelved",
    "out_of_service",
)  # fmt: skip


class ApplianceCollector(Collector):
    """The appliance's metrics, read from the running daemon at scrape time."""

    def __init__(self, app: Appliance) -> None:
        self.app = app

    def collect(self):
        app = self.app
        g = {
            "fps": _per_camera(GaugeMetricFamily, "camera_fps", "Frames processed per second (recent)."),
            "people": _per_camera(GaugeMetricFamily, "camera_people", "People tracked now."),
            "score": _per_camera(
                GaugeMetricFamily, "camera_max_score", "Highest window score, newest frame."
            ),
            "threshold": _per_camera(GaugeMetricFamily, "camera_threshold", "Alarm threshold in force."),
            "up": _per_camera(GaugeMetricFamily, "camera_streaming", "1 while the camera streams."),
        }
        frames = _per_camera(CounterMetricFamily, "camera_frames", "Frames processed.")
        dropped = _per_camera(CounterMetricFamily, "camera_dropped_frames", "Frames the pose stage shed.")
        events = _per_camera(CounterMetricFamily, "camera_events", "Anomaly events raised.")
        hists = {
            "pose": _per_camera(HistogramMetricFamily, "pose_latency_seconds", "Pose time per frame."),
            "scoring": _per_camera(
                HistogramMetricFamily, "scoring_latency_seconds", "Tracking, scoring, detection per frame."
            ),
        }
        for w in list(app.workers):
            cam = w.cfg.id
            scores = list(w.live.scores().values())
            g["fps"].add_metric([cam], round(w.stats.fps(), 3))
            g["people"].add_metric([cam], len(w.pipeline.tracker.tracks))
            g["score"].add_metric([cam], max(scores) if scores else math.nan)
            g["threshold"].add_metric([cam], w.threshold if math.isfinite(w.threshold) else math.nan)
            g["up"].add_metric([cam], 1.0 if w.state == "streaming" else 0.0)
            frames.add_metric([cam], w.stats.frames)
            dropped.add_metric([cam], int(getattr(w.backend, "stats", {}).get("shed", 0)))
            events.add_metric([cam], w.stats.events)
            for name, hist in (("pose", w.stats.pose_latency), ("scoring", w.stats.scoring_latency)):
                buckets, _, total_ms = hist.cumulative()
                hists[name].add_metric(
                    [cam],
                    [("+Inf" if math.isinf(le) else f"{le / 1000:g}", n) for le, n in buckets],
                    total_ms / 1000,
                )
        yield from g.values()
        yield from (frames, dropped, events, *hists.values())

        alarms = GaugeMetricFamily(
            "appliance_alarm_points", "Alarm points by state.", labels=["camera", "state"]
        )
        counts = Counter((a.camera_id, a.state) for a in (app.alarms.messages() if app.alarms else []))
        for cam in [w.cfg.id for w in app.workers]:
            for state in ALARM_STATES:
                alarms.add_metric([cam, state], counts.get((cam, state), 0))
        yield alarms

        link = mqtt_link(app.sinks)
        if link is not None:
            out = link.outbox.status()
            yield GaugeMetricFamily(
                "appliance_outbox_depth", "Events waiting on disk for the broker.", value=out["depth"]
            )
            yield CounterMetricFamily(
                "appliance_outbox_dropped", "Messages the full outbox dropped.", value=out["dropped"]
            )
            yield GaugeMetricFamily(
                "appliance_broker_link_up", "1 while the MQTT link is connected.",
                value=1.0 if link.health.state == "connected" else 0.0,
            )  # fmt: skip
        model = InfoMetricFamily("appliance_model", "The scoring model in force.")
        ref = app.model
        model.add_metric([], {"name": ref.name, "version": ref.version, "runtime": app.runtime_name or ""})
        yield model


def _per_camera(family, name: str, text: str):
    return family(f"appliance_{name}", text, labels=["camera"])


def metrics_handler(app: Appliance):
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ApplianceCollector(app))
    ProcessCollector(registry=registry)  # process_cpu_seconds_total, process_resident_memory_bytes

    async def handler(request: web.Request) -> web.Response:
        import asyncio

        body = await asyncio.get_running_loop().run_in_executor(None, generate_latest, registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    return handler
