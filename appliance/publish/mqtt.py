"""MQTT link for plant SCADA/MES: store-and-forward events, retained status and availability.

Topic contract (``docs/mqtt.md``):

- ``<prefix>/<appliance_id>/available``: retained; ``online`` on every connect, ``offline`` as the
  last will and on a clean stop;
- ``<prefix>/<appliance_id>/status``: retained JSON (:class:`appliance.alarms.events.ApplianceStatus`);
- ``<prefix>/<appliance_id>/<camera>/events``: QoS 1, not retained (:class:`AnomalyEvent`);
- ``<prefix>/<appliance_id>/<camera>/alarm/<point>``: retained JSON, QoS 1, on every change and every
  connect (:class:`appliance.alarms.events.AlarmPointState`);
- ``<prefix>/<appliance_id>/<camera>/scores``: optional score telemetry, QoS 0 (:class:`ScoreTelemetry`).

One thread owns the paho client: it connects (a fresh client per session, so nothing but the outbox
decides what is resent), runs the network loop, and sends the outbox in order with a bounded number
of messages in flight. An event is acknowledged in the outbox only on the broker's PUBACK; whatever
was in flight when a connection dropped is sent again from the outbox on the next one (at least
once: subscribers de-duplicate on ``event_id`` + ``seq``). Connection failures (refused, wrong
password, TLS errors, broker away, a host name that cannot be a host) and any other error in the link
are logged once in words and retried with backoff: the thread never dies. Its state (connected,
connecting, error and why, since when, reconnections) is the ``link`` entry of the retained status.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from appliance.alarms.events import AlarmPointState, AnomalyEvent
from appliance.config import MqttSinkConfig
from appliance.publish.broker import LinkHealth, open_session, tls_context, unexpected_failure
from appliance.publish.commands import CommandChannel
from appliance.publish.outbox import Outbox

log = logging.getLogger("appliance.mqtt")  # the name journals and log filters know


class AlarmSource(Protocol):
    """What the links read of the alarm board (:class:`appliance.alarms.alarm_points.AlarmBoard`)."""

    def messages(self) -> list[AlarmPointState]: ...

    def retired_points(self) -> list[tuple[str, str]]: ...


MAX_IN_FLIGHT = 20
SESSION_OK_S = 5.0  # a session shorter than this (dropped at once, e.g. a duplicate client id) backs off


class MqttLink:
    """The ``mqtt`` sink: events through the outbox, status and availability retained."""

    def __init__(
        self,
        cfg: MqttSinkConfig,
        appliance_id: str,
        state_dir: Path,
        status: Callable[[], dict[str, Any]] | None = None,
        telemetry: Callable[[float], list[dict[str, Any]]] | None = None,
        commands: Callable[[str, dict[str, Any]], dict[str, Any]] | None = None,
        alarms: AlarmSource | None = None,
    ) -> None:
        self.cfg = cfg
        self.base = f"{cfg.topic_prefix.rstrip('/')}/{appliance_id}"
        self.client_id = cfg.client_id or f"appliance-{appliance_id}"
        self.outbox = Outbox(
            Path(state_dir) / "outbox.sqlite",
            cfg.outbox_max_messages,
            cfg.outbox_max_age_s,
            max_bytes=cfg.outbox_max_bytes,
        )
        self._status = status
        self._alarms = alarms  # the alarm points (AlarmBoard), their states retained per point
        self._commands = CommandChannel(cfg, self.base, commands) if commands and cfg.commands else None
        self._telemetry = telemetry if cfg.telemetry_interval_s else None
        self._telemetry_due = time.monotonic() + (cfg.telemetry_interval_s or 0.0)
        self._password = cfg.resolve_password()
        self._tls = tls_context(cfg)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._drain_deadline: float | None = None
        self.connected = threading.Event()
        self.health = LinkHealth(cfg.host, cfg.port, log)
        self._status_due = 0.0
        self.sent = 0
        self.acked = 0
        self.max_replay_latency_s = 0.0
        backlog = self.outbox.depth()
        if backlog:
            log.info("MQTT outbox holds %d message(s) from before; they go out first", backlog)
        self._thread = threading.Thread(target=self._run, name="mqtt-link", daemon=True)
        self._thread.start()

    # -- sink interface -------------------------------------------------------------------------
    def topic_for(self, camera_id: str) -> str:
        return f"{self.base}/{camera_id}/events"

    def publish(self, event: AnomalyEvent) -> None:
        self.outbox.put(self.topic_for(event.camera_id), event.to_json(), event.type, key=event.event_id)
        self._wake.set()

    def publish_alarms(self) -> None:
        """An alarm point changed: republish the retained point states now."""
        self._alarms_due = True
        self._wake.set()

    def publish_status(self) -> None:
        """Ask for a status message now (e.g. a camera changed state)."""
        self._status_due = 0.0
        self._wake.set()

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what the broker will take within ``timeout``, say ``offline``, disconnect.

        What is not acknowledged stays in the outbox on disk for the next start.
        """
        self._drain_deadline = time.monotonic() + timeout
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout + 5.0)
        left = self.outbox.depth()
        if left:
            log.warning(
                "MQTT: %d message(s) not yet acknowledged stay in the outbox for the next start", left
            )
        self.outbox.close()

    # -- connection ---------------------------------------------------------------------------
    def _new_client(self):
        import paho.mqtt.client as mqtt

        protocol = mqtt.MQTTv5 if self.cfg.protocol == "5" else mqtt.MQTTv311
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=protocol)
        if self.cfg.username:
            client.username_pw_set(self.cfg.username, self._password)
        if self._tls is not None:
            client.tls_set_context(self._tls)
        client.will_set(f"{self.base}/available", "offline", qos=1, retain=True)
        client.max_inflight_messages_set(MAX_IN_FLIGHT)
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_command
        return client

    def _on_command(self, client, userdata, message) -> None:
        """``<base>/cmd/<name>`` on the network thread (the alarms' thread): rate, size and queueing
        only, in O(1) without decoding; the rest runs on :class:`CommandChannel`'s workers."""
        if self._commands is not None:
            self._commands.receive(message.topic, message.payload)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        row = self._in_flight.pop(mid, None)
        if row is None:
            return
        msg_id, queued_at = row
        self.outbox.ack(msg_id)
        self.acked += 1
        self.max_replay_latency_s = max(self.max_replay_latency_s, time.time() - queued_at)

    def _connect(self):
        """One connection attempt; returns a connected client or None (and logs why not)."""
        client = self._new_client()
        cfg = self.cfg
        if not open_session(client, cfg.host, cfg.port, cfg.keepalive_s, self.health, self.client_id):
            return None
        self.connected.set()
        return client

    # -- the link thread ----------------------------------------------------------------------
    def _run(self) -> None:
        """Connect, run a session, back off after a failure; only :meth:`close` ends this thread."""
        backoff = 0.5
        while self._drain_deadline is None or time.monotonic() <= self._drain_deadline:
            client = None
            try:
                client = self._connect()
                if client is not None:
                    began = time.monotonic()
                    self._session(client)
                    if self._drain_deadline is not None:
                        break
                    if time.monotonic() - began >= SESSION_OK_S:
                        backoff = 0.5
                        continue  # a session that ran a while: reconnect at once
            except Exception as exc:  # anything: said once in words, retried; the thread must not die
                self.health.error(unexpected_failure(exc, self.outbox.path))
                log.debug("MQTT link error", exc_info=True)
                self._discard(client)
            if client is None:
                self.health.failed_attempts += 1
            try:
                self.outbox.report()
            except Exception:
                log.debug("outbox report failed", exc_info=True)
            if self._drain_deadline is None:
                self._stop.wait(backoff)  # new events do not cut the backoff short; close() does
            else:
                time.sleep(min(backoff, 0.5))
            backoff = min(backoff * 2, self.cfg.reconnect_max_s)
        self.health.set_state("stopped")

    def _discard(self, client) -> None:
        """Drop a client after an error: socket closed, in-flight forgotten (they stay in the outbox)."""
        self.connected.clear()
        self._in_flight = {}
        if client is not None:
            with contextlib.suppress(Exception):  # already gone is fine
                client.disconnect()

    def _session(self, client) -> None:
        self._in_flight: dict[int, tuple[int, float]] = {}
        last_handed = 0
        client.publish(f"{self.base}/available", "online", qos=1, retain=True)
        if self._commands is not None:
            client.subscribe(f"{self.base}/cmd/+", qos=1)
        self._status_due = 0.0
        self._alarms_due = True  # a new session: the broker may have lost the retained states
        while self.connected.is_set():
            draining = self._drain_deadline is not None
            if draining and (
                time.monotonic() > self._drain_deadline
                or (not self._in_flight and not self.outbox.after(last_handed, 1))
            ):
                self._say_offline(client)
                return
            room = MAX_IN_FLIGHT - len(self._in_flight)
            if room > 0:
                for msg in self.outbox.after(last_handed, room):
                    info = client.publish(msg.topic, msg.payload, qos=self.cfg.qos)
                    last_handed = msg.id
                    self.sent += 1
                    if self.cfg.qos == 0:
                        self.outbox.ack(msg.id)
                    else:
                        self._in_flight[info.mid] = (msg.id, msg.created_at)
            if self._commands is not None:  # answers after the events handed above: alarms go first
                self._commands.flush(client)
            if self._alarms is not None and self._alarms_due:
                self._alarms_due = False
                self.health.guarded("alarms", publish_alarm_states, client, self.base, self._alarms)
            if self._status is not None and time.monotonic() >= self._status_due:
                self._status_due = time.monotonic() + self.cfg.status_interval_s
                self.health.guarded("status", self._publish_status, client)
            if self._telemetry is not None and time.monotonic() >= self._telemetry_due:
                interval = self.cfg.telemetry_interval_s or 0.0
                self._telemetry_due = time.monotonic() + interval
                self.health.guarded(
                    "telemetry", publish_telemetry, client, self.base, self._telemetry, interval
                )
            self.outbox.report()
            if client.loop(timeout=0.05) != 0:
                break
        self.connected.clear()
        self._in_flight.clear()  # unacknowledged: still in the outbox, resent next session
        if self._drain_deadline is None:
            self.health.lost()

    def _publish_status(self, client):
        assert self._status is not None
        status = self._status()
        status["outbox"] = self.outbox.status()
        status["link"] = self.health.status()
        return client.publish(f"{self.base}/status", json.dumps(status), qos=1, retain=True)

    def _say_offline(self, client) -> None:
        """Last status (cameras stopped, outbox depth), then ``offline``, then disconnect."""
        if self._status is not None:
            self.health.guarded("status", self._publish_status, client)
        info = client.publish(f"{self.base}/available", "offline", qos=1, retain=True)
        deadline = time.monotonic() + 2.0
        while not info.is_published() and time.monotonic() < deadline and client.loop(timeout=0.05) == 0:
            pass
        client.disconnect()
        self.connected.clear()


def publish_alarm_states(client, base: str, board: AlarmSource) -> None:
    """Every alarm point's state, retained at QoS 1: a SCADA that (re)connects sees them all at once.
    A retired point's (its zone deleted) retained state is taken down with an empty retained message."""
    for point in board.messages():
        topic = f"{base}/{point.camera_id}/alarm/{point.point}"
        client.publish(topic, point.model_dump_json(exclude_none=True), qos=1, retain=True)
    for camera, point in board.retired_points():
        client.publish(f"{base}/{camera}/alarm/{point}", b"", qos=1, retain=True)


def publish_telemetry(client, base: str, telemetry: Callable[[float], list[dict]], interval: float) -> None:
    """Score telemetry: a reading, not a record (QoS 0, not stored in the outbox)."""
    for item in telemetry(interval):
        client.publish(f"{base}/{item['camera_id']}/scores", json.dumps(item), qos=0)
