"""The metrics of the Sparkplug edge node and of each camera device, their current values and aliases.

Births carry every metric of a :class:`MetricSet` with its name and alias; data messages only the
metrics that changed, by alias alone (Sparkplug 3.0, aliases). :func:`anomaly_values` turns one
anomaly event into a camera's metric values, :func:`alarm_values` the alarm points' states into the
``Alarm/<point>/...`` metrics, among them the two an operator writes through a DCMD.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from appliance.alarms.events import AlarmPointState, AnomalyEvent
from appliance.publish.sparkplug.payload import DataType, MetricValue, Payload, make_metric

BDSEQ = "bdSeq"
REBIRTH = "Node Control/Rebirth"
UNALIASED = frozenset({BDSEQ, REBIRTH})
"""Never aliased: a host that knows no alias yet must be able to ask for a rebirth (3.0), and bdSeq
travels in the NDEATH will, which is no data message."""

NODE_METRICS: dict[str, DataType] = {
    BDSEQ: DataType.Int64,  # session number of the NBIRTH and of its NDEATH will
    REBIRTH: DataType.Boolean,  # always false; a host writes true in an NCMD to ask for births
    "Model/Version": DataType.String,  # version of the scoring model bundle
    "Status/State": DataType.String,  # e.g. running, degraded, stopping (status_update)
    "Status/Message": DataType.String,  # a human-readable detail for the state
}
DEVICE_METRICS: dict[str, DataType] = {
    "Anomaly/Active": DataType.Boolean,  # at least one anomaly of this camera is open
    "Anomaly/OpenCount": DataType.Int32,  # open anomalies (several people can be anomalous at once)
    "Anomaly/EventId": DataType.String,  # event of the latest message
    "Anomaly/Phase": DataType.String,  # start, update or end (latest message)
    "Anomaly/TrackId": DataType.Int32,  # person track of the latest message (-1 = whole frame)
    "Anomaly/Score": DataType.Float,  # latest window score
    "Anomaly/PeakScore": DataType.Float,  # highest score of the latest message's anomaly
    "Anomaly/Threshold": DataType.Float,  # threshold in force for this camera
    "Anomaly/StartedAt": DataType.DateTime,  # start of the latest message's anomaly (ms)
    "Anomaly/EndReason": DataType.String,  # set by an end message, null otherwise
    "Camera/State": DataType.String,  # starting, streaming, reconnecting, failed, ended, stopped
}
OPERATOR_METRICS: dict[str, DataType] = {
    "Operator/Name": DataType.String,  # written by the host: who acts in the DCMDs that follow
    "Operator/Comment": DataType.String,  # written by the host: why; used by the next action, then cleared
    "Operator/LastResult": DataType.String,  # the outcome of the last action, in words
}
"""Device metrics of a node that takes DCMD writes (``commands: true``)."""

ACKNOWLEDGE = "Acknowledge"
SHELVE_MINUTES = "ShelveMinutes"
POINT_METRICS: dict[str, DataType] = {
    "State": DataType.String,  # normal, active_unacknowledged, ..., shelved, out_of_service
    "ActiveCount": DataType.Int32,  # track anomalies open now
    "Anomalies": DataType.Int32,  # anomalies since the point was last normal
    "PeakScore": DataType.Float,  # highest score since the point was last normal (null when normal)
    "Acknowledged": DataType.Boolean,  # nothing waits for an operator (OPC UA AckedState)
    "ShelvedUntil": DataType.DateTime,  # when the shelf ends by itself (null when not shelved)
    "OutOfService": DataType.String,  # why the point is out of service (null when in service)
}
POINT_WRITES: dict[str, DataType] = {
    ACKNOWLEDGE: DataType.Boolean,  # write true to acknowledge; reads false
    SHELVE_MINUTES: DataType.Int32,  # write N > 0 to shelve for N minutes, 0 to unshelve; reads 0
}


def now_ms() -> int:
    """Wall-clock time in epoch milliseconds, the unit of every Sparkplug timestamp."""
    return time.time_ns() // 1_000_000


def ndeath_payload(bdseq: int) -> bytes:
    """An NDEATH (the will and the clean stop's): no seq, the session's bdSeq."""
    payload = Payload(timestamp=now_ms())
    payload.metrics.append(make_metric(BDSEQ, DataType.Int64, bdseq, payload.timestamp))
    return payload.SerializeToString()


def point_metric(point: str, what: str) -> str:
    """``Alarm/<point>/<what>``: the name of one of an alarm point's metrics."""
    return f"Alarm/{point}/{what}"


def split_point_metric(name: str) -> tuple[str, str] | None:
    """``(point, what)`` of an ``Alarm/<point>/<what>`` name, None for any other metric."""
    parts = name.split("/")
    return (parts[1], parts[2]) if len(parts) == 3 and parts[0] == "Alarm" else None


class AliasTable:
    """Aliases of one edge node's metrics: unique across the node and all its devices, handed out on
    first use and never reused while the process runs, so a rebirth announces the same numbers."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._by_key: dict[tuple[str | None, str], int] = {}
        self._by_alias: dict[tuple[str | None, int], str] = {}

    def alias(self, device: str | None, name: str) -> int | None:
        """The alias of ``name`` on ``device`` (None: the node itself); None when not aliased."""
        if not self.enabled or name in UNALIASED:
            return None
        key = (device, name)
        if key not in self._by_key:
            number = len(self._by_key) + 1
            self._by_key[key] = number
            self._by_alias[(device, number)] = name
        return self._by_key[key]

    def name(self, device: str | None, alias: int) -> str | None:
        """The metric an alias stands for on ``device`` (None if no birth announced it)."""
        return self._by_alias.get((device, alias))


@dataclass
class MetricSet:
    """Current values of one node's or device's metrics and when each last changed."""

    types: dict[str, DataType]
    values: dict[str, MetricValue]
    stamps: dict[str, int] = field(default_factory=dict)

    def update(self, new: Mapping[str, MetricValue], ts: int) -> list[str]:
        """Store ``new``; return the names whose value changed."""
        changed = [name for name, value in new.items() if self.values[name] != value]
        for name in changed:
            self.values[name] = new[name]
            self.stamps[name] = ts
        return changed

    def reshape(self, types: Mapping[str, DataType]) -> bool:
        """Make ``types`` the set's metrics: values of kept names stay, a new metric starts null.
        Return whether the names changed (a rebirth must announce them)."""
        if types.keys() == self.types.keys():
            return False
        self.types = dict(types)
        self.values = {n: self.values.get(n) for n in types}
        self.stamps = {n: s for n, s in self.stamps.items() if n in types}
        return True

    def birth(self, aliases: AliasTable, device: str | None, ts: int):
        """A birth payload: every metric with its name, alias, data type, value and timestamp."""
        payload = Payload(timestamp=ts)
        for name, datatype in self.types.items():
            m = make_metric(name, datatype, self.values[name], self.stamps.get(name, ts))
            alias = aliases.alias(device, name)
            if alias is not None:
                m.alias = alias
            payload.metrics.append(m)
        return payload


def data_payload(
    aliases: AliasTable,
    device: str | None,
    types: Mapping[str, DataType],
    metrics: Iterable[tuple[str, MetricValue, int]],
    *,
    historical: bool = False,
    ts: int | None = None,
):
    """An NDATA/DDATA payload of ``(name, value, timestamp)`` triples: by alias when aliases are on,
    without the data type (3.0: births declare it); ``historical`` flags stored values."""
    payload = Payload(timestamp=ts if ts is not None else now_ms())
    for name, value, stamp in metrics:
        m = make_metric(name, types[name], value, stamp)
        m.ClearField("datatype")
        alias = aliases.alias(device, name)
        if alias is not None:
            m.alias = alias
            m.ClearField("name")
        if historical:
            m.is_historical = True
        payload.metrics.append(m)
    return payload


def anomaly_values(event: AnomalyEvent, open_events: set[str]) -> dict[str, MetricValue]:
    """The device metrics one event sets (``open_events``: the camera's open anomalies after it)."""
    return {
        "Anomaly/Active": bool(open_events),
        "Anomaly/OpenCount": len(open_events),
        "Anomaly/EventId": event.event_id,
        "Anomaly/Phase": event.type,
        "Anomaly/TrackId": event.track_id,
        "Anomaly/Score": event.score,
        "Anomaly/PeakScore": event.peak_score,
        "Anomaly/Threshold": event.threshold,
        "Anomaly/StartedAt": event.started_at_ms,
        "Anomaly/EndReason": event.end_reason,
    }


def point_types(points: Iterable[str], writable: bool) -> dict[str, DataType]:
    """The metrics of a camera's alarm points (with the operator's writes when ``writable``)."""
    out: dict[str, DataType] = {}
    for point in points:
        own = {**POINT_METRICS, **(POINT_WRITES if writable else {})}
        out.update({point_metric(point, what): t for what, t in own.items()})
    return out


def alarm_values(state: AlarmPointState, writable: bool) -> dict[str, MetricValue]:
    """One point's metric values from its retained state (the writes read back as idle)."""
    p = state.point
    values: dict[str, MetricValue] = {
        point_metric(p, "State"): state.state,
        point_metric(p, "ActiveCount"): state.active_anomalies,
        point_metric(p, "Anomalies"): state.anomalies,
        point_metric(p, "PeakScore"): state.peak_score,
        point_metric(p, "Acknowledged"): state.state
        not in ("active_unacknowledged", "returned_unacknowledged"),
        point_metric(p, "ShelvedUntil"): _epoch_ms(state.shelved_until),
        point_metric(p, "OutOfService"): state.out_of_service,
    }
    if writable:
        values.update({point_metric(p, ACKNOWLEDGE): False, point_metric(p, SHELVE_MINUTES): 0})
    return values


def _epoch_ms(iso: str | None) -> int | None:
    if iso is None:
        return None
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)
