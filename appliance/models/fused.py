"""A fused model: the posture-motion model and the paper's map model in one bundle, one score.

Each part scores the same window; the map model's score is put on the posture-motion model's scale
(z-score of its log on normal validation windows, from the bundle's ``fusion`` section) and the
window scores the larger of the two: a window abnormal in shape (the map model) or in posture and
motion (the posture-motion model) is abnormal. The parts are complete bundles inside the fused one
(verified and smoke-tested on their own); the fused bundle's signature covers their manifests.
"""

from __future__ import annotations

import math

import numpy as np

from appliance.features.motion import model_input, normalise_window
from appliance.models.lstm_vae import MultiTrackScorer
from appliance.models.posture_motion import PostureMotionScorer
from appliance.models.runtimes import ScoringRuntime, WindowRuntime

MAP_PART, MOTION_PART = "map_model", "posture_motion"


class MapCalibration:
    """z = (log(map score) - loc) / scale."""

    def __init__(self, loc: float, scale: float) -> None:
        self.loc, self.scale = float(loc), float(scale)

    def __call__(self, score: float | np.ndarray):
        return (np.log(np.maximum(score, 1e-9)) - self.loc) / self.scale


def fit_map_calibration(normal_map_scores: np.ndarray) -> MapCalibration:
    """The map part's scale from its scores on normal windows: mean and spread of their logs."""
    logs = np.log(np.maximum(np.asarray(normal_map_scores, np.float64), 1e-9))
    return MapCalibration(float(logs.mean()), float(logs.std() + 1e-6))


class FusedRuntime:
    """Both parts' runtimes, opened and smoke-tested, with the calibration that joins them."""

    def __init__(self, maps: ScoringRuntime, motion: WindowRuntime, calibration: MapCalibration) -> None:
        self.maps, self.motion, self.calibration = maps, motion, calibration
        self.name = motion.name

    def score_window(self, maps: np.ndarray, raw: np.ndarray) -> float:
        """One window: (T, S, S) maps and (T, RAW_DIM) raw body features -> fused score."""
        maps = np.asarray(maps, np.float32)
        map_score = float(self.maps.score(self.maps.encode(maps)[None], maps[None])[0])
        motion = float(self.motion.score_windows(model_input(normalise_window(raw))[None])[0])
        return max(motion, float(self.calibration(map_score)))


class FusedScorer:
    """Streaming scorer of a fused bundle: fed each track's map and body keypoints per frame."""

    input_kind = "both"

    def __init__(self, runtime: FusedRuntime, window: int, feature_dim: int, map_size: int) -> None:
        self.runtime = runtime
        self.maps = MultiTrackScorer(runtime.maps, window, feature_dim, map_size)
        self.motion = PostureMotionScorer(runtime.motion, window)
        self.last_map_scores: dict[int, float | None] = {}

    def push(self, inputs: dict[int, tuple[np.ndarray, np.ndarray]]) -> dict[int, float | None]:
        map_scores = self.maps.push({t: m for t, (m, _) in inputs.items()})
        self.last_map_scores = map_scores  # the map part's own scores (live learning records them)
        motion_scores = self.motion.push({t: b for t, (_, b) in inputs.items()})
        out: dict[int, float | None] = {}
        for tid in inputs:
            m, p = map_scores.get(tid), motion_scores.get(tid)
            out[tid] = None if m is None or p is None else max(p, float(self.runtime.calibration(m)))
            if out[tid] is not None and not math.isfinite(m):
                out[tid] = float("nan")  # a broken part must show, not hide behind the other's max
        return out

    def take_over(self, old: object) -> None:
        if isinstance(old, FusedScorer):
            self.maps.take_over(old.maps)
            self.motion.take_over(old.motion)
        elif isinstance(old, MultiTrackScorer):
            self.maps.take_over(old)
        elif isinstance(old, PostureMotionScorer):
            self.motion.take_over(old)

    def drop(self, track_id: int) -> None:
        self.maps.drop(track_id)
        self.motion.drop(track_id)

    def clear(self) -> None:
        self.maps.clear()
        self.motion.clear()
