"""Streaming scorer of the posture-motion model for many tracks: per new frame, each track's raw body
features are computed once (:class:`appliance.features.motion.FeatureStream`) and kept in a window;
the window is normalised by its body scale and scored by the exported graph.

Same interface as :class:`appliance.models.lstm_vae.MultiTrackScorer`, but fed body-graph keypoints
(``input_kind = "body"``) instead of skeleton maps.
"""

from __future__ import annotations

import numpy as np

from appliance.features.motion import RAW_DIM, FeatureStream, model_input, normalise_window
from appliance.features.window import WindowBuffer
from appliance.models.runtimes import WindowRuntime


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
