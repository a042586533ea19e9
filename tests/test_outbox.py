"""The on-disk outbox: a bound that holds for every kind of message, a documented order of what goes,
drops summed up in one warning and counted across restarts, inserts that cost the same at any depth,
and space returned after a drain.

Payloads are real :class:`AnomalyEvent` JSON with a 33-joint skeleton, like the pipeline's.
"""

from __future__ import annotations

import json
import logging
import random
import sqlite3
import time
from pathlib import Path

from appliance.alarms.events import AnomalyEvent, ModelRef, Skeleton, iso_utc
from appliance.publish.outbox import Outbox

TOPIC = "appliance/box1/cam1/events"
_rng = random.Random(0)
POINTS = [(round(_rng.uniform(0, 1920), 2), round(_rng.uniform(0, 1080), 2), 0.93) for _ in range(33)]


def payload(event_no: int, kind: str, seq: int = 0) -> str:
    """A real event message of anomaly ``event_no``."""
    now = time.time()
    stamp = {"time": iso_utc(now), "time_ms": round(now * 1000)}
    end = {"ended_at": stamp["time"], "ended_at_ms": stamp["time_ms"], "end_reason": "below_threshold"}
    return AnomalyEvent(
        type=kind, event_id=f"ev{event_no}", seq=seq, appliance_id="box1", camera_id="cam1", track_id=1,
        **stamp, started_at=stamp["time"], started_at_ms=stamp["time_ms"], **(end if kind == "end" else {}),
        score=3.0, peak_score=4.0, threshold=2.99, frames_above=seq, model=ModelRef(name="m", version="1"),
        peak_skeleton=Skeleton(layout="blazepose33", image_size=(1920, 1080), frame_index=seq, points=POINTS),
    ).to_json()  # fmt: skip


def stored(box: Outbox) -> list[tuple[str, str]]:
    """(event_id, kind) of every stored message, in sending order."""
    return [(json.loads(m.payload)["event_id"], m.kind) for m in box.after(0, 100_000)]


def disk_bytes(path: Path) -> int:
    wal = path.with_name(path.name + "-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def test_the_byte_bound_holds_when_only_starts_and_ends_arrive(tmp_path):
    bound = 64 * 1024
    box = Outbox(tmp_path / "o.sqlite", max_bytes=bound)
    for i in range(200):  # a storm of short anomalies, nothing but starts and ends
        box.put(TOPIC, payload(i, "start"), "start")
        box.put(TOPIC, payload(i, "end", 1), "end")
        assert box.size_bytes() <= bound
    assert box.dropped > 0 and 0 < box.depth() < 400
    kept = stored(box)
    assert kept[-1] == ("ev199", "end")  # the newest stay
    assert all(kinds == ("start", "end") for kinds in zip(*[iter(k for _, k in kept)] * 2, strict=True))
    box.close()


def test_the_message_bound_holds_for_starts_and_ends_too(tmp_path):
    box = Outbox(tmp_path / "o.sqlite", max_messages=100)
    for i in range(450):  # the case: 450 kept with a bound of 100
        box.put(TOPIC, payload(i, "start"), "start")
    assert box.depth() == 100 and box.dropped == 350
    assert stored(box)[0] == ("ev350", "start")  # the oldest went
    box.close()


def test_when_full_updates_go_first_then_closed_anomalies_then_the_oldest(tmp_path):
    one = len(TOPIC) + len(payload(0, "update")) + 200  # a little over one message
    box = Outbox(tmp_path / "o.sqlite", max_bytes=6 * one)
    box.put(TOPIC, payload(1, "start"), "start")  # anomaly 1: open
    box.put(TOPIC, payload(2, "start"), "start")  # anomaly 2: closed below
    box.put(TOPIC, payload(1, "update", 1), "update")
    box.put(TOPIC, payload(2, "update", 1), "update")
    box.put(TOPIC, payload(2, "end", 2), "end")
    box.put(TOPIC, payload(3, "start"), "start")  # 6 messages: full
    box.put(TOPIC, payload(3, "update", 1), "update")  # 1. the oldest update goes
    assert ("ev1", "update") not in stored(box) and ("ev2", "update") in stored(box)
    box.put(TOPIC, payload(4, "start"), "start")
    box.put(TOPIC, payload(5, "start"), "start")  # the other two updates went
    assert [k for _, k in stored(box)].count("update") == 0
    box.put(TOPIC, payload(6, "start"), "start")  # 2. closed anomaly 2 goes, start and end together
    assert stored(box) == [("ev1", "start"), ("ev3", "start"), ("ev4", "start"), ("ev5", "start"),
                           ("ev6", "start")]  # fmt: skip
    box.put(TOPIC, payload(7, "start"), "start")  # six starts: full again
    box.put(TOPIC, payload(8, "start"), "start")  # 3. then the oldest of anything: open anomaly 1
    assert [e for e, _ in stored(box)] == ["ev3", "ev4", "ev5", "ev6", "ev7", "ev8"]
    assert box.status()["dropped_by_kind"] == {"update": 3, "start": 2, "end": 1}
    box.close()


def test_drops_are_summed_up_in_one_warning_per_interval(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="appliance.outbox")
    box = Outbox(tmp_path / "o.sqlite", max_messages=100)  # one warning a minute by default
    box.put(TOPIC, payload(0, "start"), "start")
    for i in range(400):  # 301 drops
        box.put(TOPIC, payload(0, "update", i + 1), "update")
    warnings = [r.getMessage() for r in caplog.records if r.name == "appliance.outbox"]
    assert len(warnings) == 1, warnings  # the first drop is said at once, the rest wait
    assert "outbox full" in warnings[0] and "dropped 1 update(s)" in warnings[0]
    box.close()  # what waited is said on close
    warnings = [r.getMessage() for r in caplog.records if r.name == "appliance.outbox"]
    assert (
        len(warnings) == 2 and "dropped 300 update(s)" in warnings[1] and "301 dropped in all" in warnings[1]
    )


def test_the_dropped_counter_survives_a_restart(tmp_path):
    path = tmp_path / "o.sqlite"
    box = Outbox(path, max_messages=100)
    for i in range(150):
        box.put(TOPIC, payload(i, "start"), "start")
    box.close()
    box = Outbox(path, max_messages=100)
    assert box.dropped == 50 and box.status()["dropped_by_kind"] == {"start": 50}
    box.put(TOPIC, payload(150, "start"), "start")
    assert box.dropped == 51
    box.close()


def test_an_insert_does_the_same_work_at_any_depth(tmp_path):
    """Counted in SQLite virtual-machine steps and statements, not timed (benchmarks/outbox.py times it)."""
    data = payload(0, "update")

    def open_with(depth: int) -> Outbox:
        path = tmp_path / f"d{depth}.sqlite"
        Outbox(path).close()
        db = sqlite3.connect(str(path), isolation_level=None)  # fast prefill: one transaction
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO outbox (topic, payload, kind, created_at) VALUES (?, ?, 'update', ?)",
            [(TOPIC, data.encode(), time.time())] * depth,
        )
        db.execute("COMMIT")
        db.close()
        return Outbox(path, max_messages=10**7)

    def work_of_puts(box: Outbox) -> tuple[int, list[str]]:
        steps, statements = [0], []
        # the outbox's own SQLite connection, observed: every VM step and statement of 20 puts
        box._db.set_progress_handler(lambda: steps.__setitem__(0, steps[0] + 1) or 0, 10)
        box._db.set_trace_callback(statements.append)
        for _ in range(20):
            box.put(TOPIC, data, "update")
        box._db.set_progress_handler(None, 0)
        box._db.set_trace_callback(None)
        return steps[0], statements

    shallow, _ = work_of_puts(open_with(100))
    deep, statements = work_of_puts(open_with(20_000))
    assert not [s for s in statements if "COUNT(" in s.upper()]
    assert deep < 2 * shallow + 50, (shallow, deep)


