"""A cumulative latency histogram (Prometheus-style buckets) that a camera thread fills at a cost of
one bisect per frame, without a metrics library on the device's hot path."""

from __future__ import annotations

import bisect
import threading

BUCKETS_MS = (1.0, 2.5, 5.0, 10.0, 20.0, 35.0, 50.0, 75.0, 100.0, 150.0, 250.0, 500.0, 1000.0)


class LatencyHistogram:
    """Counts of observations per bucket (``le`` bounds in ms, then +Inf), and their sum."""

    def __init__(self, bounds_ms: tuple[float, ...] = BUCKETS_MS) -> None:
        self.bounds_ms = bounds_ms
        self._counts = [0] * (len(bounds_ms) + 1)
        self._sum_ms = 0.0
        self._lock = threading.Lock()

    def observe(self, ms: float) -> None:
        i = bisect.bisect_left(self.bounds_ms, ms)
        with self._lock:
            self._counts[i] += 1
            self._sum_ms += ms

    def cumulative(self) -> tuple[list[tuple[float, int]], int, float]:
        """``([(le_ms, count at or below)...], total count, sum in ms)``; the last ``le`` is inf."""
        with self._lock:
            counts, total_ms = list(self._counts), self._sum_ms
        out, running = [], 0
        for bound, n in zip((*self.bounds_ms, float("inf")), counts, strict=True):
            running += n
            out.append((bound, running))
        return out, running, total_ms
