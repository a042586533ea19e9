"""The console's memory of recent events: a local sink holding the last few hundred, for the
overview and the events page (the journal and the MQTT outbox stay the records of truth)."""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from appliance.alarms.events import AnomalyEvent

KEEP = 500


class RecentEvents:
    """An event sink (``publish``/``close``) that keeps the newest :data:`KEEP` events in memory."""

    def __init__(self, keep: int = KEEP) -> None:
        self._events: deque[AnomalyEvent] = deque(maxlen=keep)
        self._lock = threading.Lock()

    def publish(self, event: AnomalyEvent) -> None:
        with self._lock:
            self._events.append(event)

    def close(self) -> None:
        pass

    def select(
        self,
        camera: str | None = None,
        zone: str | None = None,
        since_ms: int | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Newest first, filtered by camera, zone and time; the skeleton clip left out (``/api/events/ID``
        has it)."""
        with self._lock:
            events = list(self._events)
        out = []
        for e in reversed(events):
            if (camera and e.camera_id != camera) or (zone and e.zone != zone):
                continue
            if since_ms is not None and e.time_ms < since_ms:
                continue
            out.append(e.model_dump(exclude_none=True, exclude={"evidence"}))
            if len(out) >= limit:
                break
        return out

    def get(self, event_id: str, kind: str | None = None) -> dict[str, Any] | None:
        """The newest message of one event (of ``kind``, start or end, when given) with its skeleton clip."""
        with self._lock:
            found = [
                e for e in self._events
                if e.event_id == event_id and e.evidence is not None and kind in (None, e.type)
            ]  # fmt: skip
        return found[-1].model_dump(exclude_none=True) if found else None
