"""Person proposals for people too small for the BlazePose detector (elevated cameras, ~100 px people).

The BlazePose detector finds a person by the face; at 768x576 letterboxed to 224 a 100 px person's face
is ~4 px and goes unseen. The landmark model itself works on such people once given a body ROI, and its
pose-present flag rejects ROIs without a body, so a cheap proposal stage is enough:

- ``motion``: foreground blobs of a background model (OpenCV MOG2) on a grey frame ~384 px wide, split
  into person-wide boxes; an upright ROI per box. Finds walking people, not ones standing still from
  the first frame (tracking keeps them once found).
- ``tiles``: the BlazePose detector on overlapping zoomed tiles of the frame, a few tiles per call
  (slower to cover the frame; finds people standing still too).
"""

from __future__ import annotations

import math
from typing import Protocol

import cv2
import numpy as np

from appliance.pose.blazepose_detector import PoseDetector
from appliance.pose.roi import Roi

PERSON_ASPECT = 0.45  # typical width / height of a walking person's box
MIXTURES = 3  # Gaussians per pixel of the background model


class ProposalSource(Protocol):
    """Something that suggests body ROIs in a frame (``detector``: the pose engine's, lent for this frame)."""

    def propose(self, frame_bgr: np.ndarray, detector: PoseDetector) -> list[Roi]:
        """Body ROIs worth running the landmark model on, most promising first."""

    def reset(self) -> None:
        """Forget state."""


class MotionProposals:
    """Moving-blob boxes from a MOG2 background model, as upright body ROIs.

    The model sees only the frames it is asked for proposals on (every ``proposal_interval`` frames),
    so its ``history`` counts those calls and motion between them is larger, hence easier to see.

    Blobs shorter than ``min_height`` or taller than ``max_height_fraction`` of the frame are ignored;
    blobs wider than a person are split into person-wide boxes (people walking side by side).
    """

    def __init__(
        self,
        min_height: float = 40.0,
        max_height_fraction: float = 0.9,
        work_size: int = 384,
        history: int = 60,
        roi_factor: float = 1.3,
    ) -> None:
        self.min_height = min_height
        self.max_height_fraction = max_height_fraction
        self.work_size = work_size  # longest side of the background model's frame, px
        self.roi_factor = roi_factor
        self.history = history
        self._scale = 1.0
        self._kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
        self._mask: np.ndarray | None = None
        self.reset()

    def reset(self) -> None:
        self._bg = cv2.createBackgroundSubtractorMOG2(
            history=self.history, varThreshold=25, detectShadows=False
        )
        # 3 Gaussians per pixel instead of 5: 40 % less memory per camera (~4 MB at 384 px), the same
        # people found on the walkway (4.22 against 4.28 per frame over 300 frames)
        self._bg.setNMixtures(MIXTURES)
        self._mask = None

    def observe(self, frame_bgr: np.ndarray) -> None:
        """Update the background model with a frame and keep its foreground mask."""
        h, w = frame_bgr.shape[:2]
        self._scale = max(1.0, max(h, w) / self.work_size)
        size = (round(w / self._scale), round(h / self._scale))
        small = cv2.resize(frame_bgr, size, interpolation=cv2.INTER_LINEAR)  # INTER_AREA: 4 ms at 720p
        self._mask = self._bg.apply(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY))

    def boxes(self) -> list[tuple[float, float, float, float]]:
        """Person-sized boxes (frame pixels) around the current foreground, wide blobs split."""
        if self._mask is None:
            return []
        mask = cv2.morphologyEx(self._mask, cv2.MORPH_OPEN, self._kernel)
        mask = cv2.dilate(mask, self._kernel, iterations=2)
        n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        k = self._scale
        max_h = mask.shape[0] * k * self.max_height_fraction
        out: list[tuple[float, float, float, float]] = []
        for x, y, w, h, _area in stats[1:n]:
            x0, y0, w, h = float(x * k), float(y * k), float(w * k), float(h * k)
            if h < self.min_height or h > max_h:
                continue
            parts = max(1, round(w / (h * PERSON_ASPECT * 1.5))) if w > h * PERSON_ASPECT * 1.5 else 1
            step = w / parts
            for i in range(parts):
                out.append((x0 + i * step, y0, x0 + (i + 1) * step, y0 + h))
        out.sort(key=lambda b: -(b[3] - b[1]))
        return out

    def propose(self, frame_bgr: np.ndarray, detector: PoseDetector | None = None) -> list[Roi]:
        self.observe(frame_bgr)
        return [Roi.from_box(b, self.roi_factor) for b in self.boxes()]


class TileProposals:
    """The BlazePose detector on overlapping square tiles, each zoomed to the detector's input.

    Each call scans the next ``tiles_per_pass`` tiles in turn (round robin), so the cost per call is
    bounded and the whole frame is covered every ``ceil(tiles / tiles_per_pass)`` calls.
    """

    def __init__(self, tile: int = 192, overlap: float = 0.25, tiles_per_pass: int = 5) -> None:
        self.tile = tile
        self.overlap = overlap
        self.tiles_per_pass = tiles_per_pass
        self._next = 0

    def reset(self) -> None:
        self._next = 0

    def regions(self, width: int, height: int) -> list[tuple[int, int, int, int]]:
        """(x, y, w, h) tiles covering the frame with the configured overlap."""
        t = min(self.tile, width, height)
        step = max(1, int(t * (1.0 - self.overlap)))

        def starts(extent: int) -> list[int]:
            n = max(1, math.ceil((extent - t) / step) + 1)
            return sorted({min(i * step, extent - t) for i in range(n)})

        return [(x, y, t, t) for y in starts(height) for x in starts(width)]

    def propose(self, frame_bgr: np.ndarray, detector: PoseDetector) -> list[Roi]:
        h, w = frame_bgr.shape[:2]
        regions = self.regions(w, h)
        count = min(self.tiles_per_pass, len(regions))
        chosen = [regions[(self._next + i) % len(regions)] for i in range(count)]
        self._next = (self._next + count) % len(regions)
        dets = [d for region in chosen for d in detector.detect(frame_bgr, region)]
        dets.sort(key=lambda d: -d.score)
        return [Roi.from_points(d.keypoints[0], d.keypoints[1]) for d in dets]
