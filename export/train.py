"""Training on normal data only: seeded, reproducible, with a checkpoint that carries its own contract.

Reproducible means bit-identical weights for the same seed, data, thread count, torch build and CPU:
float sums are split differently across threads (measured on URFD: 1 vs 2 threads differ by 5e-4
in the weights after 3 epochs, and the LSTM-VAE's test AUROC after 30 is 0.818 vs 0.807), so
training runs on a fixed ``TrainConfig.threads`` (default 1) whatever the machine's core count,
with deterministic algorithms and the seed applied to every random source it uses. Another CPU or
torch build may still round differently (MKL and oneDNN pick kernels per instruction set); the
README quotes the seed spread beside its figures.

Sample selection: the LSTM-VAE learns from stride-1 windows of T maps whose every frame is normal;
the AE/VAE baselines from the normal frames themselves. Where a set has more windows than
``max_windows_per_epoch`` (the paper trained on 4,589), each epoch visits every k-th window from a
random phase, so 30 epochs still see all of them while an epoch costs about what the paper's did.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from appliance.features.skeleton_map import MapSpec
from appliance.features.window import sliding_windows
from export.datasets import RenderedSequence
from export.models import LSTMVAE, FrameAutoencoder, ModelConfig, build_model

PAPER_BATCH = {"lstm_vae": 16, "ae": 32, "vae": 32}
CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    batch_size: int | None = None  # None: the paper's (16 for the LSTM-VAE, 32 for AE/VAE)
    learning_rate: float = 1e-3
    seed: int = 0
    max_windows_per_epoch: int = 4096
    threads: int = 1  # torch intra-op threads while training: part of what makes a run reproducible

    def resolved_batch(self, model_type: str) -> int:
        return self.batch_size or PAPER_BATCH[model_type]


def normal_window_index(data: list[RenderedSequence], window: int) -> np.ndarray:
    """(W, 2) [sequence, start] of every window whose frames are all normal."""
    rows = []
    for i, seq in enumerate(data):
        if len(seq.labels) < window:
            continue
        ok = np.flatnonzero(sliding_windows(seq.labels == 0, window).all(axis=1))
        rows.append(np.stack([np.full(len(ok), i), ok], axis=1))
    return np.concatenate(rows) if rows else np.zeros((0, 2), dtype=np.int64)


def normal_frame_index(data: list[RenderedSequence]) -> np.ndarray:
    """(N, 2) [sequence, frame] of every normal frame."""
    rows = [
        np.stack([np.full(n.size, i), n], axis=1)
        for i, s in enumerate(data)
        if (n := np.flatnonzero(s.labels == 0)).size
    ]
    return np.concatenate(rows) if rows else np.zeros((0, 2), dtype=np.int64)


def _batch(data: list[RenderedSequence], index: np.ndarray, window: int | None) -> torch.Tensor:
    if window is None:
        maps = np.stack([data[s].maps[f] for s, f in index])
    else:
        maps = np.stack([data[s].maps[f : f + window] for s, f in index])
    return torch.from_numpy(maps.astype(np.float32))


def data_fingerprint(data: list[RenderedSequence]) -> str:
    h = hashlib.sha256()
    for seq in data:
        h.update(seq.name.encode())
        h.update(np.ascontiguousarray(seq.maps).tobytes())
        h.update(np.ascontiguousarray(seq.labels).tobytes())
    return h.hexdigest()[:16]


@dataclass
class TrainResult:
    model: LSTMVAE | FrameAutoencoder
    model_config: ModelConfig
    train_config: TrainConfig
    history: list[dict]
    data_summary: dict
    seconds: float


def evaluate_loss(model, data: list[RenderedSequence], cfg: ModelConfig, batch: int = 256) -> float:
    """Mean training loss (reconstruction + KL) on the normal samples of ``data``, model in eval mode."""
    window = cfg.window if cfg.scores_windows else None
    index = normal_window_index(data, cfg.window) if window else normal_frame_index(data)
    if len(index) == 0:
        return float("nan")
    model.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(index), batch):
            part = index[start : start + batch]
            loss, _ = model.loss(_batch(data, part, window))
            total += float(loss) * len(part)
    return total / len(index)


@contextlib.contextmanager
def reproducible(seed: int, threads: int) -> Iterator[None]:
    """Seed every random source, fix the thread count and use deterministic kernels, then restore.

    Restoring matters because training runs inside other processes too (tests, benchmarks, the
    reproduce command), whose own thread settings must not change because a model was trained.
    """
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    saved_threads = torch.get_num_threads()
    saved_deterministic = torch.are_deterministic_algorithms_enabled()
    saved_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    random.seed(seed)
    try:
        yield
    finally:
        torch.set_num_threads(saved_threads)
        torch.use_deterministic_algorithms(saved_deterministic, warn_only=saved_warn_only)


def train_model(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    train: list[RenderedSequence],
    val: list[RenderedSequence] | None = None,
    progress: bool = True,
    description: str = "",
) -> TrainResult:
    """Train one model on the normal samples of ``train``; returns the model in eval mode.

    The same ``train_cfg`` (seed and threads included) and data give bit-identical weights on one
    machine, whatever the calling process's own thread settings.
    """
    with reproducible(train_cfg.seed, train_cfg.threads):
        return _train(model_cfg, train_cfg, train, val, progress, description)


def _train(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    train: list[RenderedSequence],
    val: list[RenderedSequence] | None,
    progress: bool,
    description: str,
) -> TrainResult:
    rng = np.random.default_rng(train_cfg.seed)  # data order: epoch phase and permutation
    window = model_cfg.window if model_cfg.scores_windows else None
    index = normal_window_index(train, model_cfg.window) if window else normal_frame_index(train)
    if len(index) == 0:
        raise ValueError("no normal training samples (every sequence is shorter than a window or anomalous)")
    model = build_model(model_cfg)
    optimiser = torch.optim.Adam(model.parameters(), lr=train_cfg.learning_rate)
    batch = train_cfg.resolved_batch(model_cfg.model_type)
    every = max(1, int(np.ceil(len(index) / train_cfg.max_windows_per_epoch))) if window else 1
    history: list[dict] = []
    started = time.perf_counter()
    bar = None
    if progress and sys.stderr.isatty():
        from tqdm import tqdm

        steps_per_epoch = int(np.ceil(len(index[::every]) / batch))
        bar = tqdm(
            total=train_cfg.epochs * steps_per_epoch, desc=description or model_cfg.model_type, unit="step"
        )
    for epoch in range(train_cfg.epochs):
        model.train()
        chosen = index[int(rng.integers(every)) :: every]
        chosen = chosen[rng.permutation(len(chosen))]
        losses = []
        for start in range(0, len(chosen), batch):
            part = chosen[start : start + batch]
            if len(part) < 2:  # batch norm needs two samples
                continue
            loss, _ = model.loss(_batch(train, part, window))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(float(loss.detach()))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{losses[-1]:.1f}")
        record = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)) if losses else float("nan")}
        if val:
            record["val_loss"] = evaluate_loss(model, val, model_cfg)
        history.append(record)
        if progress and bar is None:  # plain lines in logs and under systemd/CI
            extra = f", val loss {record['val_loss']:.2f}" if "val_loss" in record else ""
            print(
                f"{description or model_cfg.model_type}: epoch {epoch + 1}/{train_cfg.epochs}, "
                f"train loss {record['train_loss']:.2f}{extra}",
                file=sys.stderr,
                flush=True,
            )
    if bar is not None:
        bar.close()
    model.eval()
    summary = {
        "sequences": [s.name for s in train],
        "samples": len(index),
        "sample_kind": "windows" if window else "frames",
        "window_stride_per_epoch": every,
        "fingerprint": data_fingerprint(train),
    }
    return TrainResult(model, model_cfg, train_cfg, history, summary, time.perf_counter() - started)


def save_checkpoint(
    path: str | Path, result: TrainResult, map_spec: MapSpec, extra: dict | None = None
) -> Path:
    """A self-describing checkpoint: weights, architecture, map contract, training config and data."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "model_config": result.model_config.to_dict(),
            "train_config": asdict(result.train_config),
            "map_spec": map_spec.to_dict(),
            "data_summary": result.data_summary,
            "history": result.history,
            "seconds": result.seconds,
            "extra": json.loads(json.dumps(extra or {})),
            "state_dict": result.model.state_dict(),
        },
        path,
    )
    return path


def load_checkpoint(path: str | Path) -> tuple[LSTMVAE | FrameAutoencoder, dict]:
    """Model (eval mode) and the checkpoint's metadata."""
    ckpt = torch.load(Path(path), map_location="cpu", weights_only=True)
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: checkpoint format {ckpt.get('format')!r}, expected {CHECKPOINT_FORMAT}")
    model = build_model(ModelConfig.from_dict(ckpt["model_config"]))
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model, ckpt
