"""The Sparkplug B edge node: the appliance as an edge node, each camera a device (Sparkplug 3.0).

Topics are ``spBv1.0/<group>/NBIRTH|NDATA|NDEATH/<node>`` and
``spBv1.0/<group>/DBIRTH|DDATA|DDEATH/<node>/<camera>``. On every MQTT session (clean session,
MQTT 3.1.1, :mod:`.link`) the node registers an NDEATH will carrying ``bdSeq``, subscribes to its
NCMD and DCMD topics (and the primary host's STATE), then publishes an NBIRTH (seq 0, the same
``bdSeq``) and one DBIRTH per camera with every metric's current value, name and alias. After that,
NDATA/DDATA carry only the metrics that changed, by alias, and ``seq`` goes up by one per message
(mod 256). ``bdSeq`` goes up by one per MQTT session and, given a state directory, survives
restarts. An NCMD ``Node Control/Rebirth = true`` brings the births again.

Births and data are QoS 0 and never retained, as the specification prescribes. While the node is
not online (broker away, primary host offline, births not yet out) every metric change is stored on
disk (:mod:`.history`) and sent after the next births with ``is_historical = true`` and its
original timestamp; the births themselves carry the current values.

Each camera's alarm points are device metrics ``Alarm/<point>/...``; with ``commands: true`` a host
acknowledges and shelves them by DCMD writes (:mod:`.operator_writes`). A reload that adds or
removes points changes the metric set, so the node rebirths.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance.alarms.events import AnomalyEvent
from appliance.config.sparkplug import SparkplugSinkConfig
from appliance.publish.broker import tls_context
from appliance.publish.sparkplug import SparkplugError
from appliance.publish.sparkplug.bdseq import BdSeqCounter
from appliance.publish.sparkplug.book import Change, MetricBook, check_id
from appliance.publish.sparkplug.history import History
from appliance.publish.sparkplug.link import SparkplugLink, Topics
from appliance.publish.sparkplug.metrics import ndeath_payload, now_ms
from appliance.publish.sparkplug.operator_writes import OperatorWrites, asks_rebirth, decode_command
from appliance.publish.sparkplug.payload import MetricValue, Payload
from appliance.publish.sparkplug.primary_host import PrimaryHost

if TYPE_CHECKING:
    from appliance.publish.mqtt import AlarmSource

log = logging.getLogger("appliance.sparkplug.node")  # the name journals and log filters know

FLUSH_BATCH = 20
"""Stored messages handed to the link per turn of its loop (live data goes between batches)."""


@dataclass(frozen=True)
class Outgoing:
    """A message for the link to publish, in ``seq`` order; ``stored`` names the history record it
    replays, ``record`` the change to store if it cannot go out."""

    topic: str
    payload: bytes
    qos: int = 0
    stored: int | None = None
    record: tuple[str | None, list[Change], str, str | None] | None = None


class SparkplugNode:
    """Event sink that reports anomalies and alarm points as Sparkplug B metrics of an edge node
    and its camera devices.

    ``publish``/``close`` form the sink interface; ``camera_state``, ``set_threshold``,
    ``status_update``, ``set_model_version`` and ``publish_alarms`` feed the other metrics. All
    methods are thread-safe: one lock orders the messages so their ``seq`` numbers go out in order.
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
        alarms: AlarmSource | None = None,
        commands: Callable[[str, dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.cfg = cfg
        self.group_id, self.node_id = cfg.group_id, cfg.node_id(appliance_id)
        _check_ids(self.node_id, cameras)
        self.topics = Topics(self.group_id, self.node_id)
        password = cfg.resolve_password()  # before the bdSeq file is touched: a mistake changes nothing
        tls = tls_context(cfg, "sparkplug")
        self._lock = threading.RLock()
        self._online = threading.Event()  # births of the current MQTT session are out
        self._closing = self._closed = False
        self._seq = 0
        self._outq: deque[Outgoing] = deque()
        self._flushed_to = 0  # history records handed to the link in this session
        base = f"{state_dir}/sparkplug-{self.group_id}-{self.node_id}" if state_dir else None
        self._bdseqs = BdSeqCounter(Path(f"{base}.bdseq") if base else None)
        self._bdseq = self._bdseqs.take(strict=True)
        self.host = PrimaryHost(cfg.primary_host_id) if cfg.primary_host_id else None
        self._writes = OperatorWrites.for_sink(cfg, commands)
        self._alarms = alarms
        self.book = MetricBook(model_version, self._bdseq, cfg.aliases, writable=self._writes is not None)
        for cam in cameras:
            self.book.add_device(cam, (thresholds or {}).get(cam))
        self.history = History(Path(f"{base}.history.sqlite") if base else None, cfg)
        self._alarm_points(record=False)  # the points' states now: the births' values, not history
        self._link = SparkplugLink(self, cfg, password, tls)

    # -- state
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
            if self._device(event.camera_id):
                self._change(
                    event.camera_id, self.book.anomaly(event), event.time_ms, event.type, event.event_id
                )

    def camera_state(self, camera_id: str, state: str) -> None:
        """Report a camera's state (streaming, reconnecting, failed, ended) as ``Camera/State``."""
        with self._lock:
            if self._device(camera_id):
                self._change(camera_id, {"Camera/State": state}, now_ms())

    def set_threshold(self, camera_id: str, value: float) -> None:
        """Report the threshold in force for a camera (e.g. after calibration) as ``Anomaly/Threshold``."""
        with self._lock:
            if self._device(camera_id):
                self._change(camera_id, {"Anomaly/Threshold": float(value)}, now_ms())

    def status_update(self, state: str, message: str = "") -> None:
        """Report the appliance's state (``Status/State``) and a detail (``Status/Message``) in an NDATA."""
        with self._lock:
            self._change(None, {"Status/State": state, "Status/Message": message}, now_ms())

    def set_model_version(self, version: str) -> None:
        """Report a new scoring model version (``Model/Version``) in an NDATA."""
        with self._lock:
            self._change(None, {"Model/Version": version}, now_ms())

    def publish_alarms(self) -> None:
        """The alarm points changed: their metrics follow (and a rebirth when points came or went)."""
        self._alarm_points(record=True)

    def close(self, timeout: float = 5.0) -> None:
        """Publish a DDEATH per camera and the NDEATH, wait (up to ``timeout``) for the broker,
        disconnect; what is still stored stays on disk for the next start."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
        self._link.stop(timeout)
        with self._lock:
            self._closed = True
            left = self.history.depth()
            self.history.close()
        if left:
            log.warning("Sparkplug: %d stored message(s) wait on disk for the next start", left)

    # -- called by the link (its thread)
    def ndeath(self) -> bytes:
        """The NDEATH payload of this session: no seq, the session's bdSeq."""
        return ndeath_payload(self._bdseq)

    def take_outgoing(self) -> list[Outgoing]:
        with self._lock:
            out = list(self._outq)
            self._outq.clear()
            return out

    def births(self) -> None:
        """Births now, unless closing or a primary host is configured and not online."""
        with self._lock:
            if not self._closing and (self.host is None or self.host.online):
                self._births()

    def flush_history(self) -> bool:
        """Hand the link the next batch of stored changes as historical data; False when none is left."""
        with self._lock:
            if not self._online.is_set() or self._closing or not self.history.depth():
                return False
            batch = self.history.after(self._flushed_to, FLUSH_BATCH)
            for change in batch:
                self._flushed_to = change.id
                known = self.book.known(change.device, change.metrics)
                if not known:
                    self.history.sent(change.id)  # nothing left that this node still has
                    continue
                payload = self.book.data(change.device, known, historical=True)
                self._enqueue(self.topics.data(change.device), payload, stored=change.id)
            return bool(batch)

    def goodbye(self, devices: bool = True) -> bool:
        """End the Sparkplug session: a DDEATH per camera (``devices``: a clean stop; not when the
        primary host left) then the NDEATH (QoS 1); changes are stored from here on. False if the node
        was not online."""
        with self._lock:
            if not self._online.is_set():
                return False
            ts = now_ms()
            for cam in self.book.devices if devices else ():
                self._enqueue(self.topics.device("DDEATH", cam), Payload(timestamp=ts))
            self._outq.append(Outgoing(self.topics.node("NDEATH"), self.ndeath(), qos=1))
            self._online.clear()
            return True

    def session_ended(self) -> None:
        """The MQTT session is over: data not yet handed out is stored, the next session has a new bdSeq."""
        with self._lock:
            self._online.clear()
            for out in self._outq:
                if out.record is not None:
                    self.history.put(*out.record)
            self._outq.clear()
            if not self._closing:  # the broker has published (or dropped) this session's will
                self._bdseq = self._bdseqs.take(strict=False)

    def on_command(self, kind: str, device: str | None, payload: bytes) -> None:
        """An NCMD (rebirth) or DCMD (operator writes) from a host."""
        decoded = decode_command(kind, payload)
        if decoded is None:
            return
        if kind == "NCMD":
            if asks_rebirth(decoded):
                log.info("Sparkplug: rebirth requested")
                self.births()
            return
        if device is None or self._writes is None:
            log.info("Sparkplug: DCMD for %s ignored (commands are off in the sparkplug sink)", device)
            return
        if not self._writes.admit():
            return
        with self._lock:  # not held while the commands run: the alarm board's change comes back here
            writes = self._writes.resolve(self.book, device, decoded)
            current = self.book.operator(device) if writes else {}
        if writes:
            report = self._writes.apply(device, writes, current)
            with self._lock:
                self._change(device, report, now_ms())

    # -- internals (called with self._lock held unless noted)
    def _device(self, cam: str) -> bool:
        """Whether ``cam`` is a device; a camera not named at construction is born now (if its id
        can be a device id)."""
        if cam in self.book.devices:
            return True
        if not self.book.adopt(cam):
            return False
        if self._online.is_set() and not self._closing:
            self._enqueue(self.topics.device("DBIRTH", cam), self.book.birth(cam, now_ms()))
        return True

    def _alarm_points(self, record: bool) -> None:
        states = self._alarms.messages() if self._alarms is not None else []
        ts = now_ms()
        with self._lock:
            for cam in {s.camera_id for s in states}:
                self._device(cam)
            values, reshaped = self.book.alarm_points(states)
            for cam, cam_values in values.items():
                if record:
                    self._change(cam, cam_values, ts, "alarm", quiet=cam in reshaped)
                else:
                    self.book.set(cam, cam_values, ts)
            if reshaped and self._online.is_set() and not self._closing:
                log.info("Sparkplug: the alarm points of %s changed; rebirth", ", ".join(reshaped))
                self._births()

    def _change(
        self, device: str | None, values: dict[str, MetricValue], ts: int, kind: str = "update",
        key: str | None = None, quiet: bool = False,
    ) -> None:  # fmt: skip
        """Set metric values; the changed ones go out as data when online, else to the history.
        ``quiet``: a rebirth follows that carries them (only the history records them)."""
        if self._closed:
            log.debug("Sparkplug: a change after close is not published")
            return
        changes = self.book.set(device, values, ts)
        if not changes:
            return
        record = (device, changes, kind, key)  # kind and key decide what a full history drops first
        if not self._online.is_set() or self._closing:
            self.history.put(*record)
        elif not quiet:
            self._enqueue(self.topics.data(device), self.book.data(device, changes), record=record)

    def _enqueue(self, topic: str, payload: Any, stored: int | None = None, record=None) -> None:
        """Queue a message for the link with the next seq (QoS 0, not retained: births and data must be)."""
        payload.seq = self._seq
        self._seq = (self._seq + 1) % 256
        self._outq.append(Outgoing(topic, payload.SerializeToString(), 0, stored, record))

    def _births(self) -> None:
        """NBIRTH (seq 0) then one DBIRTH per camera, each with every metric's current value."""
        self._seq = 0
        for device, payload in self.book.births(self._bdseq, now_ms()):
            self._enqueue(
                self.topics.node("NBIRTH") if device is None else self.topics.device("DBIRTH", device),
                payload,
            )
        self._flushed_to = 0  # what was stored goes out (again) after these births
        self._online.set()


def _check_ids(node_id: str, cameras: list[str]) -> None:
    check_id("edge node id", node_id)
    if len(set(cameras)) != len(cameras):
        raise SparkplugError(f"sparkplug: camera ids must be unique, got {cameras}")
    for cam in cameras:
        check_id("device (camera) id", cam)
