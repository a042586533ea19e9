"""ONNX graphs of a trained LSTM-VAE, split the way the edge runs it.

- ``frame_encoder``: maps (B, S, S) -> features (B, F). Run once per new frame.
- ``sequence``: features (B, T, F) and maps (B, T, S, S) -> score (B,). Run once per window on the
  cached features of its T frames, so no frame is encoded twice.
- ``window`` (reference): windows (B, T, S, S) -> score (B,) in one graph, encoding all T frames.

All graphs use z = mu (no sampling), batch norm in inference mode, opset 17 and a dynamic batch axis.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from export.models import LSTMVAE, bernoulli_nll

OPSET = 17
GRAPHS = ("frame_encoder", "sequence", "window")


class FrameEncoderGraph(nn.Module):
    def __init__(self, model: LSTMVAE) -> None:
        super().__init__()
        self.encoder = model.frame_encoder

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return self.encoder(maps.unsqueeze(1))


class SequenceScoreGraph(nn.Module):
    def __init__(self, model: LSTMVAE) -> None:
        super().__init__()
        self.sequence = model.sequence

    def forward(self, features: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        mu, _ = self.sequence.encode(features)
        logits = self.sequence.decode(mu, features.shape[1])
        return bernoulli_nll(logits, maps.unsqueeze(2)).mean(dim=1)


class WindowScoreGraph(nn.Module):
    def __init__(self, model: LSTMVAE) -> None:
        super().__init__()
        self.encoder = FrameEncoderGraph(model)
        self.scorer = SequenceScoreGraph(model)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        b, t, s, _ = windows.shape
        features = self.encoder(windows.reshape(b * t, s, s)).reshape(b, t, -1)
        return self.scorer(features, windows)


def graph_modules(model: LSTMVAE) -> dict[str, tuple[nn.Module, tuple[torch.Tensor, ...], dict]]:
    """Each graph's module (eval mode), example inputs and dynamic axes."""
    cfg = model.cfg
    s, t, f = cfg.map_size, cfg.window, cfg.frame_features
    batch = {0: "batch"}
    return {
        "frame_encoder": (
            FrameEncoderGraph(model).eval(),
            (torch.zeros(2, s, s),),
            {"maps": batch, "features": batch},
        ),
        "sequence": (
            SequenceScoreGraph(model).eval(),
            (torch.zeros(2, t, f), torch.zeros(2, t, s, s)),
            {"features": batch, "maps": batch, "score": batch},
        ),
        "window": (
            WindowScoreGraph(model).eval(),
            (torch.zeros(2, t, s, s),),
            {"windows": batch, "score": batch},
        ),
    }


_IO_NAMES = {
    "frame_encoder": (["maps"], ["features"]),
    "sequence": (["features", "maps"], ["score"]),
    "window": (["windows"], ["score"]),
}


def export_onnx(model: LSTMVAE, out_dir: str | Path) -> dict[str, Path]:
    """Write ``frame_encoder.onnx``, ``sequence.onnx`` and ``window.onnx`` (fp32) into ``out_dir``."""
    if not isinstance(model, LSTMVAE):
        raise ValueError("ONNX export handles the LSTM-VAE; the AE/VAE baselines are evaluation-only")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    paths = {}
    for name, (module, args, dynamic_axes) in graph_modules(model).items():
        inputs, outputs = _IO_NAMES[name]
        path = out_dir / f"{name}.onnx"
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the exporter warns about LSTM batch sizes it cannot check
            torch.onnx.export(
                module,
                args,
                str(path),
                input_names=inputs,
                output_names=outputs,
                dynamic_axes=dynamic_axes,
                opset_version=OPSET,
                dynamo=False,
            )
        paths[name] = path
    model.eval()
    return paths
