"""The one-slot buffer between a camera's capture thread and its consumer: the newest frame wins.

A slow consumer (pose + scorer) always gets the latest picture and memory never grows: a frame it
did not take in time is replaced and counted as dropped. Files read without pacing wait for the
consumer instead (backpressure), so every frame of a replay is scored.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Frame:
    """One captured frame.

    ``index`` counts the frames the camera published (after ``fps`` decimation), monotonic over
    reconnects and loops, so a gap between two frames a consumer got is the number it missed.
    ``wall_time`` (``time.time()``) is for events and logs, ``mono_time`` (``time.monotonic()``)
    for intervals. Files also give the frame's position in the file (``source_frame`` from 0,
    ``source_ms``); live sources leave them None.
    """

    image: np.ndarray
    index: int
    camera_id: str
    wall_time: float
    mono_time: float
    source_frame: int | None = None
    source_ms: float | None = None


class NewestFrame:
    """Holds at most one frame; counts what was published, taken and dropped."""

    def __init__(self, camera_id: str) -> None:
        self.camera_id = camera_id
        self._cond = threading.Condition()
        self._slot: Frame | None = None
        self._next_index = 0
        self.published = self.consumed = self.dropped = 0

    def put(
        self,
        image: np.ndarray,
        source_frame: int | None,
        source_ms: float | None,
        backpressure: bool,
        current: Callable[[], bool],
    ) -> None:
        """Offer a frame; with ``backpressure`` wait until the previous one was taken (or ``current()``
        turns False: the camera stopped or abandoned this reader)."""
        with self._cond:
            if backpressure:
                while self._slot is not None and current():
                    self._cond.wait(0.5)
                if not current():
                    return
            if self._slot is not None:
                self.dropped += 1
            self._slot = Frame(
                image=image,
                index=self._next_index,
                camera_id=self.camera_id,
                wall_time=time.time(),
                mono_time=time.monotonic(),
                source_frame=source_frame,
                source_ms=source_ms,
            )
            self._next_index += 1
            self.published += 1
            self._cond.notify_all()

    def take(self, timeout: float | None, finished: Callable[[], bool]) -> Frame | None:
        """The newest frame not yet taken, waiting up to ``timeout`` s (None = forever); None on timeout,
        or at once when ``finished()`` and no frame is pending. Call :meth:`wake` when that changes."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._slot is None:
                if finished():
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            frame, self._slot = self._slot, None
            self.consumed += 1
            self._cond.notify_all()
            return frame

    def wake(self) -> None:
        """Let waiters re-check: the camera's state changed (it may have ended or stopped)."""
        with self._cond:
            self._cond.notify_all()
