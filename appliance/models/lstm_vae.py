"""Anomaly scoring of skeleton maps with a bundle's runtime: streaming (one call per frame) and batch.

Streaming keeps the last T frame *features* and maps, so each frame goes through the frame encoder
once and is reused by the T windows that contain it; one sequence-graph call per frame then scores
the window ending there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from appliance.accelerators import CPU, Accelerator
from appliance.features.window import WindowBuffer, sliding_windows
from appliance.models.kind import ModelKind
from appliance.models.runtimes import ScoringRuntime, open_runtime

if TYPE_CHECKING:
    from appliance.keypoints.sequence import KeypointSequence
    from appliance.models.bundle import Bundle


class StreamingScorer:
    """Per-track scorer: ``push`` a map each frame; a score comes back once T frames are in."""

    def __init__(self, runtime: ScoringRuntime, window: int, feature_dim: int, map_size: int) -> None:
        self._tracks = MultiTrackScorer(runtime, window, feature_dim, map_size)

    def push(self, skeleton_map: np.ndarray) -> float | None:
        return self._tracks.push({0: skeleton_map})[0]

    def reset(self) -> None:
        """Forget the window (the track was lost or the stream restarted)."""
        self._tracks.drop(0)


class MultiTrackScorer:
    """Streaming scorer for many tracks at once: one encoder call and one sequence call per frame.

    Batching the people (or cameras) of a frame turns the LSTMs' matrix-vector products into matrix
    products; measured 1.8x the windows/s of one call per track at 16 tracks (README, benchmark).
    """

    input_kind = "maps"

    def __init__(self, runtime: ScoringRuntime, window: int, feature_dim: int, map_size: int) -> None:
        self.runtime = runtime
        self.window, self.feature_dim, self.map_size = window, feature_dim, map_size
        self._buffers: dict[int, tuple[WindowBuffer, WindowBuffer]] = {}

    def push(self, maps: dict[int, np.ndarray]) -> dict[int, float | None]:
        """Add this frame's map of each track; return each track's window score (None until T frames)."""
        if not maps:
            return {}
        ids = list(maps)
        batch = np.stack([np.asarray(maps[i], dtype=np.float32) for i in ids])
        features = self.runtime.encode(batch)
        ready: list[int] = []
        feat_windows, map_windows = [], []
        for k, tid in enumerate(ids):
            if tid not in self._buffers:
                self._buffers[tid] = (
                    WindowBuffer(self.window, (self.feature_dim,), np.float32),
                    WindowBuffer(self.window, (self.map_size, self.map_size), np.float32),
                )
            fbuf, mbuf = self._buffers[tid]
            fw, mw = fbuf.push(features[k]), mbuf.push(batch[k])
            if fw is not None:
                ready.append(tid)
                feat_windows.append(fw)
                map_windows.append(mw)
        out: dict[int, float | None] = dict.fromkeys(ids)
        if ready:
            scores = self.runtime.score(np.stack(feat_windows), np.stack(map_windows))
            out.update({tid: float(s) for tid, s in zip(ready, scores, strict=True)})
        return out

    def take_over(self, old: object) -> None:
        """Continue another model's tracks: re-encode their recent maps with this model, so the first
        window after a model switch is scored on the next frame instead of T frames later."""
        if not isinstance(old, MultiTrackScorer) or old.map_size != self.map_size:
            return
        for tid, (_, old_maps) in old._buffers.items():
            maps = old_maps.items()[-(self.window - 1) :] if self.window > 1 else old_maps.items()[:0]
            buffers = (
                WindowBuffer(self.window, (self.feature_dim,), np.float32),
                WindowBuffer(self.window, (self.map_size, self.map_size), np.float32),
            )
            if len(maps):
                for f, m in zip(self.runtime.encode(maps), maps, strict=True):
                    buffers[0].push(f)
                    buffers[1].push(m)
            self._buffers[tid] = buffers

    def drop(self, track_id: int) -> None:
        """Forget a track's window (it was lost, or the stream restarted)."""
        self._buffers.pop(track_id, None)

    def clear(self) -> None:
        self._buffers.clear()


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


class LstmVaeKind(ModelKind):
    """The paper's LSTM-VAE (and any map model with a frame encoder and a sequence graph)."""

    type = "lstm_vae"
    input_kind = "maps"
    variant_files = ("encoder", "sequence")

    def open(
        self, bundle: Bundle, runtime: str, variant: str, threads: int, accelerator: Accelerator = CPU
    ) -> ScoringRuntime:
        spec = bundle.manifest["variants"][variant]
        rt = open_runtime(
            runtime, bundle.root / spec["encoder"], bundle.root / spec["sequence"], threads, accelerator
        )
        bundle.check_shapes(rt, variant)
        return rt

    def smoke_score(self, bundle: Bundle, runtime: ScoringRuntime) -> float:
        window = bundle.reference_maps().astype(np.float32)
        return float(runtime.score(runtime.encode(window)[None], window[None])[0])

    def scorer(self, bundle: Bundle, runtime: ScoringRuntime) -> MultiTrackScorer:
        c = bundle.contract
        return MultiTrackScorer(runtime, c.window, c.feature_dim, c.map_spec.map_size)

    def sequence_scores(self, bundle: Bundle, runtime: ScoringRuntime, seq: KeypointSequence) -> np.ndarray:
        return score_map_sequence(runtime, sequence_maps(bundle, seq), bundle.contract.window)


def sequence_maps(bundle: Bundle, seq: KeypointSequence) -> np.ndarray:
    """(N, S, S) skeleton maps of a recorded sequence, drawn as the bundle's contract says."""
    from appliance.features.skeleton_map import render_keypoints

    return render_keypoints(seq.keypoints, seq.layout, (seq.width, seq.height), bundle.contract.map_spec)
