"""Skeleton maps: the paper's preprocessing, one implementation for training (server) and scoring (edge).

A map is drawn in four steps (seed paper, section 2.2, Fig. 5):

1. draw the body-graph limbs on a canvas of the source resolution (640x480 in the paper);
2. crop a square centred on the neck, as tall as the image by default (480x480); the part of the
   square outside the image is black (padding);
3. resize to ``map_size`` x ``map_size`` (28x28) with bilinear interpolation;
4. grayscale and binarise.

Choices the paper leaves open, fixed here and kept in every model's input contract:

- Limbs are drawn in one intensity on a single-channel canvas, so step 4's grayscale conversion is
  the identity (OpenPose colours would only change which limbs survive the binarisation).
- Limb thickness is given in *map* pixels, so the map looks the same whatever the camera resolution.
  Default 0.5: 9 canvas pixels for a 480 crop, about what OpenPose draws at 640x480; a full map
  pixel merges the arms into the torso of a person 180 px tall. Joints are drawn as dots of the same width,
  so a joint whose neighbours are missing still shows.
- The bilinear resize is the antialiased kind (a triangle filter widened to the reduction factor, as
  PIL's ``BILINEAR``). Plain two-tap bilinear (``cv2.INTER_LINEAR``) at a 17x reduction samples
  only 4 of every 289 canvas pixels and drops limbs at random.
- The drawing happens directly in the crop's frame, with the part outside the source image blanked
  afterwards: the result is identical to drawing the full canvas and cropping, at a fraction of
  the cost.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import cv2
import numpy as np

from appliance.pose.layouts import BODY_LIMBS, NECK, JointLayout, to_body_graph

_SHIFT = 4  # sub-pixel bits for OpenCV drawing
_ONE = 1 << _SHIFT


@dataclass(frozen=True)
class MapSpec:
    """Parameters of the skeleton map; part of a model's input contract (defaults = the paper)."""

    map_size: int = 28
    crop_fraction: float = 1.0  # crop side as a fraction of the image height (480 of 480)
    limb_thickness: float = 0.5  # in map pixels (9 canvas pixels for a 480 crop)
    binarize_threshold: float = 0.2  # fraction of full intensity after resizing
    min_confidence: float = 0.1  # joints below this are not drawn

    def crop_side(self, image_height: int) -> int:
        return max(self.map_size, round(self.crop_fraction * image_height))

    def canvas_thickness(self, crop_side: int) -> int:
        return max(1, round(self.limb_thickness * crop_side / self.map_size))

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


@lru_cache(maxsize=16)
def _triangle_weights(src: int, dst: int) -> np.ndarray:
    """(dst, src) resampling matrix of an antialiased bilinear (triangle) filter."""
    scale = src / dst
    support = max(scale, 1.0)
    centres = (np.arange(dst) + 0.5) * scale
    positions = np.arange(src) + 0.5
    weights = np.clip(1.0 - np.abs(positions[None, :] - centres[:, None]) / support, 0.0, None)
    weights /= weights.sum(axis=1, keepdims=True)
    return weights.astype(np.float32)


def resize_bilinear_antialiased(image: np.ndarray, size: int) -> np.ndarray:
    """Resize a square single-channel image to ``size`` x ``size`` (float32, same value range)."""
    w = _triangle_weights(image.shape[0], size)
    return w @ image.astype(np.float32) @ w.T


def neck_of(body: np.ndarray, min_confidence: float) -> np.ndarray | None:
    """The neck of a (15, 3) body-graph skeleton, or None if it was not seen."""
    neck = body[NECK]
    return neck[:2].copy() if neck[2] >= min_confidence else None


def draw_crop(
    bodies: np.ndarray,
    centre: np.ndarray,
    image_size: tuple[int, int],
    spec: MapSpec,
) -> np.ndarray:
    """Draw (P, 15, 3) body-graph skeletons into the neck-centred crop (uint8, 0 or 255)."""
    width, height = image_size
    side = spec.crop_side(height)
    thickness = spec.canvas_thickness(side)
    origin = np.floor(np.asarray(centre, dtype=np.float64) - side / 2.0)
    canvas = np.zeros((side, side), dtype=np.uint8)
    for body in bodies:
        seen = body[:, 2] >= spec.min_confidence
        pts = np.round((body[:, :2] - origin) * _ONE).astype(np.int64)
        for a, b in BODY_LIMBS:
            if seen[a] and seen[b]:
                cv2.line(canvas, tuple(pts[a]), tuple(pts[b]), 255, thickness, cv2.LINE_8, _SHIFT)
        for j in np.flatnonzero(seen):
            cv2.circle(canvas, tuple(pts[j]), (thickness * _ONE) // 2, 255, -1, cv2.LINE_8, _SHIFT)
    # Blank what lies outside the source image: the paper crops a drawn 640x480 image.
    x0, y0 = int(origin[0]), int(origin[1])
    if x0 < 0:
        canvas[:, : min(side, -x0)] = 0
    if y0 < 0:
        canvas[: min(side, -y0), :] = 0
    if x0 + side > width:
        canvas[:, max(0, width - x0) :] = 0
    if y0 + side > height:
        canvas[max(0, height - y0) :, :] = 0
    return canvas


def render_map(
    bodies: np.ndarray,
    centre: np.ndarray,
    image_size: tuple[int, int],
    spec: MapSpec = MapSpec(),
) -> np.ndarray:
    """One binary skeleton map (map_size x map_size, uint8 0/1) of body-graph skeletons around ``centre``.

    ``bodies`` is (15, 3) for one person or (P, 15, 3) for several drawn into one map (whole-frame
    mode); ``image_size`` is the source (width, height).
    """
    bodies = np.asarray(bodies, dtype=np.float32)
    if bodies.ndim == 2:
        bodies = bodies[None]
    canvas = draw_crop(bodies, centre, image_size, spec)
    small = resize_bilinear_antialiased(canvas, spec.map_size)
    return (small >= spec.binarize_threshold * 255.0).astype(np.uint8)


def sequence_centres(bodies: np.ndarray, min_confidence: float, image_size: tuple[int, int]) -> np.ndarray:
    """Crop centre per frame of one person's (N, 15, 3) skeletons.

    The neck where it was seen; otherwise the last seen neck (the person has not moved far in a
    frame), before the first sighting the first seen neck, and the image centre if never seen.
    """
    seen = bodies[:, NECK, 2] >= min_confidence
    centres = np.empty((len(bodies), 2), dtype=np.float32)
    if not seen.any():
        centres[:] = (image_size[0] / 2.0, image_size[1] / 2.0)
        return centres
    idx = np.where(seen, np.arange(len(bodies)), -1)
    idx = np.maximum.accumulate(idx)
    idx[idx < 0] = np.flatnonzero(seen)[0]
    return bodies[idx, NECK, :2].astype(np.float32)


def render_keypoints(
    keypoints: np.ndarray,
    layout: JointLayout,
    image_size: tuple[int, int],
    spec: MapSpec = MapSpec(),
) -> np.ndarray:
    """Maps (N, S, S) uint8 for one person's (N, K, 3) keypoints in ``layout``."""
    bodies = to_body_graph(keypoints, layout)
    centres = sequence_centres(bodies, spec.min_confidence, image_size)
    out = np.empty((len(bodies), spec.map_size, spec.map_size), dtype=np.uint8)
    for i, (body, centre) in enumerate(zip(bodies, centres, strict=True)):
        out[i] = render_map(body, centre, image_size, spec)
    return out
