"""Outbox costs, measured in one run: insert time against depth, disk per 1,000 events, space after a drain.

    python benchmarks/outbox.py [--depths 0,1000,10000,100000] [--puts 200]

Payloads are real :class:`appliance.alarms.events.AnomalyEvent` JSON with a 33-joint skeleton (pixels
rounded to 0.01 like the pipeline's), in the mix of one anomaly: a start, updates, an end. Every
insert is a real ``Outbox.put`` (WAL, synchronous=FULL: one fsync each), so absolute times depend
on the disk; what matters is that they do not grow with depth.
"""

from __future__ import annotations

import argparse
import logging
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from appliance.alarms.events import AnomalyEvent, ModelRef, Skeleton, iso_utc  # noqa: E402
from appliance.publish.outbox import DEFAULT_MAX_BYTES, ROW_OVERHEAD, Outbox  # noqa: E402

TOPIC = "appliance/line3-box/line3-east/events"
UPDATES_PER_ANOMALY = 8


def event(i: int, rng: random.Random) -> AnomalyEvent:
    """Message ``i`` of a stream of anomalies: start, UPDATES_PER_ANOMALY updates, end, next."""
    n = UPDATES_PER_ANOMALY + 2
    seq = i % n
    kind = "start" if seq == 0 else "end" if seq == n - 1 else "update"
    now = time.time()
    stamp = {"time": iso_utc(now), "time_ms": round(now * 1000)}
    points = [
        (round(rng.uniform(0, 1920), 2), round(rng.uniform(0, 1080), 2), round(rng.random(), 2))
        for _ in range(33)
    ]
    skeleton = Skeleton(layout="blazepose33", image_size=(1920, 1080), frame_index=i * 30, points=points)
    end = {"ended_at": stamp["time"], "ended_at_ms": stamp["time_ms"], "end_reason": "below_threshold"}
    return AnomalyEvent(
        type=kind, event_id=f"line3-east-{i // n:08d}-7f3a", seq=seq, appliance_id="line3-box",
        camera_id="line3-east", track_id=17, **stamp, started_at=stamp["time"],
        started_at_ms=stamp["time_ms"], **(end if kind == "end" else {}), score=3.14159,
        peak_score=4.2718, threshold=2.99, frames_above=seq * 30,
        model=ModelRef(name="starter-walking-fused", version="2.0.0"), peak_skeleton=skeleton,
    )  # fmt: skip


def disk_bytes(path: Path) -> int:
    """The outbox file and its WAL."""
    wal = path.with_name(path.name + "-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def prefill(path: Path, payloads: list[tuple[str, str]], depth: int) -> None:
    """``depth`` stored messages, written in one transaction (fast) in the outbox's own schema."""
    Outbox(path, max_messages=10**9, max_bytes=2**40).close()
    db = sqlite3.connect(str(path), isolation_level=None)
    db.execute("BEGIN")
    now = time.time()
    rows = []
    for i in range(depth):
        kind, data = payloads[i % len(payloads)]
        key = f"k{i // (UPDATES_PER_ANOMALY + 2)}" if kind != "update" else None
        rows.append((TOPIC, data.encode(), kind, now, len(TOPIC) + len(data) + ROW_OVERHEAD, key))
    db.executemany(
        "INSERT INTO outbox (topic, payload, kind, created_at, size, event_key) VALUES (?, ?, ?, ?, ?, ?)",
        rows,
    )
    db.execute("COMMIT")
    db.close()


def median_put_ms(box: Outbox, payloads: list[tuple[str, str]], puts: int) -> float:
    times = []
    for i in range(puts):
        kind, data = payloads[i % len(payloads)]
        t = time.perf_counter()
        box.put(TOPIC, data, kind)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="0,1000,10000,100000")
    parser.add_argument("--puts", type=int, default=200)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the outbox's drop summaries are not figures
    rng = random.Random(0)
    payloads = [(e.type, e.to_json()) for e in (event(i, rng) for i in range(1000))]
    mean_payload = statistics.mean(len(p) for _, p in payloads)
    print(f"payload: {mean_payload:.0f} bytes of JSON on average (33 joints; start, 8 updates, end)\n")
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        print("| depth (messages) | median put, ms | median put, ms, full (bound = min(64 MiB, stored)) |")
        print("|---:|---:|---:|")
        for depth in (int(x) for x in args.depths.split(",")):
            path = d / f"depth{depth}.sqlite"
            prefill(path, payloads, depth)
            box = Outbox(path, max_messages=10**9, max_bytes=2**40)
            free = median_put_ms(box, payloads, args.puts)
            stored = box.size_bytes()
            box.close()
            box = Outbox(path, max_messages=10**9, max_bytes=min(DEFAULT_MAX_BYTES, stored or 1))
            full = median_put_ms(box, payloads, args.puts) if depth else float("nan")
            box.close()
            print(f"| {depth:,} | {free:.2f} | {full:.2f} |")
            path.unlink()

        path = d / "disk.sqlite"  # disk per 1,000 events, written one put at a time
        box = Outbox(path, max_messages=10**9, max_bytes=2**40)
        n = 10_000
        prefill_start = time.perf_counter()
        for i in range(n):
            kind, data = payloads[i % len(payloads)]
            box.put(TOPIC, data, kind)
        elapsed = time.perf_counter() - prefill_start
        box._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        counted = box.size_bytes()
        on_disk = disk_bytes(path)
        print(f"\n{n:,} events put one by one in {elapsed:.1f} s")
        print(f"| per 1,000 events | bytes |\n|---|---:|\n| JSON payloads | {mean_payload * 1000:,.0f} |")
        print(f"| counted against outbox_max_bytes | {counted / n * 1000:,.0f} |")
        print(f"| on disk (file after checkpoint) | {on_disk / n * 1000:,.0f} |")
        print(f"| file / counted | {on_disk / counted:.2f} |")

        before = disk_bytes(path)
        while msgs := box.after(0, 500):  # a drain: every message acknowledged, as on PUBACK
            for m in msgs:
                box.ack(m.id)
        after = disk_bytes(path)
        box.close()
        mib, kib = before / 2**20, after / 1024
        print(f"\ndrain of {n:,} events: file + WAL {mib:.1f} MiB before, {kib:.0f} KiB after")

        path = d / "bound.sqlite"  # a full outbox at a small bound: the file stays near the bound
        bound = 8 * 2**20
        box = Outbox(path, max_messages=10**9, max_bytes=bound)
        for i in range(int(bound / (mean_payload + ROW_OVERHEAD) * 1.5)):
            kind, data = payloads[i % len(payloads)]
            box.put(TOPIC, data, kind)
        box._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        counted, on_disk = box.size_bytes() / 2**20, disk_bytes(path) / 2**20
        print(
            f"full at {bound / 2**20:.0f} MiB (1.5x that written): counted {counted:.2f} MiB, "
            f"file + WAL {on_disk:.2f} MiB, {box.depth():,} messages, dropped {box.dropped:,}"
        )
        box.close()


if __name__ == "__main__":
    main()
