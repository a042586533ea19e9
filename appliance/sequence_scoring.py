"""Window scores of one recorded keypoint sequence with any bundle type (``appliance score``): the
same inputs the live scorers build frame by frame, built for the whole sequence at once."""

from __future__ import annotations

import numpy as np

from appliance.bundle import Bundle
from appliance.keypoints.sequence import KeypointSequence
from appliance.motion_features import model_input, normalise_window, sequence_features
from appliance.pose.layouts import to_body_graph
from appliance.scorer import score_map_sequence
from appliance.skeleton_map import render_keypoints
from appliance.window import sliding_windows


def sequence_window_scores(bundle: Bundle, runtime, seq: KeypointSequence) -> np.ndarray:
    """(N - T + 1,) window scores of ``seq`` (empty when it is shorter than a window)."""
    window = bundle.contract.window
    if len(seq) < window:
        return np.empty(0, dtype=np.float64)
    if bundle.model_type == "posture_motion":
        raw = sequence_features(to_body_graph(seq.keypoints, seq.layout))
        return runtime.score_windows(model_input(normalise_window(sliding_windows(raw, window)))).astype(
            np.float64
        )
    maps = render_keypoints(seq.keypoints, seq.layout, (seq.width, seq.height), bundle.contract.map_spec)
    if bundle.model_type == "fused":
        raw = sequence_features(to_body_graph(seq.keypoints, seq.layout))
        motion = runtime.motion.score_windows(model_input(normalise_window(sliding_windows(raw, window))))
        return np.maximum(motion, runtime.calibration(score_map_sequence(runtime.maps, maps, window)))
    return score_map_sequence(runtime, maps, window)
