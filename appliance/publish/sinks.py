"""Where events go: one interface, three sinks (stdout, a JSON-lines file, MQTT).

The MQTT sink (:class:`appliance.publish.mqtt.MqttLink`) stores every event on disk before publishing it and
keeps the retained availability and status topics; see ``docs/mqtt.md``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TextIO

from appliance.alarms.events import AnomalyEvent
from appliance.config import (
    JsonlSinkConfig,
    MqttSinkConfig,
    SinkConfig,
    SparkplugSinkConfig,
    StdoutSinkConfig,
)
from appliance.errors import ApplianceError

if TYPE_CHECKING:
    from appliance.publish.mqtt import AlarmSource

log = logging.getLogger("appliance.sinks")  # the name journals and log filters know


class EventSink(Protocol):
    def publish(self, event: AnomalyEvent) -> None: ...

    def close(self) -> None: ...


class StdoutSink:
    """One line per event for a person watching a terminal (or the raw JSON with ``format: json``)."""

    def __init__(self, fmt: str = "text", stream: TextIO | None = None) -> None:
        self.fmt = fmt
        self.stream = stream or sys.stdout

    def publish(self, event: AnomalyEvent) -> None:
        if self.fmt == "json":
            line = event.to_json()
        else:
            line = (
                f"{event.time} {event.camera_id} track {event.track_id}: anomaly {event.type:<6} "
                f"score {event.score:.1f} (peak {event.peak_score:.1f}, threshold {event.threshold:.1f}) "
                f"id {event.event_id[:8]}"
            )
            if event.end_reason:
                line += f" [{event.end_reason}]"
        print(line, file=self.stream, flush=True)

    def close(self) -> None:
        pass


class JsonlSink:
    """Appends each event as one JSON line and flushes it, so a crash loses at most the line in flight."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("a", encoding="utf-8")
        except OSError as exc:
            raise ApplianceError(f"jsonl sink: cannot open {self.path} ({exc.strerror})") from None

    def publish(self, event: AnomalyEvent) -> None:
        self._fh.write(event.to_json() + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def open_sinks(
    configs: list[SinkConfig],
    appliance_id: str,
    state_dir: Path,
    status: Callable[[], dict] | None = None,
    thresholds: dict[str, float] | None = None,
    model_version: str = "",
    telemetry: Callable[[float], list[dict]] | None = None,
    commands: Callable[[str, dict], dict] | None = None,
    alarms: AlarmSource | None = None,
) -> list[EventSink]:
    """The configured sinks; ``thresholds`` (camera id -> threshold) name the cameras for Sparkplug."""
    sinks: list[EventSink] = []
    for cfg in configs:
        if isinstance(cfg, StdoutSinkConfig):
            sinks.append(StdoutSink(cfg.format))
        elif isinstance(cfg, JsonlSinkConfig):
            sinks.append(JsonlSink(cfg.path))
        elif isinstance(cfg, MqttSinkConfig):
            from appliance.publish.mqtt import MqttLink

            sinks.append(MqttLink(cfg, appliance_id, state_dir, status, telemetry, commands, alarms))
        elif isinstance(cfg, SparkplugSinkConfig):
            from appliance.publish.sparkplug.node import SparkplugNode

            cams = list(thresholds or {})
            sinks.append(
                SparkplugNode(
                    cfg, appliance_id, cams, model_version, state_dir=state_dir, thresholds=thresholds,
                    alarms=alarms, commands=commands,
                )
            )  # fmt: skip
    return sinks


def mqtt_link(sinks: list[EventSink]):
    """The MQTT sink among ``sinks`` (its ``health`` and ``outbox``), or None without one."""
    return next((s for s in sinks if hasattr(s, "health") and hasattr(s, "outbox")), None)
