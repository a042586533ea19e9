"""Multiply-accumulate counts of a model, measured with forward hooks on real shapes."""

from __future__ import annotations

import torch
from torch import nn


def count_macs(module: nn.Module, *inputs: torch.Tensor) -> int:
    """MACs of one forward pass (convolutions, transposed convolutions, linear layers, LSTMs)."""
    total = 0

    def hook(mod, args, out):
        nonlocal total
        x = args[0]
        if isinstance(mod, nn.Conv2d):
            total += out.numel() * mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
        elif isinstance(mod, nn.ConvTranspose2d):
            total += x.numel() * mod.out_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
        elif isinstance(mod, nn.Linear):
            total += x.numel() // x.shape[-1] * mod.in_features * mod.out_features
        elif isinstance(mod, nn.LSTM):
            steps = x.shape[0] * x.shape[1]
            total += steps * 4 * mod.hidden_size * (mod.input_size + mod.hidden_size)

    handles = [
        m.register_forward_hook(hook)
        for m in module.modules()
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.LSTM))
    ]
    try:
        with torch.no_grad():
            module(*inputs)
    finally:
        for h in handles:
            h.remove()
    return total
