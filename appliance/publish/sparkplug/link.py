"""The edge node's MQTT sessions: one thread connects (TLS as on the JSON link), waits for the primary
host, sends what the node queues, and starts over when the broker or the host goes away.

One session, in order: a fresh paho client (clean session, MQTT 3.1.1) with the NDEATH will of the
session's ``bdSeq``; CONNECT; subscriptions to NCMD, DCMD and, with a primary host, its STATE (QoS 1);
births at once without a primary host, or when its STATE says online; then, every turn of the loop,
the node's queued messages (in ``seq`` order), the next batch of stored history, and the network.
The session ends when the connection drops, when the primary host's STATE says offline (the node
publishes its NDEATH and disconnects, Sparkplug 3.0 5.x: the host may be on another server), or on
close (DDEATHs and the NDEATH, then DISCONNECT). Only this thread touches the paho client.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import paho.mqtt.client as mqtt

from appliance.publish.broker import LinkHealth, open_session

if TYPE_CHECKING:
    import ssl

    from appliance.config.sparkplug import SparkplugSinkConfig
    from appliance.publish.sparkplug.node import SparkplugNode

log = logging.getLogger("appliance.sparkplug.node")

NAMESPACE = "spBv1.0"
LOOP_S = 0.05
SESSION_OK_S = 5.0
BACKOFF_MAX_S = 30.0


@dataclass(frozen=True)
class Topics:
    """The edge node's topics: ``spBv1.0/<group>/<kind>/<node>[/<camera>]``."""

    group_id: str
    node_id: str

    def node(self, kind: str) -> str:
        """NBIRTH, NDATA, NDEATH, NCMD."""
        return f"{NAMESPACE}/{self.group_id}/{kind}/{self.node_id}"

    def device(self, kind: str, camera_id: str) -> str:
        """DBIRTH, DDATA, DDEATH, DCMD."""
        return f"{NAMESPACE}/{self.group_id}/{kind}/{self.node_id}/{camera_id}"

    def data(self, device: str | None) -> str:
        """NDATA for the node (None), DDATA for a camera."""
        return self.node("NDATA") if device is None else self.device("DDATA", device)


