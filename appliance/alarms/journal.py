"""Open anomalies kept on disk, so that a hard kill cannot leave an alarm open forever at SCADA.

A clean stop ends every open anomaly (``shutdown``). ``kill -9``, the OOM killer, a watchdog kill or
a power cut do not: SCADA would show those alarms active until someone clears them by hand. So every
``start`` and ``update`` is written here (atomically, before the sinks get it) and every ``end``
removes its anomaly; the next start of the daemon ends whatever is left with
``end_reason: restart``, one ``seq`` after the last message the journal saw.

Written before the sinks: after a crash between the two, SCADA may get an ``end`` for a ``start``
it never saw (harmless: an unknown event id) rather than a ``start`` that never ends.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

from appliance.alarms.events import AnomalyEvent, iso_utc
from appliance.storage import write_atomic

log = logging.getLogger("appliance.anomaly_journal")  # the name journals and log filters know


class AnomalyJournal:
    """The last message of every open anomaly, in ``<state_dir>/open-anomalies.json``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._open: dict[str, dict] = {}
        self.left_open = self._read()  # what a previous run left open (ended by :meth:`restart_ends`)

    def _read(self) -> list[AnomalyEvent]:
        if not self.path.exists():
            return []
        try:
            records = json.loads(self.path.read_text())
            return [AnomalyEvent.model_validate(r) for r in records.values()]
        except (OSError, ValueError, AttributeError) as exc:
            log.error(
                "open-anomaly journal %s unreadable (%s); its anomalies cannot be ended", self.path, exc
            )
            return []

    def restart_ends(self, when: float) -> list[AnomalyEvent]:
        """An ``end`` (reason ``restart``) for every anomaly the previous run left open."""
        ends = [
            last.model_copy(
                update={
                    "type": "end",
                    "seq": last.seq + 1,
                    "time": iso_utc(when),
                    "time_ms": round(when * 1000),
                    "ended_at": iso_utc(when),
                    "ended_at_ms": round(when * 1000),
                    "end_reason": "restart",
                }
            )
            for last in self.left_open
        ]
        self.left_open = []
        return ends

    def record(self, events: list[AnomalyEvent]) -> None:
        """Note what these events open, move on or end; rewrite the file if anything changed."""
        if not events:
            return
        with self._lock:
            for event in events:
                if event.type == "end":
                    self._open.pop(event.event_id, None)
                else:
                    self._open[event.event_id] = event.model_dump(mode="json", exclude_none=True)
            try:
                write_atomic(self.path, json.dumps(self._open))
            except OSError as exc:  # a full disk must not stop the alarms themselves
                log.error("open-anomaly journal %s not written: %s", self.path, exc)
