"""Store-and-forward outbox: every event is on disk before it is published, and stays until acknowledged.

SQLite in WAL mode with ``synchronous=FULL``: an event ``put`` here survives a crash or power loss
the moment ``put`` returns; it is deleted only after the broker's PUBACK (:meth:`Outbox.ack`). Rows
are sent in insertion order, so after a broker outage or a restart the backlog goes out, in order,
before anything newer.

Bounds, holding for every kind of message: at most ``max_bytes`` (each message counts its topic,
its payload and :data:`ROW_OVERHEAD`) and at most ``max_messages``; ``update`` messages older than
``max_age_s`` leave too. The totals are kept as running counts, so an insert costs the same at any
depth (no ``COUNT(*)``, no table scan). When a new message does not fit, room is made in this order:

1. the oldest ``update`` messages (the next update or the end carries the running peak anyway);
2. the oldest *closed* anomalies: a ``start`` whose ``end`` is stored too, dropped together, so a
   subscriber never gets an end without its start and no alarm is left open;
3. the oldest messages of any kind (starts of open anomalies, lone ends, command responses).

Drops are counted per kind in the file itself (they survive a restart) and summed up in one warning
per ``warn_interval_s``, not one line per message. Once the outbox is empty again the freed pages go
back to the file system (incremental vacuum, WAL truncated), so a drained outbox is small on disk.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.publish.outbox_bounds import PAIRED, Drop, DropLog, aged_updates, choose_drops

log = logging.getLogger("appliance.outbox")  # the name journals and log filters know

ROW_OVERHEAD = 160
"""Bytes counted per message beyond topic and payload (row, index entries, page slack), so the counted
total tracks the file's size (benchmarks/outbox.py)."""
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
COMPACT_MIN_FREE_BYTES = 1024 * 1024
COMPACT_STEP_PAGES = 1024
"""A drained outbox gives its free pages back once they add up to this much."""
WAL_LIMIT_BYTES = 4 * 1024 * 1024
AGE_CHECK_INTERVAL_S = 1.0


@dataclass(frozen=True)
class OutboxMessage:
    id: int
    topic: str
    payload: bytes
    kind: str
    created_at: float


def _event_key(data: bytes) -> str | None:
    """The ``event_id`` of a start/end payload (pairs a start with its end), None if it has none."""
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    key = doc.get("event_id") if isinstance(doc, dict) else None
    return key if isinstance(key, str) else None


