"""Rotated square regions of interest: the body crops the BlazePose landmark model reads.

Coordinates are continuous frame pixels (pixel ``i`` covers ``[i, i + 1)``). A ROI is a square of side
``size`` centred on ``(cx, cy)`` and rotated by ``rotation`` radians (clockwise on screen), so that the
body's head-up direction points to the top of the crop whatever the body's angle in the frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

# Body ROI side = 2 x |centre - scale point| x ROI_SCALE (the BlazePose alignment convention).
ROI_SCALE = 1.25


@dataclass(frozen=True)
class Roi:
    """A rotated square in frame pixels."""

    cx: float
    cy: float
    size: float
    rotation: float = 0.0

    @staticmethod
    def from_points(centre: np.ndarray, scale_point: np.ndarray, scale: float = ROI_SCALE) -> Roi:
        """ROI from an alignment pair: the body centre (mid-hip) and a point on its enclosing circle.

        Rotation puts ``scale_point`` straight above ``centre`` in the crop.
        """
        x0, y0 = float(centre[0]), float(centre[1])
        x1, y1 = float(scale_point[0]), float(scale_point[1])
        rotation = _normalise_angle(math.pi / 2 - math.atan2(-(y1 - y0), x1 - x0))
        size = 2.0 * math.hypot(x1 - x0, y1 - y0) * scale
        return Roi(x0, y0, size, rotation)

    @staticmethod
    def from_box(box: tuple[float, float, float, float], height_factor: float = 1.25) -> Roi:
        """Upright ROI around a person box (x0, y0, x1, y1): centred on it, side = height x factor."""
        x0, y0, x1, y1 = box
        side = max(y1 - y0, x1 - x0) * height_factor
        return Roi((x0 + x1) / 2.0, (y0 + y1) / 2.0, side, 0.0)

    def crop_to_frame(self, crop_side: int) -> np.ndarray:
        """2x3 affine matrix from crop pixel indices (cv2 convention) to frame pixel indices."""
        c, s = math.cos(self.rotation), math.sin(self.rotation)
        k = self.size / crop_side
        a = np.array([[c * k, -s * k], [s * k, c * k]], dtype=np.float64)
        # crop index u has continuous position u + 0.5; the crop centre (side / 2) maps to (cx, cy).
        centre_crop = np.array([crop_side / 2.0 - 0.5, crop_side / 2.0 - 0.5])
        offset = np.array([self.cx - 0.5, self.cy - 0.5]) - a @ centre_crop
        return np.hstack([a, offset[:, None]])

    def crop(self, frame: np.ndarray, crop_side: int) -> np.ndarray:
        """The ROI warped to ``crop_side`` x ``crop_side`` (bilinear, black outside the frame)."""
        m = self.crop_to_frame(crop_side)
        return cv2.warpAffine(
            frame,
            m,
            (crop_side, crop_side),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=(0, 0, 0),
        )

    def to_frame(self, points: np.ndarray, crop_side: int) -> np.ndarray:
        """Map (N, 2) continuous crop coordinates (0..crop_side) to continuous frame pixels."""
        c, s = math.cos(self.rotation), math.sin(self.rotation)
        rel = (np.asarray(points, dtype=np.float64) / crop_side - 0.5) * self.size
        x = c * rel[:, 0] - s * rel[:, 1] + self.cx
        y = s * rel[:, 0] + c * rel[:, 1] + self.cy
        return np.stack([x, y], axis=1)

    def box(self) -> tuple[float, float, float, float]:
        """Axis-aligned bounding box of the rotated square."""
        half = self.size / 2.0 * (abs(math.cos(self.rotation)) + abs(math.sin(self.rotation)))
        return (self.cx - half, self.cy - half, self.cx + half, self.cy + half)


def _normalise_angle(angle: float) -> float:
    """Angle in [-pi, pi)."""
    return angle - 2.0 * math.pi * math.floor((angle + math.pi) / (2.0 * math.pi))


def box_iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes (0 when either is empty)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
