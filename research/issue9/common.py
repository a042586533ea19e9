"""Shared plumbing: cached features per split, window scoring -> frame scores, AUROC as export/evaluate does."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from appliance.metrics import auroc
from appliance.window import sliding_windows, window_scores_to_frames

from cache_splits import load_cached  # noqa: E402  (research folder on sys.path)
from features import SPEED, normalise_window, sequence_features

HERE = Path(__file__).resolve().parent
WINDOW = 30


def load_features(name: str) -> dict:
    """Like cache_splits.load_cached, each sequence with 'feat' (N, RAW_DIM) raw features added (cached)."""
    p = HERE / "cache" / f"{name}_raw.pkl"
    if p.exists():
        return pickle.loads(p.read_bytes())
    d = load_cached(name)
    for part in ("train", "val", "test"):
        for s in d[part]:
            s["feat"] = sequence_features(s["body"])
    p.write_bytes(pickle.dumps(d))
    return d


def normal_windows(seqs: list[dict], window: int = WINDOW, key: str = "feat") -> np.ndarray:
    """(W, window, FEATURE_DIM) normalised stride-1 windows whose frames are all normal (as export/train.py)."""
    out = []
    for s in seqs:
        if len(s["labels"]) < window:
            continue
        ok = sliding_windows(s["labels"] == 0, window).all(axis=1)
        w = sliding_windows(s[key], window)[ok]
        if len(w):
            out.append(normalise_window(w))
    return np.concatenate(out)


def frame_scores(seqs: list[dict], window_score_fn, window: int = WINDOW) -> list[np.ndarray]:
    """window_score_fn((W, window, FEATURE_DIM) normalised windows of one sequence) -> (W,) scores;
    frame scores as export/evaluate assigns them (last frame; first window's score before it)."""
    out = []
    for s in seqs:
        w = sliding_windows(s["feat"], window)
        ws = window_score_fn(normalise_window(w)) if len(w) else np.zeros(0)
        out.append(window_scores_to_frames(np.asarray(ws, np.float64), len(s["labels"]), window))
    return out


def metrics(seqs: list[dict], scores: list[np.ndarray], classes: dict[int, str]) -> dict:
    """Pooled and per-class frame AUROC (non-finite frames dropped), as export.evaluate.Evaluation.metrics."""
    s = np.concatenate(scores)
    y = np.concatenate([q["labels"] for q in seqs])
    keep = np.isfinite(s)
    s, y = s[keep], y[keep]
    per = {classes[c]: auroc(s[(y == 0) | (y == c)], y[(y == 0) | (y == c)] > 0) for c in np.unique(y) if c > 0}
    return {"auroc": auroc(s, y > 0), "per_class": per, "frames": int(len(y))}


def speed_rule(windows: np.ndarray) -> np.ndarray:
    """Mean over the window of the per-frame mean joint speed / body scale (frames without one ignored)."""
    import warnings

    sp = windows[..., SPEED].astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # windows without any speed: score 0
        m = np.nanmean(sp, axis=1)
    return np.nan_to_num(m, nan=0.0)


def fmt(m: dict) -> str:
    per = " ".join(f"{k}={v:.3f}" for k, v in m["per_class"].items())
    return f"AUROC {m['auroc']:.3f} | {per}"
