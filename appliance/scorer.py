"""Anomaly scoring of skeleton maps with a bundle's runtime: streaming (one call per frame) and batch.

Streaming keeps the last T frame *features* and maps, so each frame goes through the frame encoder
once and is reused by the T windows that contain it; one sequence-graph call per frame then scores
the window ending there.
"""

from __future__ import annotations

import numpy as np

from appliance.runtimes import ScoringRuntime
from appliance.window import WindowBuffer, sliding_windows


class StreamingScorer:
    """Per-track scorer: ``push`` a map each frame; a score comes back once T frames are in."""

    def __init__(self, runtime: ScoringRuntime, window: int, feature_dim: int, map_size: int) -> None:
        self.runtime = runtime
        self._features = WindowBuffer(window, (feature_dim,), np.float32)
        self._maps = WindowBuffer(window, (map_size, map_size), np.float32)

    def push(self, skeleton_map: np.ndarray) -> float | None:
        m = np.asarray(skeleton_map, dtype=np.float32)
        feature = self.runtime.encode(m[None])[0]
        features = self._features.push(feature)
        maps = self._maps.push(m)
        if features is None:
            return None
        return float(self.runtime.score(features[None], maps[None])[0])

    def reset(self) -> None:
        """Forget the window (the track was lost or the stream restarted)."""
        self._features.clear()
        self._maps.clear()


def score_map_sequence(runtime: ScoringRuntime, maps: np.ndarray, window: int, batch: int = 64) -> np.ndarray:
    """Scores of every stride-1 window of one sequence's (N, S, S) maps; (N - T + 1,) float64."""
    maps = np.asarray(maps, dtype=np.float32)
    if len(maps) < window:
        return np.empty(0, dtype=np.float64)
    features = np.concatenate([runtime.encode(maps[i : i + 256]) for i in range(0, len(maps), 256)])
    feat_windows = sliding_windows(features, window)
    map_windows = sliding_windows(maps, window)
    out = np.empty(len(feat_windows), dtype=np.float64)
    for start in range(0, len(out), batch):
        stop = start + batch
        out[start:stop] = runtime.score(
            np.ascontiguousarray(feat_windows[start:stop]), np.ascontiguousarray(map_windows[start:stop])
        )
    return out