def test_the_file_shrinks_after_a_drain(tmp_path):
    path = tmp_path / "o.sqlite"
    box = Outbox(path)
    for i in range(1000):  # ~1.4 MB of events while the broker is away
        box.put(TOPIC, payload(i // 10, "update", i % 10), "update")
    full = disk_bytes(path)
    while messages := box.after(0, 200):  # the broker takes them all (the link acks on PUBACK)
        for m in messages:
            box.ack(m.id)
    assert box.depth() == 0
    assert full > 1_000_000 and disk_bytes(path) < full / 10, (full, disk_bytes(path))
    box.close()


def test_an_outbox_file_of_the_previous_version_keeps_its_messages_and_shrinks_when_drained(tmp_path):
    path = tmp_path / "o.sqlite"
    db = sqlite3.connect(str(path), isolation_level=None)  # the previous version's file, as it wrote it
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(
        "CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, "
        "payload BLOB NOT NULL, kind TEXT NOT NULL, created_at REAL NOT NULL)"
    )
    rows = [(payload(i // 3, ("start", "update", "end")[i % 3], i % 3), ("start", "update", "end")[i % 3])
            for i in range(1200)]  # fmt: skip
    db.executemany(
        "INSERT INTO outbox (topic, payload, kind, created_at) VALUES (?, ?, ?, ?)",
        [(TOPIC, p.encode(), k, time.time()) for p, k in rows],
    )
    db.close()
    box = Outbox(path, max_messages=500)  # a smaller bound: whole closed anomalies go after the updates
    assert box.depth() == 1200  # opening drops nothing; the next put does
    box.put(TOPIC, payload(10_000, "start"), "start")
    kept = stored(box)
    assert len(kept) == 499 and [k for _, k in kept].count("update") == 0  # 400 updates, 151 pairs
    assert kept[-1] == ("ev10000", "start")
    assert kept[:-1] == [(f"ev{i}", k) for i in range(151, 400) for k in ("start", "end")]
    full = disk_bytes(path)
    while messages := box.after(0, 200):
        for m in messages:
            box.ack(m.id)
    assert disk_bytes(path) < full / 10
    box.close()


def test_a_message_dropped_while_in_flight_is_acknowledged_without_harm(tmp_path):
    box = Outbox(tmp_path / "o.sqlite", max_messages=100)
    first = box.put(TOPIC, payload(0, "update"), "update")  # handed to the broker...
    for i in range(100):
        box.put(TOPIC, payload(1, "update", i), "update")  # ...and dropped meanwhile
    box.ack(first)  # the PUBACK arrives after all
    assert box.depth() == 100 and box.dropped == 1
    box.close()