class SparkplugLink:
    """The thread that owns the node's MQTT client (see the module doc)."""

    def __init__(
        self, node: SparkplugNode, cfg: SparkplugSinkConfig, password: str | None, tls: ssl.SSLContext | None
    ) -> None:
        self.node, self.cfg, self._password, self._tls = node, cfg, password, tls
        self.client: mqtt.Client | None = None
        self.health = LinkHealth(cfg.host, cfg.port, log, "Sparkplug", "metric changes are stored on disk")
        self._stop = threading.Event()
        self._deadline = 0.0
        self._leave = False  # the primary host went offline: NDEATH, then a new session
        self._waiting_said = False
        self._in_flight: dict[int, int] = {}  # paho mid -> history record
        self._thread = threading.Thread(target=self._run, name="sparkplug-link", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Say goodbye (within ``timeout``) and end the thread."""
        self._deadline = time.monotonic() + timeout
        self._stop.set()
        self._thread.join(timeout + 5.0)

    # -- the thread
    def _run(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            client = None
            try:
                client = self._connect()
                if client is not None:
                    began = time.monotonic()
                    self._session(client)
                    if time.monotonic() - began >= SESSION_OK_S:
                        backoff = 1.0
            except Exception as exc:  # said in words, retried: the thread must not die
                self.health.error(f"{type(exc).__name__}: {exc}")
                log.debug("Sparkplug link error", exc_info=True)
            finally:
                if client is not None:
                    self._end(client)
            if not self._stop.is_set():
                self._stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
        self.health.set_state("stopped")

    def _connect(self) -> mqtt.Client | None:
        """One connection attempt; a connected client or None (the reason logged once)."""
        cfg = self.cfg
        client_id = cfg.client_id or f"sparkplug-{self.node.group_id}-{self.node.node_id}"
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        if cfg.username:
            client.username_pw_set(cfg.username, self._password)
        if self._tls is not None:
            client.tls_set_context(self._tls)
        client.will_set(self.node.topics.node("NDEATH"), self.node.ndeath(), qos=1, retain=False)
        if open_session(client, cfg.host, cfg.port, cfg.keepalive_s, self.health, client_id, self._stop):
            return client
        self.health.failed_attempts += 1
        return None

    def _session(self, client: mqtt.Client) -> None:
        node, host = self.node, self.node.host
        self.client, self._leave, self._waiting_said = client, False, False
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        subs = [(node.topics.node("NCMD"), 1), (f"{node.topics.device('DCMD', '')}#", 1)]
        if host is not None:
            host.online = False  # to be confirmed by this server's retained STATE
            subs.append((host.topic, 1))
        client.subscribe(subs)
        if host is None:
            node.births()
        waited = time.monotonic()
        while True:
            if self._stop.is_set():
                self._goodbye(client)
                return
            if self._leave:
                node.goodbye(devices=False)
                self._settle(client, self._send(client), time.monotonic() + 2.0)
                client.disconnect()
                return
            self._send(client)
            if node.wait_online(0):
                node.flush_history()
            elif host is not None and not self._waiting_said and time.monotonic() - waited > 2.0:
                log.warning(
                    "Sparkplug: connected; waiting for primary host %s to be online (no STATE online=true)"
                    "; metric changes are stored", host.host_id,
                )  # fmt: skip
                self._waiting_said = True
            if client.loop(timeout=LOOP_S) != mqtt.MQTT_ERR_SUCCESS:
                if not self._stop.is_set():
                    self.health.lost()
                return

    def _send(self, client: mqtt.Client) -> mqtt.MQTTMessageInfo | None:
        """Hand the node's queued messages to paho; the info of the last QoS 1 one (an NDEATH)."""
        last = None
        for out in self.node.take_outgoing():
            info = client.publish(out.topic, out.payload, qos=out.qos, retain=False)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                if out.record is not None:
                    self.node.history.put(*out.record)
                continue
            if out.stored is not None:  # paho may have written it (and called on_publish) already
                if info.is_published():
                    self.node.history.sent(out.stored)
                else:
                    self._in_flight[info.mid] = out.stored
            if out.qos:
                last = info
        return last

    def _settle(self, client: mqtt.Client, info: mqtt.MQTTMessageInfo | None, deadline: float) -> bool:
        """Run the network until the broker acknowledged ``info`` (or ``deadline``); whether it did."""
        while info is not None and not info.is_published() and time.monotonic() < deadline:
            if client.loop(timeout=LOOP_S) != mqtt.MQTT_ERR_SUCCESS:
                break
        return info is None or info.is_published()

    def _goodbye(self, client: mqtt.Client) -> None:
        if self.node.goodbye():
            ndeath = self._send(client)
            if not self._settle(client, ndeath, max(self._deadline, time.monotonic() + 0.5)):
                log.warning("Sparkplug: the broker did not acknowledge the NDEATH in time")
        client.disconnect()

    def _end(self, client: mqtt.Client) -> None:
        self.client = None
        self._in_flight.clear()  # not written: stays in the history for the next session
        self.node.session_ended()
        if client.is_connected():
            client.disconnect()
        client.loop(timeout=0.01)

    # -- paho callbacks (this thread, inside client.loop)
    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        stored = self._in_flight.pop(mid, None)
        if stored is not None:
            self.node.history.sent(stored)

    def _on_message(self, client, userdata, msg) -> None:
        node, host = self.node, self.node.host
        parts = msg.topic.split("/")
        if host is not None and msg.topic == host.topic:
            verdict = host.on_state(msg.topic, msg.payload)
            if verdict == "online" and not node.wait_online(0):
                log.info("Sparkplug: primary host %s is online; births (%d stored message(s) follow)",
                         host.host_id, node.history.depth())  # fmt: skip
                node.births()
            elif verdict == "offline" and node.wait_online(0):
                log.warning(
                    "Sparkplug: primary host %s went offline; NDEATH, reconnecting, storing meanwhile",
                    host.host_id,
                )
                self._leave = True
        elif len(parts) >= 4 and parts[2] in ("NCMD", "DCMD"):
            node.on_command(parts[2], parts[4] if len(parts) > 4 else None, msg.payload)
