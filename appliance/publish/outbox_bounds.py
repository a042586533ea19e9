"""The outbox's bounds: which stored messages leave when a new one does not fit, and saying so.

:func:`choose_drops` picks, in the order the outbox documents (oldest updates, then closed anomalies
as start+end pairs, then the oldest of anything), just enough messages for both bounds to hold.
:class:`DropLog` counts the drops per kind and sums them up in one warning per interval.
"""

from __future__ import annotations

import logging
import sqlite3
from collections import Counter
from typing import NamedTuple

log = logging.getLogger("appliance.outbox")  # the name journals and log filters know

DROPPABLE = "update"
PAIRED = ("start", "end")


class Drop(NamedTuple):
    id: int
    size: int
    kind: str
    by_age: bool


def aged_updates(db: sqlite3.Connection, cutoff: float) -> list[Drop]:
    """The updates stored before ``cutoff``, oldest first (the scan stops at the first young one)."""
    drops = []
    for mid, size, created in db.execute(
        "SELECT id, size, created_at FROM outbox WHERE kind = ? ORDER BY id", (DROPPABLE,)
    ):
        if created >= cutoff:
            break
        drops.append(Drop(mid, size, DROPPABLE, True))
    return drops


def choose_drops(
    db: sqlite3.Connection, excess_bytes: int, excess_count: int, chosen: set[int]
) -> list[Drop]:
    """Messages to drop so that ``excess_bytes`` and ``excess_count`` fall to 0 or below (``chosen``:
    ids already leaving, skipped)."""
    drops: list[Drop] = []

    def take(mid: int, size: int, kind: str) -> bool:
        """Drop one; True once both bounds hold."""
        nonlocal excess_bytes, excess_count
        if mid not in chosen:
            chosen.add(mid)
            drops.append(Drop(mid, size, kind, False))
            excess_bytes -= size
            excess_count -= 1
        return excess_bytes <= 0 and excess_count <= 0

    if excess_bytes <= 0 and excess_count <= 0:
        return drops
    for mid, size in db.execute("SELECT id, size FROM outbox WHERE kind = ? ORDER BY id", (DROPPABLE,)):
        if take(mid, size, DROPPABLE):
            return drops
    for sid, ssize, eid, esize in db.execute(
        "SELECT s.id, s.size, e.id, e.size FROM outbox AS s JOIN outbox AS e "
        "ON e.event_key = s.event_key AND e.kind = 'end' WHERE s.kind = 'start' ORDER BY s.id"
    ):
        take(sid, ssize, "start")
        if take(eid, esize, "end"):
            return drops
    for mid, size, kind in db.execute("SELECT id, size, kind FROM outbox ORDER BY id"):
        if take(mid, size, kind):
            break
    return drops


def _mib(n: float) -> str:
    return f"{n / 1048576:.1f} MiB"


class DropLog:
    """Drops per kind since the outbox file was created (``by_age`` counts the aged-out updates among
    them), and the ones not yet reported; the caller holds the outbox's lock."""

    def __init__(self, stored: Counter[str], max_bytes: int, max_messages: int, max_age_s: float) -> None:
        self.total = stored
        self.max_bytes, self.max_messages, self.max_age_s = max_bytes, max_messages, max_age_s
        self._pending: Counter[str] = Counter()
        self._pending_since = 0.0
        self._warn_due = 0.0

    def dropped(self) -> int:
        return sum(n for kind, n in self.total.items() if kind != "by_age")

    def by_kind(self) -> dict[str, int]:
        return {k: n for k, n in sorted(self.total.items()) if k != "by_age" and n}

    def count(self, drops: list[Drop], now: float) -> None:
        if not drops:
            return
        if not self._pending:
            self._pending_since = now
        for drop in drops:
            self.total[drop.kind] += 1
            self._pending["by_age" if drop.by_age else drop.kind] += 1
            if drop.by_age:
                self.total["by_age"] += 1

    def warn(self, now: float, interval_s: float, force: bool = False) -> None:
        """One summary line per ``interval_s``."""
        if not self._pending or (now < self._warn_due and not force):
            return
        parts = [f"{n} {kind}(s)" for kind, n in sorted(self._pending.items()) if kind != "by_age" and n]
        full = (
            f"outbox full (bound {_mib(self.max_bytes)}, {self.max_messages:,} messages): dropped "
            f"{', '.join(parts)} in the last {now - self._pending_since:.0f} s "
            "(oldest updates first, then closed anomalies, then the oldest of anything)"
            if parts
            else ""
        )
        aged = self._pending["by_age"]
        old = f"{aged} update(s) older than {self.max_age_s:.0f} s left the outbox" if aged else ""
        log.warning(
            "%s; %d dropped in all (status outbox.dropped)",
            "; ".join(p for p in (full, old) if p),
            self.dropped(),
        )
        self._pending.clear()
        self._warn_due = now + interval_s
