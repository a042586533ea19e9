"""The metrics of the Sparkplug edge node and of each camera device, and their current values.

Births carry every metric of a :class:`MetricSet`; data messages only the names that changed.
:func:`anomaly_values` turns one anomaly event into the camera device's metric values.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from appliance.alarms.events import AnomalyEvent
from appliance.publish.sparkplug.payload import DataType, MetricValue, Payload, make_metric

BDSEQ = "bdSeq"
REBIRTH = "Node Control/Rebirth"

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


def now_ms() -> int:
    """Wall-clock time in epoch milliseconds, the unit of every Sparkplug timestamp."""
    return time.time_ns() // 1_000_000


@dataclass
class MetricSet:
    """Current values of one node's or device's metrics and when each last changed."""

    types: Mapping[str, DataType]
    values: dict[str, MetricValue]
    stamps: dict[str, int] = field(default_factory=dict)

    def update(self, new: Mapping[str, MetricValue], ts: int) -> list[str]:
        """Store ``new``; return the names whose value changed."""
        changed = [name for name, value in new.items() if self.values[name] != value]
        for name in changed:
            self.values[name] = new[name]
            self.stamps[name] = ts
        return changed

    def to_payload(self, names: list[str] | None = None, ts: int | None = None):
        """A payload with the metrics ``names`` (all of them when None)."""
        payload = Payload(timestamp=ts if ts is not None else now_ms())
        for name in self.types if names is None else names:
            stamp = self.stamps.get(name, payload.timestamp)
            payload.metrics.append(make_metric(name, self.types[name], self.values[name], stamp))
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
