"""Frame-level ROC analysis in numpy (tie-aware), so reports do not depend on scikit-learn."""

from __future__ import annotations

import numpy as np


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties count one half."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    # average ranks over ties
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_scores)) + 1]
    ends = np.r_[starts[1:], len(scores)]
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate, thresholds), thresholds decreasing."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    order = np.argsort(-scores, kind="mergesort")
    s, p = scores[order], positive[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tps = np.cumsum(p)[last_of_tie]
    fps = (last_of_tie + 1) - tps
    tpr = np.r_[0.0, tps / max(1, p.sum())]
    fpr = np.r_[0.0, fps / max(1, (~p).sum())]
    return fpr, tpr, np.r_[np.inf, s[last_of_tie]]
