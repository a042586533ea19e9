"""The posture-motion model: where a person goes and how fast, together with the body's shape.

The paper's LSTM-VAE sees only a neck-centred skeleton map, so it misses running and dashing. This
model scores a window of body-normalised posture and motion features
(:mod:`appliance.features.motion`) with three Gaussians on window statistics, each a squared
Mahalanobis distance to the normal windows (closed form, no random element):

- ``speed``: mean and spread of the mean joint speed (catches running, dashing, falling);
- ``motion``: per-joint speed, centre velocity, speed and per-joint acceleration (kicks, punches);
- ``all``: posture (mean and spread of each joint relative to the hip) and motion statistics together
  (crouching, lying, reaching);

and the one-sided speed rule (mean joint speed over the window; faster than normal only), which the
Gaussians, being two-sided, weigh less sharply (added on validation: URFD 0.957 -> 0.971, mocap
unchanged at 0.920).

Each covariance is shrunk towards the identity by the amount that maximises the likelihood of the
normal validation windows; each component's log score is z-scored on those windows, and the window
score is the largest (a window abnormal in any respect is abnormal). Chosen on validation splits
among Gaussian, autoencoder and fused candidates (``docs/research/issue9/REPORT.md``); the graph is plain
arithmetic and two matrix products, so it exports to ONNX as it is.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from appliance.features.motion import CENTRE_VELOCITY, FEATURE_DIM, NUM_JOINTS, POSTURE, SPEED, VELOCITY
from appliance.models import posture_motion_fit as pmf
from appliance.models.posture_motion_fit import STAT_GROUPS, PostureMotionParams


def _mean_std(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = x.mean(1)
    var = ((x - mean.unsqueeze(1)) ** 2).mean(1)
    return mean, torch.sqrt(var + 1e-12)


def window_stats(w: torch.Tensor, groups: tuple[str, ...] = STAT_GROUPS) -> torch.Tensor:
    """(B, T, FEATURE_DIM) normalised windows -> (B, D) window statistics."""
    w = torch.nan_to_num(w, nan=0.0)
    b, t, _ = w.shape
    p = w[..., POSTURE].reshape(b, t, NUM_JOINTS, 2)
    v = w[..., VELOCITY].reshape(b, t, NUM_JOINTS, 2)
    vn = torch.sqrt((v * v).sum(-1, keepdim=True) + 1e-12)
    c = w[..., CENTRE_VELOCITY]
    s = w[..., SPEED : SPEED + 1]
    out = []
    for g in groups:
        if g == "P":
            out += [m.flatten(1) for m in _mean_std(p)]
        elif g == "V":
            out += [m.flatten(1) for m in _mean_std(vn)]
        elif g == "C":
            out += [c.mean(1), c.std(1, unbiased=False), c.abs().mean(1)]
        elif g == "S":
            out += [s.mean(1), s.std(1, unbiased=False)]
        elif g == "A":
            a = torch.sqrt(((v[:, 1:] - v[:, :-1]) ** 2).sum(-1, keepdim=True) + 1e-12)
            out += [a.mean(1).flatten(1)]
        else:
            raise ValueError(f"unknown statistics group {g!r}")
    return torch.cat(out, dim=1)


class GaussianWindowScorer(nn.Module):
    """Squared Mahalanobis distance of a window's statistics to the normal windows' Gaussian:
    ||L^T (s - mu) / sd||^2 with L the Cholesky factor of the (shrunk) precision: one Linear layer."""

    def __init__(self, dim: int, groups: tuple[str, ...]) -> None:
        super().__init__()
        self.groups = tuple(groups)
        self.register_buffer("mu", torch.zeros(dim))
        self.register_buffer("sd", torch.ones(dim))
        self.proj = nn.Linear(dim, dim, bias=False)

    @classmethod
    def fit(cls, windows: np.ndarray, shrink: float, groups: tuple[str, ...]) -> GaussianWindowScorer:
        """Fitted by the device's numpy code (:mod:`appliance.models.posture_motion_fit`)."""
        comp = pmf.fit_component("fit", groups, pmf.window_stats(windows, tuple(groups)), shrink)
        return cls.from_component(comp)

    @classmethod
    def from_component(cls, comp: pmf.GaussianComponent) -> GaussianWindowScorer:
        m = cls(len(comp.mu), comp.groups)
        with torch.no_grad():
            m.mu.copy_(torch.from_numpy(comp.mu))
            m.sd.copy_(torch.from_numpy(comp.sd))
            m.proj.weight.copy_(torch.from_numpy(np.ascontiguousarray(comp.chol.T)))
        return m.eval()

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        y = self.proj((window_stats(w, self.groups) - self.mu) / self.sd)
        return (y * y).sum(1)