class Outbox:
    """A durable FIFO of MQTT messages with a hard bound in bytes and messages (see the module doc)."""

    def __init__(
        self,
        path: Path,
        max_messages: int = 100_000,
        max_age_s: float = 7 * 86400,
        max_bytes: int = DEFAULT_MAX_BYTES,
        warn_interval_s: float = 60.0,
    ) -> None:
        self.path = Path(path)
        self.max_messages, self.max_age_s, self.max_bytes = max_messages, max_age_s, max_bytes
        self.warn_interval_s = warn_interval_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        # takes effect for a new file (before its first table); an older file is converted when empty
        self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, "
            "payload BLOB NOT NULL, kind TEXT NOT NULL, created_at REAL NOT NULL)"
        )
        self._migrate()
        self._db.execute("CREATE INDEX IF NOT EXISTS outbox_kind ON outbox (kind)")
        self._db.execute(
            "CREATE INDEX IF NOT EXISTS outbox_event ON outbox (event_key, kind) WHERE event_key IS NOT NULL"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS outbox_meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL)"
        )
        count, size = self._db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM outbox").fetchone()
        self._count, self._bytes = int(count), int(size)
        stored = Counter(
            {
                name.removeprefix("dropped_"): int(value)
                for name, value in self._db.execute("SELECT name, value FROM outbox_meta")
                if name.startswith("dropped_")
            }
        )
        self._drops = DropLog(stored, max_bytes, max_messages, max_age_s)
        self._age_due = 0.0
        if self._count == 0:
            self._compact()

    def _migrate(self) -> None:
        """Add the columns of this version to an outbox file written by an older one."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(outbox)")}
        if "size" not in columns:
            self._db.execute("ALTER TABLE outbox ADD COLUMN size INTEGER NOT NULL DEFAULT 0")
            self._db.execute(
                "UPDATE outbox SET size = length(CAST(topic AS BLOB)) + length(payload) + ?", (ROW_OVERHEAD,)
            )
        if "event_key" not in columns:
            self._db.execute("ALTER TABLE outbox ADD COLUMN event_key TEXT")
            rows = self._db.execute(
                "SELECT id, payload FROM outbox WHERE kind IN ('start', 'end')"
            ).fetchall()
            self._db.executemany(
                "UPDATE outbox SET event_key = ? WHERE id = ?", [(_event_key(bytes(p)), i) for i, p in rows]
            )

    # -- the API the MQTT link uses -------------------------------------------------------------
    def put(self, topic: str, payload: str | bytes, kind: str, key: str | None = None) -> int:
        """Store one message durably; returns its id (its place in the sending order).

        ``key`` pairs a ``start`` with its ``end`` (the anomaly's ``event_id``; read from the payload
        when not given). The message may make older ones leave (module doc); it may itself go if it
        alone is over the bound.
        """
        data = payload.encode() if isinstance(payload, str) else bytes(payload)
        size = len(topic.encode()) + len(data) + ROW_OVERHEAD
        if kind in PAIRED and key is None:
            key = _event_key(data)
        elif kind not in PAIRED:
            key = None
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cur = self._db.execute(
                    "INSERT INTO outbox (topic, payload, kind, created_at, size, event_key) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (topic, data, kind, now, size, key),
                )
                self._count += 1
                self._bytes += size
                dropped = self._enforce_bounds(now)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                self._reload_totals()
                raise
            self._drops.count(dropped, now)
            self._drops.warn(now, self.warn_interval_s)
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
        """The broker has it: forget it (a message dropped meanwhile is already gone)."""
        with self._lock:
            rows = self._db.execute(
                "DELETE FROM outbox WHERE id = ? RETURNING size", (message_id,)
            ).fetchall()
            if not rows:
                return
            self._count -= 1
            self._bytes -= int(rows[0][0])
            drained = self._count == 0
        if drained:
            self._compact()

    def depth(self) -> int:
        """Messages stored, not yet acknowledged."""
        with self._lock:
            return self._count

    def size_bytes(self) -> int:
        """What the stored messages count against ``max_bytes``."""
        with self._lock:
            return self._bytes

    def oldest_age_s(self) -> float:
        with self._lock:
            row = self._db.execute("SELECT created_at FROM outbox ORDER BY id LIMIT 1").fetchone()
        return 0.0 if row is None else max(0.0, time.time() - row[0])

    @property
    def dropped(self) -> int:
        """Messages dropped (full or too old) since this outbox file was created; survives restarts."""
        with self._lock:
            return self._drops.dropped()

    @property
    def dropped_by_age(self) -> int:
        """Of :attr:`dropped`, the updates that left for being older than ``max_age_s``."""
        with self._lock:
            return self._drops.total["by_age"]

    def status(self) -> dict[str, Any]:
        """The ``outbox`` entry of the retained status (:class:`appliance.alarms.events.OutboxStatus`)."""
        age = round(self.oldest_age_s(), 1)
        with self._lock:
            by_kind = self._drops.by_kind()
            return {
                "depth": self._count,
                "oldest_age_s": age,
                "dropped": sum(by_kind.values()),
                "dropped_by_kind": by_kind,
                "dropped_by_age": self._drops.total["by_age"],
                "bytes": self._bytes,
                "max_bytes": self.max_bytes,
            }

    def report(self, force: bool = False) -> None:
        """Say what was dropped since the last warning, if the interval is over (or ``force``)."""
        with self._lock:
            self._drops.warn(time.time(), self.warn_interval_s, force)

    def close(self) -> None:
        self.report(force=True)
        with self._lock:
            self._db.close()

    # -- bounds ---------------------------------------------------------------------------------
    def _enforce_bounds(self, now: float) -> list[Drop]:
        """Drop what the bounds require, in the documented order (lock held, inside the transaction)."""
        drops: list[Drop] = []
        if now >= self._age_due:
            self._age_due = now + AGE_CHECK_INTERVAL_S
            drops = aged_updates(self._db, now - self.max_age_s)
        excess_bytes = self._bytes - self.max_bytes - sum(d.size for d in drops)
        excess_count = self._count - self.max_messages - len(drops)
        drops += choose_drops(self._db, excess_bytes, excess_count, {d.id for d in drops})
        if drops:
            self._db.executemany("DELETE FROM outbox WHERE id = ?", [(d.id,) for d in drops])
            self._count -= len(drops)
            self._bytes -= sum(d.size for d in drops)
            counts = Counter(d.kind for d in drops)
            counts["by_age"] = sum(1 for d in drops if d.by_age)
            self._db.executemany(
                "INSERT INTO outbox_meta (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
                [(f"dropped_{k}", n) for k, n in counts.items() if n],
            )
        return drops

    # -- space ----------------------------------------------------------------------------------
    def _compact(self) -> None:
        """Drained: give free pages back to the file system and truncate the WAL.

        In steps of :data:`COMPACT_STEP_PAGES`, the lock taken per step, so a ``put`` waits at most one
        step (tens of ms) rather than the whole compaction (1.3 s after draining 64 MiB).
        """
        try:
            with self._lock:
                page_size = self._db.execute("PRAGMA page_size").fetchone()[0]
                free = self._db.execute("PRAGMA freelist_count").fetchone()[0] * page_size
                if self._db.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:
                    if self._count == 0:  # a file of an older version: converted while empty (cheap)
                        self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")
                        self._db.execute("VACUUM")
                        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                    return
                if free < COMPACT_MIN_FREE_BYTES:  # the usual drain of a message or two
                    return
            for _ in range(free // (COMPACT_STEP_PAGES * page_size) + 2):  # bounded, whatever happens
                if not free:
                    break
                with self._lock:
                    # execute() would step it once (one page); executescript runs it to the end
                    self._db.executescript(f"PRAGMA incremental_vacuum({COMPACT_STEP_PAGES});")
                    free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
            with self._lock:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:  # e.g. another connection holds the file: the next drain does it
            log.debug("outbox: not compacted now (%s)", exc)

    def _reload_totals(self) -> None:
        count, size = self._db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM outbox").fetchone()
        self._count, self._bytes = int(count), int(size)
