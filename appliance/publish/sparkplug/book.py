"""Every metric of the edge node and of its camera devices: current values, aliases, and the birth
and data payloads made of them. No I/O and no lock: :class:`appliance.publish.sparkplug.node.SparkplugNode`
holds its lock around every call.
"""

from __future__ import annotations

import logging

from appliance.alarms.events import AlarmPointState, AnomalyEvent
from appliance.config.sparkplug import _sparkplug_id
from appliance.publish.sparkplug import SparkplugError
from appliance.publish.sparkplug.metrics import (
    BDSEQ,
    DEVICE_METRICS,
    NODE_METRICS,
    OPERATOR_METRICS,
    REBIRTH,
    AliasTable,
    MetricSet,
    alarm_values,
    anomaly_values,
    data_payload,
    point_types,
)
from appliance.publish.sparkplug.payload import DataType, MetricValue

log = logging.getLogger("appliance.sparkplug.node")

Change = tuple[str, MetricValue, int]
"""One metric change: name, value, timestamp (ms)."""


class MetricBook:
    """The node's metrics (device None) and each camera's; ``writable``: the operator metrics and
    the alarm points' writes are part of every device (``commands: true``)."""

    def __init__(self, model_version: str, bdseq: int, aliases: bool, writable: bool) -> None:
        self.aliases = AliasTable(aliases)
        self.writable = writable
        self.node = MetricSet(
            dict(NODE_METRICS),
            {BDSEQ: bdseq, REBIRTH: False, "Model/Version": model_version, "Status/State": "running",
             "Status/Message": ""},
        )  # fmt: skip
        self.devices: dict[str, MetricSet] = {}
        self._open: dict[str, set[str]] = {}  # per camera: the anomalies open now

    def metrics(self, device: str | None) -> MetricSet | None:
        return self.node if device is None else self.devices.get(device)

    def adopt(self, cam: str) -> bool:
        """Add a camera not named at start, if its id can be a Sparkplug device id (else say why)."""
        try:
            check_id("device (camera) id", cam)
        except SparkplugError as exc:
            log.error("%s; its metrics are not published", exc)
            return False
        log.warning("Sparkplug: camera %r was not announced at start; adding it as a device", cam)
        self.add_device(cam)
        return True

    def add_device(self, cam: str, threshold: float | None = None) -> None:
        types = self._device_types([])
        values: dict[str, MetricValue] = dict.fromkeys(types)
        values.update({"Anomaly/Active": False, "Anomaly/OpenCount": 0, "Camera/State": "starting"})
        values.update({n: "" for n in OPERATOR_METRICS if n in types})
        values["Anomaly/Threshold"] = None if threshold is None else float(threshold)
        self.devices[cam] = MetricSet(types, values)
        self._open[cam] = set()

    def anomaly(self, event: AnomalyEvent) -> dict[str, MetricValue]:
        """The camera's metric values after one event (its open anomalies counted)."""
        open_events = self._open[event.camera_id]
        if event.type == "end":
            open_events.discard(event.event_id)
        else:
            open_events.add(event.event_id)
        return anomaly_values(event, open_events)

    def set(self, device: str | None, values: dict[str, MetricValue], ts: int) -> list[Change]:
        """Store values; the changes they made (name, new value, ``ts``)."""
        metrics = self.node if device is None else self.devices[device]
        return [(name, metrics.values[name], ts) for name in metrics.update(values, ts)]

    def alarm_points(
        self, states: list[AlarmPointState]
    ) -> tuple[dict[str, dict[str, MetricValue]], list[str]]:
        """Each known camera's alarm metric values from the points' states, and the cameras whose
        metric set changed (points came or went: a rebirth must announce them)."""
        by_camera: dict[str, dict[str, MetricValue]] = {}
        points: dict[str, list[str]] = {}
        for s in states:
            by_camera.setdefault(s.camera_id, {}).update(alarm_values(s, self.writable))
            points.setdefault(s.camera_id, []).append(s.point)
        reshaped = [
            cam
            for cam, metrics in self.devices.items()
            if metrics.reshape(self._device_types(points.get(cam, [])))
        ]
        return {c: v for c, v in by_camera.items() if c in self.devices}, reshaped

    def births(self, bdseq: int, ts: int) -> list[tuple[str | None, object]]:
        """NBIRTH then one DBIRTH per camera: every metric with name, alias, type and value."""
        self.node.update({BDSEQ: bdseq}, ts)
        out: list[tuple[str | None, object]] = [(None, self.node.birth(self.aliases, None, ts))]
        return out + [(cam, m.birth(self.aliases, cam, ts)) for cam, m in self.devices.items()]

    def birth(self, cam: str, ts: int):
        """One camera's DBIRTH payload."""
        return self.devices[cam].birth(self.aliases, cam, ts)

    def data(self, device: str | None, changes: list[Change], historical: bool = False):
        """An NDATA/DDATA payload of ``changes`` (those of metrics the node still has)."""
        metrics = self.metrics(device)
        assert metrics is not None
        return data_payload(self.aliases, device, metrics.types, changes, historical=historical)

    def known(self, device: str | None, changes: list[Change]) -> list[Change]:
        """The changes of metrics that exist now (a stored change may name a deleted point's metric)."""
        metrics = self.metrics(device)
        return [] if metrics is None else [c for c in changes if c[0] in metrics.types]

    def written(self, cam: str, name: str, alias: int | None) -> str | None:
        """The metric of ``cam`` a DCMD metric names (by alias or by name); None if it has none."""
        if alias is not None and not name:
            name = self.aliases.name(cam, alias) or ""
        metrics = self.devices.get(cam)
        return name if metrics is not None and name in metrics.types else None

    def operator(self, cam: str) -> dict[str, MetricValue]:
        return {n: self.devices[cam].values[n] for n in OPERATOR_METRICS if n in self.devices[cam].values}

    def _device_types(self, points: list[str]) -> dict[str, DataType]:
        return {
            **DEVICE_METRICS,
            **(OPERATOR_METRICS if self.writable else {}),
            **point_types(points, self.writable),
        }


def check_id(what: str, value: str) -> None:
    """Refuse an id that cannot be a Sparkplug topic level, naming what it is."""
    try:
        _sparkplug_id(value)
    except ValueError as exc:
        raise SparkplugError(f"sparkplug {what} {value!r}: {exc}") from None
