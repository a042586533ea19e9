"""Frame-level evaluation on held-out sequences: AUROC, ROC curves, score timelines, reconstructions.

Scores reach frames as in a live stream: a window's score belongs to its last frame, and the first
T-1 frames of a sequence (which end no full window) take the first window's score. The per-frame
AE/VAE score each frame directly. A frame is anomalous when its label is > 0.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from appliance.features.window import sliding_windows, window_scores_to_frames
from appliance.models.metrics import auroc, roc_curve
from export.datasets import RenderedSequence
from export.models import LSTMVAE, FrameAutoencoder, bernoulli_nll


@torch.no_grad()
def score_windows(model: LSTMVAE, maps: np.ndarray, batch: int = 256) -> np.ndarray:
    """Scores of every stride-1 window of one sequence's maps, each frame encoded once."""
    window = model.cfg.window
    x = torch.from_numpy(maps.astype(np.float32))
    features = model.encode_frames(x).numpy()
    feat_windows = sliding_windows(features, window)
    map_windows = sliding_windows(maps, window)
    out = np.empty(len(feat_windows), dtype=np.float64)
    for start in range(0, len(feat_windows), batch):
        f = torch.from_numpy(np.ascontiguousarray(feat_windows[start : start + batch]))
        m = torch.from_numpy(map_windows[start : start + batch].astype(np.float32))
        logits, _, _ = model.sequence(f)
        out[start : start + batch] = bernoulli_nll(logits, m.unsqueeze(2)).mean(dim=1).numpy()
    return out


@torch.no_grad()
def score_frames(model: LSTMVAE | FrameAutoencoder, seq: RenderedSequence) -> np.ndarray:
    """Per-frame anomaly scores of one sequence (NaN where it is shorter than a window)."""
    if isinstance(model, LSTMVAE):
        return window_scores_to_frames(score_windows(model, seq.maps), len(seq.maps), model.cfg.window)
    scores = [
        model.score(torch.from_numpy(seq.maps[i : i + 1024].astype(np.float32)))
        for i in range(0, len(seq.maps), 1024)
    ]
    return torch.cat(scores).numpy().astype(np.float64)


@dataclass
class Evaluation:
    """Scores of one model on one test set, kept per sequence for plots."""

    model_name: str
    sequences: list[RenderedSequence]
    scores: list[np.ndarray]
    classes: dict[int, str]

    def pooled(self) -> tuple[np.ndarray, np.ndarray]:
        s = np.concatenate(self.scores)
        y = np.concatenate([q.labels for q in self.sequences])
        keep = np.isfinite(s)
        return s[keep], y[keep]

    def metrics(self) -> dict:
        s, y = self.pooled()
        per_class = {
            self.classes[c]: auroc(s[(y == 0) | (y == c)], y[(y == 0) | (y == c)] > 0)
            for c in np.unique(y)
            if c > 0
        }
        skipped = [
            q.name for q, sc in zip(self.sequences, self.scores, strict=True) if not np.isfinite(sc).all()
        ]
        return {
            "auroc": auroc(s, y > 0),
            "auroc_per_class": per_class,
            "frames": len(y),
            "anomalous_frames": int((y > 0).sum()),
            "sequences": len(self.sequences),
            "sequences_shorter_than_window": skipped,
        }


