"""The BlazePose person detector: letterbox, SSD anchors, box decoding and weighted NMS.

The detector reads a 224x224 letterboxed RGB image in [-1, 1] and regresses, per anchor, a box around
the *face* plus four keypoints; keypoint 0 is the mid-hip and keypoint 1 a point on the circle that
encloses the body, which together give the body ROI (:meth:`appliance.pose.roi.Roi.from_points`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from appliance.accelerators import CPU, Accelerator, litert_interpreter

INPUT_SIZE = 224
NMS_IOU = 0.3
_STRIDES = (8, 16, 32, 32, 32)
_ANCHORS_PER_LAYER = 2


@dataclass
class Detection:
    """One detected person in frame pixels: face box (x0, y0, x1, y1), 4 keypoints (4, 2), score."""

    box: np.ndarray
    keypoints: np.ndarray
    score: float


def ssd_anchors(input_size: int = INPUT_SIZE, strides: tuple[int, ...] = _STRIDES) -> np.ndarray:
    """(N, 2) anchor centres in [0, 1]: layers with equal stride share a grid, 2 anchors per layer.

    Fixed-size anchors, so only centres matter: 28x28x2 + 14x14x2 + 7x7x6 = 2254 for a 224 input.
    """
    centres: list[np.ndarray] = []
    layer = 0
    while layer < len(strides):
        stride = strides[layer]
        same = 0
        while layer < len(strides) and strides[layer] == stride:
            same += 1
            layer += 1
        fm = int(np.ceil(input_size / stride))
        ys, xs = np.meshgrid((np.arange(fm) + 0.5) / fm, (np.arange(fm) + 0.5) / fm, indexing="ij")
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(grid, same * _ANCHORS_PER_LAYER, axis=0))
    return np.concatenate(centres).astype(np.float32)


def decode(
    regressors: np.ndarray,
    logits: np.ndarray,
    anchors: np.ndarray,
    min_score: float,
    input_size: int = INPUT_SIZE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw outputs -> (boxes (M, 4) x0y0x1y1, keypoints (M, 4, 2), scores (M,)) in [0, 1] input units.

    Only anchors scoring at least ``min_score`` are kept.
    """
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits.reshape(-1).astype(np.float64), -100.0, 100.0)))
    keep = np.flatnonzero(scores >= min_score)
    reg = regressors.reshape(-1, 12)[keep] / input_size
    anc = anchors[keep]
    centre = reg[:, 0:2] + anc
    half = reg[:, 2:4] / 2.0
    boxes = np.concatenate([centre - half, centre + half], axis=1)
    keypoints = reg[:, 4:12].reshape(-1, 4, 2) + anc[:, None, :]
    return boxes, keypoints, scores[keep]


def _iou_one_to_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    ix = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0.0, None)
    iy = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0.0, None)
    inter = ix * iy
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def weighted_nms(
    boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, iou: float = NMS_IOU
) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Weighted non-maximum suppression: each cluster (IoU > ``iou`` with its best member) becomes
    the score-weighted mean of its boxes and keypoints, with the best member's score. Steadier than
    plain NMS because neighbouring anchors vote."""
    order = np.argsort(-scores)
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    alive = np.ones(len(scores), dtype=bool)
    out: list[tuple[np.ndarray, np.ndarray, float]] = []
    for i in range(len(scores)):
        if not alive[i]:
            continue
        members = alive & (_iou_one_to_many(boxes[i], boxes) > iou)
        members[i] = True
        w = scores[members][:, None]
        box = (boxes[members] * w).sum(axis=0) / w.sum()
        kps = (keypoints[members] * w[:, :, None]).sum(axis=0) / w.sum()
        out.append((box, kps, float(scores[i])))
        alive &= ~members
    return out


class PoseDetector:
    """Runs the detector on a frame, or on a rectangular region of it (tiles, zoom)."""

    def __init__(
        self, model_path: Path, threads: int = 1, min_score: float = 0.5, accelerator: Accelerator = CPU
    ) -> None:
        # LiteRT only: the detector's sparse weights do not convert to ONNX (README: accelerators)
        place = accelerator if accelerator.kind == "litert-gpu" else CPU
        self._interp, self.device = litert_interpreter(model_path, threads, place, "pose detector")
        self._input = self._interp.get_input_details()[0]["index"]
        outs = sorted(self._interp.get_output_details(), key=lambda d: int(d["shape"][-1]))
        self._scores_out, self._reg_out = outs[0]["index"], outs[1]["index"]
        self._anchors = ssd_anchors()
        self.min_score = min_score

    def detect(
        self, frame_bgr: np.ndarray, region: tuple[int, int, int, int] | None = None
    ) -> list[Detection]:
        """People in ``frame_bgr`` (or in ``region`` = x, y, w, h of it), in frame pixels, best first."""
        h_img, w_img = frame_bgr.shape[:2]
        x, y, w, h = region if region is not None else (0, 0, w_img, h_img)
        # Letterbox: keep the aspect ratio, centre the region, pad with black (-1 after scaling).
        scale = INPUT_SIZE / max(w, h)
        pad_x = (INPUT_SIZE - w * scale) / 2.0
        pad_y = (INPUT_SIZE - h * scale) / 2.0
        # input index = (frame index + 0.5 - origin) * scale + pad - 0.5
        m = np.array(
            [[scale, 0.0, (0.5 - x) * scale + pad_x - 0.5], [0.0, scale, (0.5 - y) * scale + pad_y - 0.5]]
        )
        img = cv2.warpAffine(frame_bgr, m, (INPUT_SIZE, INPUT_SIZE), flags=cv2.INTER_LINEAR)
        rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB).astype(np.float32)
        tensor = (rgb * (2.0 / 255.0) - 1.0)[None]
        self._interp.set_tensor(self._input, tensor)
        self._interp.invoke()
        reg = self._interp.get_tensor(self._reg_out)
        logits = self._interp.get_tensor(self._scores_out)
        boxes, kps, scores = decode(reg, logits, self._anchors, self.min_score)
        if len(scores) == 0:
            return []
        out = []
        for box, kp, score in weighted_nms(boxes, kps, scores):
            # [0, 1] input units -> continuous frame pixels
            fb = (box.reshape(2, 2) * INPUT_SIZE - [pad_x, pad_y]) / scale + [x, y]
            fk = (kp * INPUT_SIZE - [pad_x, pad_y]) / scale + [x, y]
            out.append(Detection(box=fb.reshape(4), keypoints=fk, score=score))
        return out

    def close(self) -> None:
        """Drop the interpreter."""
        self._interp = None  # type: ignore[assignment]
