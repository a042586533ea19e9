"""Store-and-forward outbox: every event is on disk before it is published, and stays until acknowledged.

SQLite in WAL mode with ``synchronous=FULL``: an event ``put`` here survives a crash or power loss
the moment ``put`` returns; it is deleted only after the broker's PUBACK (:meth:`Outbox.ack`). Rows
are sent in insertion order, so after a broker outage or a restart the backlog goes out, in order,
before anything newer.

The outbox is bounded by message count and age. When it must drop, it drops the oldest ``update``
messages first (the next update or the end carries the running peak anyway) and never a ``start``
or ``end``: an alarm and its clearing are what a plant acts on. Drops are counted and reported.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

DROPPABLE = "update"


@dataclass(frozen=True)
class OutboxMessage:
    id: int
    topic: str
    payload: bytes
    kind: str
    created_at: float


class Outbox:
    def __init__(self, path: Path, max_messages: int = 100_000, max_age_s: float = 7 * 86400) -> None:
        self.path = Path(path)
        self.max_messages, self.max_age_s = max_messages, max_age_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, "
            "payload BLOB NOT NULL, kind TEXT NOT NULL, created_at REAL NOT NULL)"
        )
        self.dropped = 0
        self.dropped_by_age = 0

    def put(self, topic: str, payload: str | bytes, kind: str) -> int:
        """Store one message durably; returns its id (its place in the sending order)."""
        data = payload.encode() if isinstance(payload, str) else payload
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO outbox (topic, payload, kind, created_at) VALUES (?, ?, ?, ?)",
                (topic, data, kind, time.time()),
            )
            self._enforce_bounds()
            return int(cur.lastrowid)

    def after(self, last_id: int, limit: int) -> list[OutboxMessage]:
        """The next ``limit`` messages after ``last_id``, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, topic, payload, kind, created_at FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
                (last_id, limit),
            ).fetchall()
        return [OutboxMessage(r[0], r[1], bytes(r[2]), r[3], r[4]) for r in rows]

    def ack(self, message_id: int) -> None:
        """The broker has it: forget it."""
        with self._lock:
            self._db.execute("DELETE FROM outbox WHERE id = ?", (message_id,))

    def depth(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def oldest_age_s(self) -> float:
        with self._lock:
            row = self._db.execute("SELECT MIN(created_at) FROM outbox").fetchone()
        return 0.0 if row[0] is None else max(0.0, time.time() - row[0])

    def _enforce_bounds(self) -> None:
        """Drop the oldest updates beyond the bounds (called with the lock held)."""
        cutoff = time.time() - self.max_age_s
        aged = self._db.execute(
            "DELETE FROM outbox WHERE kind = ? AND created_at < ?", (DROPPABLE, cutoff)
        ).rowcount
        excess = int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]) - self.max_messages
        over = 0
        if excess > 0:
            over = self._db.execute(
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE kind = ? ORDER BY id LIMIT ?)",
                (DROPPABLE, excess),
            ).rowcount
        if aged or over:
            self.dropped += aged + over
            self.dropped_by_age += aged
            log.warning(
                "outbox over its bounds (%d messages, %.0f s): dropped %d oldest update(s) "
                "(%d by age); starts and ends are kept",
                self.max_messages,
                self.max_age_s,
                aged + over,
                aged,
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()
