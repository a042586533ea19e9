"""What every pose backend returns, and the interface the daemon drives them through.

A backend turns one BGR frame into zero or more :class:`Person` detections with keypoints in image
pixels of that frame. Backends are chosen by the ``type`` key of the ``pose`` config section and
imported lazily (:func:`appliance.pose.registry.create_backend`), so a device only needs the
runtime of the backend it uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from appliance.pose.layouts import JointLayout


@dataclass
class Person:
    """One person seen in one frame.

    ``keypoints`` is (K, 3): x, y in pixels of the frame and a confidence in [0, 1] (0 = joint not
    seen), in ``layout``'s joint order. ``box`` is (x0, y0, x1, y1) in pixels around the body;
    ``score`` the backend's confidence that this is a person. ``track_hint`` is an identity the
    backend itself keeps across frames (e.g. a replayed file's track id), or None.
    """

    keypoints: np.ndarray
    layout: JointLayout
    box: tuple[float, float, float, float]
    score: float
    track_hint: int | None = None

    @staticmethod
    def box_of(keypoints: np.ndarray, min_confidence: float = 0.1) -> tuple[float, float, float, float]:
        """Bounding box of the joints seen with at least ``min_confidence`` (all zeros if none)."""
        seen = keypoints[:, 2] >= min_confidence
        if not seen.any():
            return (0.0, 0.0, 0.0, 0.0)
        xy = keypoints[seen, :2]
        x0, y0 = xy.min(axis=0)
        x1, y1 = xy.max(axis=0)
        return (float(x0), float(y0), float(x1), float(y1))


@runtime_checkable
class PoseBackend(Protocol):
    """A pose estimator the daemon calls once per frame, in frame order."""

    #: joint layout of the keypoints it returns
    layout: JointLayout

    def infer(self, frame: np.ndarray) -> list[Person]:
        """People in one BGR uint8 frame (H, W, 3). May keep state between calls (tracking)."""

    def reset(self) -> None:
        """Forget inter-frame state (the camera was reopened; the next frame is not a continuation)."""

    def close(self) -> None:
        """Release runtime resources."""
