"""One pose engine for every camera: a few copies of the pose models, lent one frame at a time.

Each camera keeps its own tracking state (who it follows, where) but no models of its own: the
interpreters' packed weights are what a camera costs in memory (~70 MB for BlazePose), so they are
built once per copy, not once per camera. Copies are lent first come, first served: a camera that
asks while all copies are busy is served before any camera that asks after it, so a busy camera
(many people, long frames) cannot starve another. Each camera's capture already keeps only its
newest frame, so waiting for the engine drops old frames there, never queues them.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

Models = TypeVar("Models")
ENGINE_SHARE = 0.6  # of a frame period, for landmark runs: the rest is detector, decode, scoring


def engine_share_ms(fps: float, copies: int, cameras: int, share: float = ENGINE_SHARE) -> float:
    """One camera's landmark budget per frame when ``cameras`` cameras at ``fps`` share ``copies``
    copies of the pose models: ``share`` of the frame period times its share of the copies."""
    return share * 1000.0 / fps * min(1.0, copies / max(1, cameras))


class ModelPool(Generic[Models]):
    """``copies`` interchangeable model sets built by ``build``; :meth:`lease` lends one, in FIFO order.

    Counters (read without the lock; each is one assignment): ``leases`` granted, ``waited_s`` in all,
    ``max_overtaken``, the most leases granted to others between one request and its grant: with
    FIFO lending and each camera asking for one frame at a time, it stays below the number of
    cameras.
    """

    def __init__(self, build: Callable[[], Models], copies: int = 1) -> None:
        if copies < 1:
            raise ValueError(f"a model pool needs at least one copy, not {copies}")
        self.copies = copies
        self._free: list[Models] = [build() for _ in range(copies)]
        self._all = list(self._free)
        self._cond = threading.Condition()
        self._queue: deque[object] = deque()
        self.leases = 0
        self.waited_s = 0.0
        self.max_overtaken = 0

    def sample(self) -> Models:
        """One of the copies, to read what they all share (where they run); not to run it."""
        return self._all[0]

    @contextmanager
    def lease(self) -> Iterator[Models]:
        """A model set for the caller's exclusive use until the block ends (waits its turn)."""
        ticket = object()
        t0 = time.monotonic()
        with self._cond:
            self._queue.append(ticket)
            granted_before = self.leases
            while self._queue[0] is not ticket or not self._free:
                self._cond.wait()
            self._queue.popleft()
            models = self._free.pop()
            self.max_overtaken = max(self.max_overtaken, self.leases - granted_before)
            self.leases += 1
            self.waited_s += time.monotonic() - t0
            self._cond.notify_all()  # the next in line may find another free copy
        try:
            yield models
        finally:
            with self._cond:
                self._free.append(models)
                self._cond.notify_all()

    def stats(self) -> dict[str, float | int]:
        return {
            "copies": self.copies,
            "leases": self.leases,
            "waited_s": round(self.waited_s, 3),
            "max_overtaken": self.max_overtaken,
        }

    def close(self, release: Callable[[Models], None]) -> None:
        """Release every copy with ``release`` (at shutdown, after the cameras stopped)."""
        with self._cond:
            for models in self._all:
                release(models)
            self._free, self._all = [], []
