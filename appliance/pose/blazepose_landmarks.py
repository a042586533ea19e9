"""The BlazePose landmark model ("full"): 33 body joints + 2 alignment points from a rotated body crop.

Input is the ROI warped to 256x256 RGB in [0, 1]. Outputs per point: x, y, z in crop pixels and
visibility / presence logits, a pose-present flag, and a 64x64 heatmap per point that refines x, y.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from appliance.accelerators import CPU, Accelerator, litert_interpreter, onnx_device, onnx_session
from appliance.pose.roi import Roi

CROP_SIZE = 256
NUM_POINTS = 39  # 33 body joints, 2 alignment points (centre, scale), 4 unused
NUM_JOINTS = 33
HEATMAP_KERNEL = 7
HEATMAP_MIN_CONFIDENCE = 0.5
HEATMAP_SIZE = 64 * 64 * NUM_POINTS


@dataclass
class LandmarkResult:
    """Landmarks mapped to frame pixels: ``points`` (39, 3) x, y, z; visibility and presence (39,) in
    [0, 1]; ``flag`` the model's probability that a body fills the ROI."""

    points: np.ndarray
    visibility: np.ndarray
    presence: np.ndarray
    flag: float


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -80.0, 80.0)))  # clip: no overflow warning; -inf -> 0


def refine_from_heatmap(xy: np.ndarray, heatmap: np.ndarray, kernel: int = HEATMAP_KERNEL) -> np.ndarray:
    """Move each (x, y) in [0, 1] crop units to the confidence-weighted mean cell of its heatmap window.

    ``heatmap`` is (Hh, Wh, N) logits. Points whose window peaks below HEATMAP_MIN_CONFIDENCE keep
    the regressed position: the heatmap sharpens joints the model sees, the regression handles the rest.
    """
    hh, wh, n = heatmap.shape
    half = kernel // 2
    padded = np.pad(heatmap, ((half, half), (half, half), (0, 0)), constant_values=-np.inf)
    cols = np.clip((xy[:n, 0] * wh).astype(int), 0, wh - 1)
    rows = np.clip((xy[:n, 1] * hh).astype(int), 0, hh - 1)
    offs = np.arange(-half, half + 1)
    r = rows[:, None, None] + offs[None, :, None]  # (n, k, 1)
    c = cols[:, None, None] + offs[None, None, :]  # (n, 1, k)
    # sigmoid only on the windows (n x k x k), not the whole map; outside the map counts 0
    win = _sigmoid(padded[r + half, c + half, np.arange(n)[:, None, None]].astype(np.float64))
    total = win.sum(axis=(1, 2))
    ok = (win.max(axis=(1, 2)) >= HEATMAP_MIN_CONFIDENCE) & (total > 0)
    out = xy.copy()
    safe = np.where(total > 0, total, 1.0)
    out[:n, 0] = np.where(ok, ((win * c).sum(axis=(1, 2)) / safe) / wh, xy[:n, 0])
    out[:n, 1] = np.where(ok, ((win * r).sum(axis=(1, 2)) / safe) / hh, xy[:n, 1])
    return out


class LiteRTLandmarkGraph:
    """The landmark graph on LiteRT: outputs told apart by their sizes."""

    def __init__(self, path: Path, threads: int, accelerator: Accelerator) -> None:
        self._interp, self.device = litert_interpreter(path, threads, accelerator, "pose landmark model")
        self._input = self._interp.get_input_details()[0]["index"]
        by_size = {int(np.prod(d["shape"])): d["index"] for d in self._interp.get_output_details()}
        self._outputs = [by_size[NUM_POINTS * 5], by_size[1], by_size[HEATMAP_SIZE]]

    def run(self, rgb: np.ndarray) -> list[np.ndarray]:
        """(1, 256, 256, 3) float32 -> landmarks (1, 195), pose flag (1, 1), heatmap (1, 64, 64, 39)."""
        self._interp.set_tensor(self._input, rgb)
        self._interp.invoke()
        return [self._interp.get_tensor(i) for i in self._outputs]


class OnnxLandmarkGraph:
    """The landmark graph converted to ONNX (``appliance-export pose-onnx``) on onnxruntime, where an
    accelerator (CUDA, TensorRT) can run it; the same outputs as :class:`LiteRTLandmarkGraph`."""

    def __init__(self, path: Path, threads: int, accelerator: Accelerator) -> None:
        self._session = onnx_session(path, threads, accelerator, "pose landmark model")
        self.device = onnx_device(self._session)
        self._input = self._session.get_inputs()[0].name
        by_size = {int(np.prod(o.shape)): o.name for o in self._session.get_outputs()}
        self._outputs = [by_size[NUM_POINTS * 5], by_size[1], by_size[HEATMAP_SIZE]]

    def run(self, rgb: np.ndarray) -> list[np.ndarray]:
        return self._session.run(self._outputs, {self._input: rgb})


class LandmarkModel:
    """Runs the landmark model on a ROI of a frame and maps its output back to frame pixels.

    ``model_path`` ending in ``.onnx`` runs on onnxruntime, else on LiteRT; ``device`` says where.
    """

    def __init__(
        self, model_path: Path, threads: int = 1, refine: bool = True, accelerator: Accelerator = CPU
    ) -> None:
        graph = OnnxLandmarkGraph if Path(model_path).suffix == ".onnx" else LiteRTLandmarkGraph
        self._graph: LiteRTLandmarkGraph | OnnxLandmarkGraph | None = graph(
            Path(model_path), threads, accelerator
        )
        self.device = self._graph.device
        self.refine = refine
        #: seconds of the last run's crop, invoke and post-processing (heatmap refinement, mapping)
        self.last_timing = (0.0, 0.0, 0.0)

    def run(self, frame_bgr: np.ndarray, roi: Roi) -> LandmarkResult:
        """Landmarks of the body in ``roi`` of ``frame_bgr``."""
        t0 = time.perf_counter()
        crop = roi.crop(frame_bgr, CROP_SIZE)
        rgb = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB).astype(np.float32) * (1.0 / 255.0)
        t1 = time.perf_counter()
        landmarks, flag_out, heatmap = self._graph.run(rgb[None])
        t2 = time.perf_counter()
        raw = landmarks.reshape(NUM_POINTS, 5)
        flag = float(flag_out.reshape(-1)[0])
        xy = raw[:, :2] / CROP_SIZE
        if self.refine:
            xy = refine_from_heatmap(xy, heatmap[0])
        points = np.empty((NUM_POINTS, 3), dtype=np.float64)
        points[:, :2] = roi.to_frame(xy * CROP_SIZE, CROP_SIZE)
        points[:, 2] = raw[:, 2] * (roi.size / CROP_SIZE)  # z in the same pixel scale as x
        self.last_timing = (t1 - t0, t2 - t1, time.perf_counter() - t2)
        return LandmarkResult(points, _sigmoid(raw[:, 3]), _sigmoid(raw[:, 4]), flag)

    def close(self) -> None:
        """Drop the interpreter or session."""
        self._graph = None
