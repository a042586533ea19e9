"""A fused model: the posture-motion model and the paper's map model in one bundle, one score.

Each part scores the same window; the map model's score is put on the posture-motion model's scale
(z-score of its log on normal validation windows, from the bundle's ``fusion`` section) and the
window scores the larger of the two: a window abnormal in shape (the map model) or in posture and
motion (the posture-motion model) is abnormal. The parts are complete bundles inside the fused one
(verified and smoke-tested on their own); the fused bundle's signature covers their manifests.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from appliance.accelerators import CPU, Accelerator
from appliance.features.motion import model_input, normalise_window
from appliance.models.kind import ModelKind
from appliance.models.lstm_vae import MultiTrackScorer, score_map_sequence, sequence_maps
from appliance.models.posture_motion import PostureMotionScorer, sequence_window_inputs
from appliance.models.registry import kind_of
from appliance.models.runtimes import ScoringRuntime, WindowRuntime

if TYPE_CHECKING:
    from appliance.keypoints.sequence import KeypointSequence
    from appliance.models.bundle import Bundle
    from appliance.models.site import SiteModel

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
        self.device = maps.device

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


class FusedKind(ModelKind):
    """The fused model: a map-model part and a posture-motion part in one bundle, one score."""

    type = "fused"
    input_kind = "both"
    site_learnable = True  # the posture-motion part is refitted, the map part recalibrated
    part_types: ClassVar[dict[str, str]] = {MAP_PART: "lstm_vae", MOTION_PART: "posture_motion"}

    def open(
        self, bundle: Bundle, runtime: str, variant: str, threads: int, accelerator: Accelerator = CPU
    ) -> FusedRuntime:
        parts = bundle.manifest["variants"][variant]["parts"]
        # each part opens as a bundle of its own: verified and smoke-tested
        maps_rt, _ = bundle.part(MAP_PART).open(runtime, parts[MAP_PART], threads, accelerator)
        motion_rt, _ = bundle.part(MOTION_PART).open(runtime, parts[MOTION_PART], threads, accelerator)
        cal = bundle.manifest["fusion"][MAP_PART]
        return FusedRuntime(maps_rt, motion_rt, MapCalibration(cal["loc"], cal["scale"]))

    def smoke_score(self, bundle: Bundle, runtime: FusedRuntime) -> float:
        return runtime.score_window(bundle.reference_maps().astype(np.float32), bundle.reference_features())

    def scorer(self, bundle: Bundle, runtime: FusedRuntime) -> FusedScorer:
        maps = bundle.part(MAP_PART).contract
        return FusedScorer(runtime, bundle.contract.window, maps.feature_dim, maps.map_spec.map_size)

    def sequence_scores(self, bundle: Bundle, runtime: FusedRuntime, seq: KeypointSequence) -> np.ndarray:
        window = bundle.contract.window
        motion = runtime.motion.score_windows(sequence_window_inputs(seq, window))
        maps = score_map_sequence(runtime.maps, sequence_maps(bundle, seq), window)
        return np.maximum(motion, runtime.calibration(maps))

    def site_scorer(self, bundle: Bundle, runtime: FusedRuntime, site: SiteModel) -> FusedScorer:
        from appliance.models.site import SiteModelError

        if site.map_calibration is None:
            raise SiteModelError(f"site model {site.id} has no map calibration for fused base {bundle.name}")
        fused = FusedRuntime(runtime.maps, site.runtime(), MapCalibration(*site.map_calibration))
        maps = bundle.part(MAP_PART).contract
        return FusedScorer(fused, bundle.contract.window, maps.feature_dim, maps.map_spec.map_size)

    def identity(self, bundle: Bundle) -> dict[str, Any]:
        from appliance.models.bundle import sha256_file

        return {"map_part_sha256": sha256_file(bundle.part(MAP_PART).root / "manifest.json")}

    def part_problem(self, part: str, bundle: Bundle) -> str | None:
        """Why ``bundle`` cannot be the fused bundle's ``part`` (None: it can)."""
        want = self.part_types[part]
        got = kind_of(bundle).type
        return None if got == want else f"the {part} part must be a {want} bundle, not {got}"
