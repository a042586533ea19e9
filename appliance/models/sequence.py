"""Window scores of one recorded keypoint sequence with any bundle type (``appliance score``): the
same inputs the live scorers build frame by frame, built for the whole sequence at once."""

from __future__ import annotations

import numpy as np

from appliance.capture.frame_rate import kept, too_slow
from appliance.errors import ApplianceError
from appliance.keypoints.sequence import KeypointSequence
from appliance.models.bundle import Bundle


def at_model_rate(seq: KeypointSequence, model_fps: float | None) -> KeypointSequence:
    """The frames of ``seq`` a camera scored at the model's learning rate keeps (as the daemon's
    :class:`appliance.capture.frame_rate.RateGate` keeps them, on the file's frame clock); ``seq`` itself when
    the model records no rate or the file is at it. A file slower than the model is refused."""
    if model_fps is None or abs(seq.fps - model_fps) < 1e-6:
        return seq
    if too_slow(seq.fps, model_fps):
        raise ApplianceError(
            f"{seq.name}: the keypoints are at {seq.fps:g} frames per second and the model was learned at "
            f"{model_fps:g}; it cannot be scored slower than that (extract the footage at {model_fps:g} fps "
            "or more)"
        )
    keep = np.array(kept(seq.frames / seq.fps, model_fps), dtype=bool)
    return KeypointSequence(
        name=seq.name,
        layout=seq.layout,
        keypoints=seq.keypoints[keep],
        frames=seq.frames[keep],
        width=seq.width,
        height=seq.height,
        fps=model_fps,
        labels=None if seq.labels is None else seq.labels[keep],
        meta=dict(seq.meta),
    )


def sequence_window_scores(bundle: Bundle, runtime, seq: KeypointSequence) -> np.ndarray:
    """(N - T + 1,) window scores of ``seq`` (empty when it is shorter than a window)."""
    if len(seq) < bundle.contract.window:
        return np.empty(0, dtype=np.float64)
    return np.asarray(bundle.kind.sequence_scores(bundle, runtime, seq), np.float64)