def choose_shrink(train: np.ndarray, val: np.ndarray, groups: tuple[str, ...]) -> float:
    """Shrinkage maximising the Gaussian log-likelihood of the normal validation windows' statistics."""
    return pmf.choose_shrink(pmf.window_stats(train, tuple(groups)), pmf.window_stats(val, tuple(groups)))


class SpeedRuleScorer(nn.Module):
    """The one-sided speed rule as a component: mean joint speed / body scale over the window."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return torch.nan_to_num(w, nan=0.0)[..., SPEED].mean(1)


class PostureMotionModel(nn.Module):
    """(B, T, FEATURE_DIM) normalised windows (NaN allowed) -> (B,) anomaly scores: the largest of the
    components' z-scored log Mahalanobis distances (z-scored on normal validation windows)."""

    def __init__(self, names: list[str], scorers: list[nn.Module]) -> None:
        super().__init__()
        self.names = list(names)
        self.scorers = nn.ModuleList(scorers)
        self.register_buffer("loc", torch.zeros(len(scorers)))
        self.register_buffer("scale", torch.ones(len(scorers)))

    def components(self, w: torch.Tensor) -> torch.Tensor:
        logs = torch.stack([torch.log(s(w) + 1e-9) for s in self.scorers], dim=1)
        return (logs - self.loc) / self.scale

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.components(w).max(dim=1).values

    @classmethod
    def from_params(cls, params: PostureMotionParams) -> PostureMotionModel:
        """The module computing what ``params.score`` computes (float32), for export."""
        scorers: list[nn.Module] = [GaussianWindowScorer.from_component(c) for c in params.components]
        model = cls(params.names, [*scorers, SpeedRuleScorer()])
        with torch.no_grad():
            model.loc.copy_(torch.from_numpy(np.asarray(params.loc, np.float64)))
            model.scale.copy_(torch.from_numpy(np.asarray(params.scale, np.float64)))
        return model.eval()

    @torch.no_grad()
    def score(self, windows: np.ndarray, batch: int = 2048) -> np.ndarray:
        """Scores of (N, T, FEATURE_DIM) windows, float64."""
        out = [
            self(torch.from_numpy(np.asarray(windows[i : i + batch], np.float32)))
            for i in range(0, len(windows), batch)
        ]
        return torch.cat(out).double().numpy() if out else np.zeros(0)


def fit_posture_motion(train: np.ndarray, val: np.ndarray) -> tuple[PostureMotionModel, dict]:
    """Fit on normal training windows; shrinkage and score calibration on normal validation windows.

    The fit is the device's own (:func:`appliance.models.posture_motion_fit.fit`, numpy): this only wraps
    its parameters in a module that exports to ONNX and TFLite."""
    params = pmf.fit(np.asarray(train, np.float32), np.asarray(val, np.float32))
    return PostureMotionModel.from_params(params), dict(params.info)


def speed_rule(windows: np.ndarray) -> np.ndarray:
    """The one-line baseline: mean over the window of the mean joint speed / body scale."""
    import warnings

    sp = np.asarray(windows, np.float64)[..., SPEED]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # windows without any speed: score 0
        return np.nan_to_num(np.nanmean(sp, axis=1), nan=0.0)


def export_onnx(model: PostureMotionModel, path, window: int = 30) -> None:
    """One graph: (batch, T, FEATURE_DIM) normalised window -> (batch,) score."""
    dummy = torch.zeros(1, window, FEATURE_DIM)
    torch.onnx.export(
        model, (dummy,), str(path), input_names=["window"], output_names=["score"],
        dynamic_axes={"window": {0: "batch"}, "score": {0: "batch"}}, opset_version=17, dynamo=False,
    )  # fmt: skip
