"""The Sparkplug B edge node: the appliance as an edge node, each camera a device (Sparkplug 3.0).

Topics are ``spBv1.0/<group>/NBIRTH|NDATA|NDEATH/<node>`` and
``spBv1.0/<group>/DBIRTH|DDATA|DDEATH/<node>/<camera>``. On every MQTT session (clean session,
MQTT 3.1.1) the node registers an NDEATH will carrying ``bdSeq``, subscribes to its NCMD topic,
then publishes an NBIRTH (seq 0, the same ``bdSeq``) and one DBIRTH per camera with every metric's
current value. After that, NDATA/DDATA carry only the metrics that changed, and ``seq`` goes up by
one per message (mod 256). ``bdSeq`` goes up by one per MQTT session and, given a state directory,
survives restarts, so a host can tell a late NDEATH of an old session from the current one.
An NCMD setting ``Node Control/Rebirth`` to true makes the node publish its births again.

Births and data are QoS 0 and never retained, as the specification prescribes: while the broker
is unreachable nothing is queued, the metrics just keep their latest values for the next births.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from google.protobuf.message import DecodeError

from appliance.alarms.events import AnomalyEvent
from appliance.publish.sparkplug import SparkplugError
from appliance.publish.sparkplug.bdseq import BdSeqCounter
from appliance.publish.sparkplug.config import SparkplugSinkConfig, _sparkplug_id
from appliance.publish.sparkplug.metrics import (
    BDSEQ,
    DEVICE_METRICS,
    NODE_METRICS,
    REBIRTH,
    MetricSet,
    anomaly_values,
    now_ms,
)
from appliance.publish.sparkplug.payload import DataType, MetricValue, Payload, make_metric

log = logging.getLogger("appliance.sparkplug.node")  # the name journals and log filters know

NAMESPACE = "spBv1.0"


class SparkplugNode:
    """Event sink that reports anomalies as Sparkplug B metrics of an edge node and its camera devices.

    ``publish``/``close`` form the sink interface; ``camera_state``, ``set_threshold``,
    ``status_update`` and ``set_model_version`` feed the other metrics. All methods are thread-safe:
    one lock orders the messages so their ``seq`` numbers go out in order.
    """

    def __init__(
        self,
        cfg: SparkplugSinkConfig,
        appliance_id: str,
        cameras: list[str],
        model_version: str,
        *,
        state_dir: Path | None = None,
        thresholds: Mapping[str, float] | None = None,
    ) -> None:
        self.cfg = cfg
        self._broker = f"{cfg.host}:{cfg.port}"
        self.group_id = cfg.group_id
        self.node_id = cfg.node_id(appliance_id)
        _check_id("edge node id", self.node_id)
        if len(set(cameras)) != len(cameras):
            raise SparkplugError(f"sparkplug: camera ids must be unique, got {cameras}")
        for cam in cameras:
            _check_id("device (camera) id", cam)
        password = cfg.resolve_password()  # before the bdSeq file is touched: a mistake changes nothing
        self._lock = threading.RLock()
        self._online = threading.Event()  # births of the current MQTT session are out
        self._closing = False
        self._seq = 0
        self._bdseqs = BdSeqCounter(
            Path(state_dir) / f"sparkplug-{self.group_id}-{self.node_id}.bdseq" if state_dir else None
        )
        self._bdseq = self._bdseqs.take(strict=True)
        self._node = MetricSet(
            NODE_METRICS,
            {
                BDSEQ: self._bdseq,
                REBIRTH: False,
                "Model/Version": model_version,
                "Status/State": "running",
                "Status/Message": "",
            },
        )
        self._devices: dict[str, MetricSet] = {}
        self._open: dict[str, set[str]] = {}
        for cam in cameras:
            self._new_device(cam, (thresholds or {}).get(cam))

        self._fail_logged = False  # a failed connection attempt was logged in this outage
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=cfg.client_id or f"sparkplug-{self.group_id}-{self.node_id}",
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        if cfg.username:
            self._client.username_pw_set(cfg.username, password)
        self._set_will()
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_connect_fail = self._on_connect_fail
        self._client.reconnect_delay_set(1, 30)
        self._client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive_s)
        self._client.loop_start()

    # -- topics
    def node_topic(self, kind: str) -> str:
        """``spBv1.0/<group>/<kind>/<node>`` for NBIRTH, NDATA, NDEATH, NCMD."""
        return f"{NAMESPACE}/{self.group_id}/{kind}/{self.node_id}"

    def device_topic(self, kind: str, camera_id: str) -> str:
        """``spBv1.0/<group>/<kind>/<node>/<camera>`` for DBIRTH, DDATA, DDEATH."""
        return f"{NAMESPACE}/{self.group_id}/{kind}/{self.node_id}/{camera_id}"

    @property
    def bdseq(self) -> int:
        """bdSeq of the current (or next) MQTT session."""
        return self._bdseq

    def wait_online(self, timeout: float) -> bool:
        """Wait until the births of an MQTT session are published; False on timeout."""
        return self._online.wait(timeout)

    # -- sink interface and metric updates
    def publish(self, event: AnomalyEvent) -> None:
        """Update the camera's anomaly metrics from one event; a DDATA carries those that changed."""
        with self._lock:
            cam = event.camera_id
            if cam not in self._devices and not self._add_device(cam):
                return
            open_events = self._open[cam]
            if event.type == "end":
                open_events.discard(event.event_id)
            else:
                open_events.add(event.event_id)
            self._set_device(cam, anomaly_values(event, open_events), event.time_ms)

    def camera_state(self, camera_id: str, state: str) -> None:
        """Report a camera's state (streaming, reconnecting, failed, ended) as ``Camera/State``."""
        with self._lock:
            if camera_id in self._devices or self._add_device(camera_id):
                self._set_device(camera_id, {"Camera/State": state}, now_ms())

    def set_threshold(self, camera_id: str, value: float) -> None:
        """Report the threshold in force for a camera (e.g. after calibration) as ``Anomaly/Threshold``."""
        with self._lock:
            if camera_id in self._devices or self._add_device(camera_id):
                self._set_device(camera_id, {"Anomaly/Threshold": float(value)}, now_ms())

    def status_update(self, state: str, message: str = "") -> None:
        """Report the appliance's state (``Status/State``) and a detail (``Status/Message``) in an NDATA."""
        self._set_node({"Status/State": state, "Status/Message": message})

    def set_model_version(self, version: str) -> None:
        """Report a new scoring model version (``Model/Version``) in an NDATA."""
        self._set_node({"Model/Version": version})

    def close(self, timeout: float = 5.0) -> None:
        """Publish a DDEATH per camera and the NDEATH, wait (up to ``timeout``) for the broker, disconnect."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            info = None
            if self._online.is_set():
                ts = now_ms()
                for cam in self._devices:
                    self._send(self.device_topic("DDEATH", cam), Payload(timestamp=ts))
                # The same message as the will: no seq, the bdSeq of this session; QoS 1 as the will.
                info = self._client.publish(self.node_topic("NDEATH"), self._ndeath(), qos=1, retain=False)
                self._online.clear()
        if info is not None:
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout)
            if not info.is_published():
                log.warning("Sparkplug: the broker did not acknowledge the NDEATH within %.1f s", timeout)
        self._client.disconnect()
        self._client.loop_stop()

    # -- internals (called with self._lock held unless noted)
    def _new_device(self, cam: str, threshold: float | None) -> None:
        values: dict[str, MetricValue] = dict.fromkeys(DEVICE_METRICS)
        values.update({"Anomaly/Active": False, "Anomaly/OpenCount": 0, "Camera/State": "starting"})
        values["Anomaly/Threshold"] = None if threshold is None else float(threshold)
        self._devices[cam] = MetricSet(DEVICE_METRICS, values)
        self._open[cam] = set()

    def _add_device(self, cam: str) -> bool:
        """A camera not named at construction: born now, if its id can be a Sparkplug device id."""
        try:
            _check_id("device (camera) id", cam)
        except SparkplugError as exc:
            log.error("%s; its metrics are not published", exc)
            return False
        log.warning("Sparkplug: camera %r was not announced at start; adding it as a device", cam)
        self._new_device(cam, None)
        if self._online.is_set():
            self._send(self.device_topic("DBIRTH", cam), self._devices[cam].to_payload())
        return True

    def _set_device(self, cam: str, values: Mapping[str, MetricValue], ts: int) -> None:
        metrics = self._devices[cam]
        changed = metrics.update(values, ts)
        if changed and self._online.is_set() and not self._closing:
            self._send(self.device_topic("DDATA", cam), metrics.to_payload(changed))

    def _set_node(self, values: Mapping[str, MetricValue]) -> None:
        with self._lock:
            changed = self._node.update(values, now_ms())
            if changed and self._online.is_set() and not self._closing:
                self._send(self.node_topic("NDATA"), self._node.to_payload(changed))

    def _send(self, topic: str, payload: Any) -> None:
        """Publish with the next seq (QoS 0, not retained, as births and data must be)."""
        payload.seq = self._seq
        self._seq = (self._seq + 1) % 256
        self._client.publish(topic, payload.SerializeToString(), qos=0, retain=False)

    def _births(self) -> None:
        """NBIRTH (seq 0) then one DBIRTH per camera, each with every metric's current value."""
        self._seq = 0
        self._node.update({BDSEQ: self._bdseq}, now_ms())
        self._send(self.node_topic("NBIRTH"), self._node.to_payload())
        for cam, metrics in self._devices.items():
            self._send(self.device_topic("DBIRTH", cam), metrics.to_payload())
        self._online.set()

    def _ndeath(self) -> bytes:
        payload = Payload(timestamp=now_ms())
        payload.metrics.append(make_metric(BDSEQ, DataType.Int64, self._bdseq, payload.timestamp))
        return payload.SerializeToString()

    def _set_will(self) -> None:
        self._client.will_set(self.node_topic("NDEATH"), self._ndeath(), qos=1, retain=False)

    # -- paho callbacks (network thread)
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("Sparkplug: broker %s refused the connection: %s", self._broker, reason_code)
            return
        # Spec: subscribe to the node's NCMD and DCMD topics at QoS 1 before the NBIRTH. No device
        # command is supported yet; a DCMD is ignored.
        client.subscribe([(self.node_topic("NCMD"), 1), (f"{self.device_topic('DCMD', '')}#", 1)])
        self._fail_logged = False
        with self._lock:
            if self._closing:
                return
            self._births()
        name = f"{self.group_id}/{self.node_id}"
        log.info("Sparkplug: edge node %s online (bdSeq %d) on %s", name, self._bdseq, self._broker)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        with self._lock:
            self._online.clear()
            if self._closing:
                return
            # The broker has published (or dropped) this session's will: the next session is a new bdSeq.
            self._bdseq = self._bdseqs.take(strict=False)
            self._set_will()
        log.warning("Sparkplug: connection lost (%s); reconnecting", reason_code)

    def _on_connect_fail(self, client, userdata) -> None:
        if not self._fail_logged:  # once per outage; paho keeps retrying (1 s doubling to 30 s)
            log.warning("Sparkplug: cannot reach broker %s; retrying", self._broker)
            self._fail_logged = True

    def _on_message(self, client, userdata, msg) -> None:
        if msg.topic != self.node_topic("NCMD"):
            log.debug("Sparkplug: ignoring a message on %s", msg.topic)
            return
        try:
            payload = Payload.FromString(msg.payload)
        except DecodeError:
            log.warning("Sparkplug: ignoring an NCMD that is not a Sparkplug B payload")
            return
        for metric in payload.metrics:
            is_bool = metric.WhichOneof("value") == "boolean_value"
            if metric.name == REBIRTH and is_bool and metric.boolean_value:
                with self._lock:
                    if self._online.is_set() and not self._closing:
                        log.info("Sparkplug: rebirth requested")
                        self._births()
                return
        log.debug("Sparkplug: NCMD without a rebirth request ignored")


def _check_id(what: str, value: str) -> None:
    try:
        _sparkplug_id(value)
    except ValueError as exc:
        raise SparkplugError(f"sparkplug {what} {value!r}: {exc}") from None
