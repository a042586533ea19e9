"""A model's time base: score a camera at the frame rate the model was learned at, whatever it delivers.

A window is T frames, so a model learned on 10 fps footage sees a 3 s window and per-frame speeds of
a 10 fps camera; fed 30 fps it would see 1 s windows and a third of the speeds (running looks like
walking). :class:`RateGate` keeps the frames that fall on the model's clock and drops the others
before pose estimation (which also saves the pose model's time on the dropped frames). A camera
slower than the model cannot be fixed by dropping: the daemon refuses a source that declares too
low a rate at start, and the status says when a live camera delivers too few frames.
"""

from __future__ import annotations

SLOWER_TOLERANCE = 0.9  # a camera delivering under 90 % of the model's rate is too slow for it


class RateGate:
    """Keeps frames at ``fps`` by their timestamps (source time for files and replays, capture time
    live); ``fps`` None keeps every frame (a bundle that does not record its learning rate)."""

    def __init__(self, fps: float | None, tolerance_s: float | None = None) -> None:
        self.fps = fps
        self.tolerance_s = tolerance_s  # how early a frame may come and still take its slot (jitter)
        self._next_due: float | None = None
        self._last_t: float | None = None
        self.dropped = 0

    def reset(self) -> None:
        self._next_due = self._last_t = None

    def keep(self, t: float) -> bool:
        if self.fps is None:
            return True
        if self._last_t is not None and t < self._last_t:
            self._next_due = None  # time went back: a file looped or a replay restarted
        self._last_t = t
        period = 1.0 / self.fps
        tolerance = period / 4 if self.tolerance_s is None else self.tolerance_s
        if self._next_due is not None and t < self._next_due - tolerance:
            self.dropped += 1
            return False
        late = self._next_due is None or t > self._next_due + period
        self._next_due = t + period if late else self._next_due + period
        return True


def kept(times_s, fps: float | None) -> list[bool]:
    """Which of these timestamps (seconds, in order) a :class:`RateGate` at ``fps`` keeps: the frames a
    camera scored at a model's rate hands on (files scored offline are thinned the same way)."""
    gate = RateGate(fps)
    return [gate.keep(float(t)) for t in times_s]


def too_slow(source_fps: float | None, model_fps: float | None) -> bool:
    """Whether a source of ``source_fps`` cannot feed a model learned at ``model_fps``."""
    return bool(source_fps and model_fps and source_fps < SLOWER_TOLERANCE * model_fps)
