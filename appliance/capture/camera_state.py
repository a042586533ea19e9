"""The states a camera goes through, as ``stats()``, the status and events report them."""

from __future__ import annotations

from enum import Enum


class CameraState(str, Enum):
    """Lifecycle of a :class:`Camera` (the values are what ``stats()`` and events report)."""

    STARTING = "starting"  # first open in progress
    STREAMING = "streaming"  # frames arriving
    RECONNECTING = "reconnecting"  # source lost or stalled; waiting out the backoff, then reopening
    FAILED = "failed"  # gave up after max_failures attempts in a row without a frame
    ENDED = "ended"  # a file reached its end (loop=False)
    STOPPED = "stopped"  # stop() was called

    @property
    def terminal(self) -> bool:
        """No more frames will come."""
        return self in (CameraState.FAILED, CameraState.ENDED, CameraState.STOPPED)
