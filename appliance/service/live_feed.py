"""What the console shows of a camera, without pixels: the newest frame's skeletons with their track
ids and scores, and where people's feet were in the last hour (a coarse heat map).

The camera thread hands over references only (:meth:`LiveFeed.update`, a few microseconds); the
skeletons are turned into plain lists when the console asks (at most 10 times a second), and the
heat map takes one foot point per person every :data:`HEAT_EVERY` frames.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

import numpy as np

from appliance.alarms.zones import foot_point
from appliance.pose.base import Person
from appliance.pose.layouts import BODY_JOINTS, BODY_LIMBS, to_body_graph

HEAT_GRID = (48, 27)  # columns x rows over the image (16:9 cells on a 16:9 camera)
HEAT_EVERY = 5
HEAT_MINUTES = 60


class FootHeat:
    """Foot points per grid cell, kept per minute for the last hour."""

    def __init__(self) -> None:
        self._minutes: deque[tuple[int, np.ndarray]] = deque()

    def add(self, points: list[tuple[float, float]], now: float) -> None:
        minute = int(now // 60)
        if not self._minutes or self._minutes[-1][0] != minute:
            self._minutes.append((minute, np.zeros(HEAT_GRID[::-1], dtype=np.uint32)))
            while self._minutes and self._minutes[0][0] <= minute - HEAT_MINUTES:
                self._minutes.popleft()
        grid = self._minutes[-1][1]
        cols, rows = HEAT_GRID
        for x, y in points:
            if 0.0 <= x < 1.0 and 0.0 <= y < 1.0:
                grid[int(y * rows), int(x * cols)] += 1

    def grid(self, now: float) -> np.ndarray:
        """Counts per cell (rows x columns) over the last hour."""
        oldest = int(now // 60) - HEAT_MINUTES
        total = np.zeros(HEAT_GRID[::-1], dtype=np.uint32)
        for minute, g in list(self._minutes):
            if minute > oldest:
                total += g
        return total


class LiveFeed:
    """One camera's newest skeletons and its foot heat map (thread-safe)."""

    def __init__(self, keep_image: bool = False) -> None:
        self.keep_image = keep_image  # web.setup_image: the newest frame, by reference, for aiming
        self._image: np.ndarray | None = None
        self._lock = threading.Lock()
        self._latest: (
            tuple[int, float, tuple[int, int], dict[int, Person], dict[int, float], float] | None
        ) = None
        self.heat = FootHeat()
        self._frames = 0

    def update(
        self, index: int, when: float, size: tuple[int, int], tracks: dict[int, Person],
        scores: dict[int, float], threshold: float, image: np.ndarray | None = None,
    ) -> None:  # fmt: skip
        """From the camera thread, once per frame: references only, and a heat sample now and then."""
        with self._lock:
            self._latest = (index, when, size, tracks, scores, threshold)
            if self.keep_image:
                self._image = image
            self._frames += 1
            sample = self._frames % HEAT_EVERY == 0
        if sample and tracks:
            self.heat.add([foot_point(p, size) for p in tracks.values()], time.time())

    def scores(self) -> dict[int, float]:
        """The newest frame's window scores by track (tracks without a full window yet left out)."""
        with self._lock:
            latest = self._latest
        return {} if latest is None else dict(latest[4])

    def still_jpeg(self) -> bytes | None:
        """The newest camera frame as JPEG, only when the site turned ``web.setup_image`` on (for
        aiming a camera; made on request, never stored, never published)."""
        with self._lock:
            image = self._image if self.keep_image else None
        if image is None:
            return None
        import cv2

        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
        return bytes(data) if ok else None

    def snapshot(self) -> dict[str, Any] | None:
        """The newest frame as plain data: ``frame``, ``time_ms``, ``size``, ``threshold`` and per
        track ``id``, ``score`` (None before its first full window) and ``joints`` ([x, y, confidence]
        in image pixels, the 15 body joints of ``BODY_JOINTS``)."""
        with self._lock:
            latest = self._latest
        if latest is None:
            return None
        index, when, size, tracks, scores, threshold = latest
        people = []
        for tid, person in sorted(tracks.items()):
            body = to_body_graph(person.keypoints, person.layout)
            joints = [[round(float(x), 1), round(float(y), 1), round(float(c), 2)] for x, y, c in body]
            score = scores.get(tid)
            people.append({"id": tid, "score": None if score is None else round(score, 3), "joints": joints})
        return {
            "frame": index, "time_ms": round(when * 1000), "size": list(size),
            "threshold": threshold if np.isfinite(threshold) else None, "people": people,
        }  # fmt: skip


def skeleton_layout() -> dict[str, Any]:
    """Joint names and limbs (index pairs) for whoever draws :meth:`LiveFeed.snapshot`."""
    return {"joints": list(BODY_JOINTS), "limbs": [list(pair) for pair in BODY_LIMBS]}