def evaluate(model, name: str, test: list[RenderedSequence], classes: dict[int, str]) -> Evaluation:
    return Evaluation(name, test, [score_frames(model, seq) for seq in test], classes)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_roc(evaluations: list[Evaluation], path: Path, title: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    for ev in evaluations:
        s, y = ev.pooled()
        fpr, tpr, _ = roc_curve(s, y > 0)
        ax.plot(fpr, tpr, label=f"{ev.model_name} (AUROC {auroc(s, y > 0):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title, xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


VALIDATION_QUANTILE = 0.99


def validation_threshold(
    model, val: list[RenderedSequence], quantile: float = VALIDATION_QUANTILE
) -> float | None:
    """The score that ``quantile`` of the validation split's normal frames stay at or below: a threshold
    chosen on validation data, never on the test split (None without normal validation frames)."""
    normal = [score_frames(model, q)[q.labels == 0] for q in val if len(q.maps)]
    scores = np.concatenate(normal) if normal else np.zeros(0)
    scores = scores[np.isfinite(scores)]
    return float(np.quantile(scores, quantile)) if len(scores) else None


def plot_score_timeline(
    ev: Evaluation, path: Path, title: str, max_frames: int = 4000, threshold: float | None = None
) -> None:
    """Write :func:`draw_score_timeline` to ``path``."""
    fig = draw_score_timeline(ev, title, max_frames, threshold)
    fig.savefig(path)
    _pyplot().close(fig)


def draw_score_timeline(ev: Evaluation, title: str, max_frames: int = 4000, threshold: float | None = None):
    """Scores over the concatenated test videos (the paper's Fig. 9): anomalous frames shaded, a line
    at each boundary between two videos, and the threshold chosen on validation data when given."""
    plt = _pyplot()
    scores = np.concatenate(ev.scores)[:max_frames]
    labels = np.concatenate([q.labels for q in ev.sequences])[:max_frames]
    fig, ax = plt.subplots(figsize=(10, 3.4), dpi=120)
    x = np.arange(len(scores))
    ax.fill_between(
        x, 0, 1, where=labels > 0, color="tab:red", alpha=0.2, transform=ax.get_xaxis_transform(), lw=0,
        label="anomalous frames (ground truth)",
    )  # fmt: skip
    ax.plot(x, scores, lw=0.7, color="tab:blue", label="anomaly score")
    edge, first = 0, True
    for q in ev.sequences[:-1]:
        edge += len(q.labels)
        if edge < len(scores):
            ax.axvline(
                edge, color="grey", lw=0.5, ls=":", label="boundary between two videos" if first else None
            )
            first = False
    if threshold is not None:
        ax.axhline(
            threshold, color="black", lw=1.0, ls="--",
            label=f"threshold {threshold:.2f} ({VALIDATION_QUANTILE:.0%} of normal validation frames below)",
        )  # fmt: skip
    ax.set(xlabel="frame (test videos one after another)", ylabel="anomaly score", title=title)
    ax.legend(loc="upper right", fontsize=7, framealpha=0.9)
    fig.tight_layout()
    return fig


@torch.no_grad()
def plot_reconstructions(
    model: LSTMVAE, ev: Evaluation, path: Path, title: str, frames_shown: int = 10
) -> None:
    """Input (top) and reconstruction (bottom) of a normal and an anomalous window (the paper's Fig. 10)."""
    plt = _pyplot()
    window = model.cfg.window
    picks = []
    for want_anomaly in (False, True):
        for q, sc in zip(ev.sequences, ev.scores, strict=True):
            ends = (
                np.flatnonzero((q.labels[window - 1 :] > 0) == want_anomaly) + window - 1
                if len(q.labels) >= window
                else []
            )
            if len(ends):
                end = ends[np.argmax(sc[ends])] if want_anomaly else ends[len(ends) // 2]
                picks.append((q, int(end), "anomalous" if want_anomaly else "normal"))
                break
    fig, axes = plt.subplots(
        2 * len(picks), frames_shown, figsize=(frames_shown * 0.9, 2.0 * len(picks)), dpi=120
    )
    axes = np.atleast_2d(axes)
    for row, (q, end, kind) in enumerate(picks):
        maps = q.maps[end - window + 1 : end + 1].astype(np.float32)
        logits, _, _ = model(torch.from_numpy(maps)[None])
        recon = torch.sigmoid(logits[0]).numpy()
        cols = np.linspace(0, window - 1, frames_shown).astype(int)
        for k, t in enumerate(cols):
            for r, img in ((2 * row, maps[t]), (2 * row + 1, recon[t])):
                axes[r, k].imshow(img, cmap="gray", vmin=0, vmax=1)
                axes[r, k].set_xticks([])
                axes[r, k].set_yticks([])
            axes[2 * row, k].set_title(f"frame {end - window + 1 + int(t)}", fontsize=6)
        axes[2 * row, 0].set_ylabel(f"{kind}\ninput", fontsize=7)
        axes[2 * row + 1, 0].set_ylabel("output", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
