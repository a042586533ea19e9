"""What zones cost per frame: the foot point and the zone placement of every track, against the
frame period (median of many frames, one thread).

    python benchmarks/zones.py [--tracks 8] [--zones 8] [--corners 16] [--frames 2000]

Each zone is a regular polygon with ``corners`` corners, placed so that feet fall in some zones and
not others; every zone has a schedule (the most work a placement does).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from appliance.alarms.detector import HysteresisRule  # noqa: E402
from appliance.alarms.zones import CameraZones, foot_point  # noqa: E402
from appliance.config import ZoneConfig  # noqa: E402
from appliance.pose.base import Person  # noqa: E402
from appliance.pose.layouts import BLAZEPOSE33  # noqa: E402


def polygon(cx: float, cy: float, r: float, corners: int) -> list[tuple[float, float]]:
    a = np.linspace(0, 2 * np.pi, corners, endpoint=False)
    return [(float(np.clip(cx + r * np.cos(t), 0, 1)), float(np.clip(cy + r * np.sin(t), 0, 1))) for t in a]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tracks", type=int, default=8)
    ap.add_argument("--zones", type=int, default=8)
    ap.add_argument("--corners", type=int, default=16)
    ap.add_argument("--frames", type=int, default=2000)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    schedule = {"timezone": "Europe/Berlin", "hours": ["06:00-22:00", "22:00-06:00"]}
    zones = CameraZones(
        [
            ZoneConfig(
                name=f"z{i}",
                kind="exclude" if i % 4 == 3 else "include",
                schedule=schedule,
                polygon=polygon(*rng.uniform(0.2, 0.8, 2), 0.2, args.corners),
            )
            for i in range(args.zones)
        ]
    )
    people = []
    for _ in range(args.tracks):
        kp = np.zeros((33, 3))
        kp[:, :2] = rng.uniform([100, 100], [668, 476], (33, 2))
        kp[:, 2] = 0.9
        people.append(Person(kp, BLAZEPOSE33, Person.box_of(kp), 1.0))
    rule = HysteresisRule(3.0)
    times = []
    for f in range(args.frames):
        t0 = time.perf_counter()
        for tid, p in enumerate(people):
            zones.place(tid, foot_point(p, (768, 576)), 1_800_000_000.0 + f * 0.1, rule)
        times.append(time.perf_counter() - t0)
    us = 1e6 * float(np.median(times))
    print(f"{args.tracks} tracks, {args.zones} zones of {args.corners} corners with schedules:")
    print(f"{us:.0f} us per frame (median of {args.frames}), {us / 1e3 / 100:.2%} of a 10 fps frame period")
    return 0


if __name__ == "__main__":
    sys.exit(main())
