"""Streaming scorer of the posture-motion model for many tracks: per new frame, each track's raw body
features are computed once (:class:`appliance.features.motion.FeatureStream`) and kept in a window;
the window is normalised by its body scale and scored by the exported graph.

Same interface as :class:`appliance.models.lstm_vae.MultiTrackScorer`, but fed body-graph keypoints
(``input_kind = "body"``) instead of skeleton maps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from appliance.accelerators import CPU, Accelerator
from appliance.features.motion import RAW_DIM, FeatureStream, model_input, normalise_window
from appliance.features.window import WindowBuffer
from appliance.models.kind import ModelKind
from appliance.models.runtimes import WindowRuntime, open_window_runtime

if TYPE_CHECKING:
    from appliance.keypoints.sequence import KeypointSequence
    from appliance.models.bundle import Bundle
    from appliance.models.site import SiteModel


class PostureMotionScorer:
    input_kind = "body"

    def __init__(self, runtime: WindowRuntime, window: int) -> None:
        self.runtime, self.window = runtime, window
        self._tracks: dict[int, tuple[FeatureStream, WindowBuffer]] = {}

    def push(self, bodies: dict[int, np.ndarray]) -> dict[int, float | None]:
        """Add this frame's (15, 3) body-graph keypoints of each track; return each track's window
        score (None until T frames were seen)."""
        ready, windows = [], []
        for tid, body in bodies.items():
            if tid not in self._tracks:
                self._tracks[tid] = (FeatureStream(), WindowBuffer(self.window, (RAW_DIM,), np.float32))
            stream, buf = self._tracks[tid]
            w = buf.push(stream.push(body))
            if w is not None:
                ready.append(tid)
                windows.append(w)
        out: dict[int, float | None] = dict.fromkeys(bodies)
        if ready:
            scores = self.runtime.score_windows(model_input(normalise_window(np.stack(windows))))
            out.update({tid: float(s) for tid, s in zip(ready, scores, strict=True)})
        return out

    def take_over(self, old: object) -> None:
        """Continue another posture-motion scorer's tracks (the features do not depend on the model)."""
        if isinstance(old, PostureMotionScorer) and old.window == self.window:
            self._tracks = old._tracks
            old._tracks = {}

    def drop(self, track_id: int) -> None:
        self._tracks.pop(track_id, None)

    def clear(self) -> None:
        self._tracks.clear()


class PostureMotionKind(ModelKind):
    """The posture-motion model: Gaussians on body posture and motion statistics of a window."""

    type = "posture_motion"
    input_kind = "body"
    site_learnable = True
    variant_files = ("model",)
    # LiteRT scores its small graph 1.4x faster per window (README: Beyond the paper, on the edge)
    runtime_preference = ("tflite", "onnxruntime")

    def open(
        self, bundle: Bundle, runtime: str, variant: str, threads: int, accelerator: Accelerator = CPU
    ) -> WindowRuntime:
        spec = bundle.manifest["variants"][variant]
        rt = open_window_runtime(runtime, bundle.root / spec["model"], threads, accelerator)
        bundle.check_shapes(rt, variant)
        return rt

    def smoke_score(self, bundle: Bundle, runtime: WindowRuntime) -> float:
        window = bundle.reference_features().astype(np.float32)
        return float(runtime.score_windows(model_input(normalise_window(window))[None])[0])

    def scorer(self, bundle: Bundle, runtime: WindowRuntime) -> PostureMotionScorer:
        return PostureMotionScorer(runtime, bundle.contract.window)

    def sequence_scores(self, bundle: Bundle, runtime: WindowRuntime, seq: KeypointSequence) -> np.ndarray:
        return runtime.score_windows(sequence_window_inputs(seq, bundle.contract.window)).astype(np.float64)

    def site_scorer(self, bundle: Bundle, runtime: WindowRuntime, site: SiteModel) -> PostureMotionScorer:
        return PostureMotionScorer(site.runtime(), bundle.contract.window)


def sequence_window_inputs(seq: KeypointSequence, window: int) -> np.ndarray:
    """The model input of every stride-1 window of a recorded sequence (its body-graph keypoints)."""
    from appliance.features.motion import sequence_features
    from appliance.features.window import sliding_windows
    from appliance.pose.layouts import to_body_graph

    raw = sequence_features(to_body_graph(seq.keypoints, seq.layout))
    return model_input(normalise_window(sliding_windows(raw, window)))
