"""Where events go: one interface, three sinks (stdout, a JSON-lines file, MQTT).

The MQTT sink publishes events at QoS 1 on ``<prefix>/<appliance_id>/<camera>/events`` and keeps a
retained ``<prefix>/<appliance_id>/available`` topic: ``online`` on every connect, ``offline`` as
the last will and on a clean stop. paho-mqtt reconnects on its own; what the client has not
delivered when the process exits is the outbox's business (see the MQTT issue).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Protocol, TextIO

from appliance.config import JsonlSinkConfig, MqttSinkConfig, SinkConfig, StdoutSinkConfig
from appliance.errors import ApplianceError
from appliance.events import AnomalyEvent

log = logging.getLogger(__name__)


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


class MqttSink:
    """Events to an MQTT broker (paho-mqtt 2, MQTT 3.1.1), QoS 1, with a last-will availability topic."""

    def __init__(self, cfg: MqttSinkConfig, appliance_id: str) -> None:
        import paho.mqtt.client as mqtt

        self.cfg = cfg
        self.base = f"{cfg.topic_prefix.rstrip('/')}/{appliance_id}"
        self.available_topic = f"{self.base}/available"
        self._connected = threading.Event()
        self._lock = threading.Lock()
        self._pending: list = []  # MQTTMessageInfo of QoS>0 messages not yet acknowledged
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=cfg.client_id or f"appliance-{appliance_id}",
            protocol=mqtt.MQTTv311,
        )
        if cfg.username:
            self._client.username_pw_set(cfg.username, cfg.resolve_password())
        self._client.will_set(self.available_topic, "offline", qos=1, retain=True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.reconnect_delay_set(1, 30)
        self._client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive_s)
        self._client.loop_start()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error(
                "MQTT broker %s:%s refused the connection: %s", self.cfg.host, self.cfg.port, reason_code
            )
            return
        log.info("connected to MQTT broker %s:%s", self.cfg.host, self.cfg.port)
        client.publish(self.available_topic, "online", qos=1, retain=True)
        self._connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connected.clear()
        if reason_code != 0:
            log.warning("MQTT connection lost (%s); reconnecting", reason_code)

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def topic_for(self, camera_id: str) -> str:
        return f"{self.base}/{camera_id}/events"

    def publish(self, event: AnomalyEvent) -> None:
        info = self._client.publish(self.topic_for(event.camera_id), event.to_json(), qos=self.cfg.qos)
        with self._lock:
            self._pending = [i for i in self._pending if not i.is_published()]
            if self.cfg.qos > 0:
                self._pending.append(info)

    def publish_raw(self, topic: str, payload: str | bytes, retain: bool = False) -> None:
        self._client.publish(f"{self.base}/{topic}", payload, qos=1, retain=retain)

    def close(self, timeout: float = 5.0) -> None:
        """Wait (up to ``timeout``) for unacknowledged events, then say ``offline`` and disconnect."""
        deadline = time.monotonic() + timeout
        with self._lock:
            pending, self._pending = self._pending, []
        for info in pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._connected.is_set():
                break
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(remaining)
        lost = sum(1 for i in pending if not i.is_published())
        if lost:
            log.warning("MQTT: %d event(s) not acknowledged by the broker at shutdown", lost)
        if self._connected.is_set():
            info = self._client.publish(self.available_topic, "offline", qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout)
        self._client.disconnect()
        self._client.loop_stop()


def open_sinks(configs: list[SinkConfig], appliance_id: str) -> list[EventSink]:
    sinks: list[EventSink] = []
    for cfg in configs:
        if isinstance(cfg, StdoutSinkConfig):
            sinks.append(StdoutSink(cfg.format))
        elif isinstance(cfg, JsonlSinkConfig):
            sinks.append(JsonlSink(cfg.path))
        elif isinstance(cfg, MqttSinkConfig):
            sinks.append(MqttSink(cfg, appliance_id))
    return sinks
