"""Research-only parts of the issue #9 candidates: what the product does not have.

The product holds the selected model's parts, and the scripts use them from there:

- window statistics, the Gaussian window scorer and the shrinkage choice:
  :mod:`export.posture_motion` (``window_stats``, ``GaussianWindowScorer``, ``choose_shrink``), fitted
  by :mod:`appliance.models.posture_motion_fit` (``STAT_GROUPS``, ``COMPONENTS``, ``SHRINK_GRID``);
- the max-fusion of z-scored log scores: :class:`export.posture_motion.PostureMotionModel`;
- ONNX export: :func:`export.posture_motion.export_onnx`; features: :mod:`appliance.features.motion`.

What stays here, for the candidates that lost (REPORT.md, "All candidates"):

- ``ConvAE`` / ``train_ae``: the Conv1d autoencoder, alone and as the runner-up's posture component;
- ``FusionScorer`` / ``fit_fusion``: the product's fusion with a sum mode and any mix of components,
  including the ConvAE and a posture-only Gaussian (``GP``);
- ``score``: batched scoring of any of these torch modules.

Input of every scorer: (B, T, FEATURE_DIM) normalised windows (``appliance.features.motion.
normalise_window``), NaN speeds allowed (zeroed inside). Output: (B,) anomaly scores, higher = more
anomalous. Research code: not product code, not in the test suite.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from appliance.features.motion import FEATURE_DIM
from appliance.models.posture_motion_fit import COMPONENTS as PRODUCT_COMPONENTS
from export.posture_motion import GaussianWindowScorer, PostureMotionModel, choose_shrink

# Candidate components by the report's names; the Gaussians' statistics are the product's.
COMPONENTS = {
    "GS": PRODUCT_COMPONENTS["speed"],  # ("S",): mean and std of the mean joint speed (two-sided)
    "GM": PRODUCT_COMPONENTS["motion"],  # per-joint speed, centre velocity, speed, acceleration
    "GP": ("P",),  # posture: mean and std of the body-normalised joint positions (not in the product)
    "GA": PRODUCT_COMPONENTS["all"],  # posture + motion statistics in one Gaussian
}

# ----------------------------------------------------------------------------------------------
# Conv1d autoencoder on the per-frame feature sequence (the runner-up's learned part).
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AEConfig:
    window: int = 30
    channels: int = 64
    latent: int = 16
    epochs: int = 40
    batch: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-5
    noise: float = 0.0  # denoising: Gaussian noise (in standardised units) added to the input

    def to_dict(self) -> dict:
        return asdict(self)


class ConvAE(nn.Module):
    """(B, T, F) standardised-inside windows -> (B,) mean squared reconstruction error."""

    def __init__(self, cfg: AEConfig = AEConfig(), dim: int = FEATURE_DIM) -> None:
        super().__init__()
        self.cfg = cfg
        c = cfg.channels
        self.t_code = (cfg.window + 3) // 4  # 30 -> 15 -> 8
        self.register_buffer("mu", torch.zeros(dim))
        self.register_buffer("sd", torch.ones(dim))
        self.enc = nn.Sequential(
            nn.Conv1d(dim, c, 5, padding=2),
            nn.ReLU(),
            nn.Conv1d(c, c, 5, stride=2, padding=2),
            nn.ReLU(),
            nn.Conv1d(c, c // 2, 5, stride=2, padding=2),
            nn.ReLU(),
        )
        self.to_code = nn.Linear(c // 2 * self.t_code, cfg.latent)
        self.from_code = nn.Linear(cfg.latent, c // 2 * self.t_code)
        self.dec = nn.Sequential(
            nn.ReLU(),
            nn.ConvTranspose1d(c // 2, c, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose1d(c, c, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv1d(c, dim, 5, padding=2),
        )

    def standardise(self, w: torch.Tensor) -> torch.Tensor:
        return (torch.nan_to_num(w, nan=0.0) - self.mu) / self.sd

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, F) standardised -> (B, T, F) reconstruction."""
        h = self.enc(x.transpose(1, 2))
        code = self.to_code(h.flatten(1))
        h = self.from_code(code).reshape(len(x), -1, self.t_code)
        return self.dec(h)[..., : x.shape[1]].transpose(1, 2)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        x = self.standardise(w)
        r = self.reconstruct(x)
        return ((r - x) ** 2).mean(dim=(1, 2))


def train_ae(windows: np.ndarray, cfg: AEConfig = AEConfig(), seed: int = 0, log=None) -> ConvAE:
    """Fit a ConvAE on (N, T, F) normal normalised windows; returns it in eval mode."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x = np.nan_to_num(np.asarray(windows, np.float32), nan=0.0)
    model = ConvAE(cfg, x.shape[-1])
    flat = x.reshape(-1, x.shape[-1])
    with torch.no_grad():
        model.mu.copy_(torch.from_numpy(flat.mean(0)))
        model.sd.copy_(torch.from_numpy(flat.std(0) + 1e-2))
    xt = model.standardise(torch.from_numpy(x)).detach()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.epochs)
    for epoch in range(cfg.epochs):
        model.train()
        order = rng.permutation(len(xt))
        total = 0.0
        for start in range(0, len(order), cfg.batch):
            b = xt[order[start : start + cfg.batch]]
            inp = b + cfg.noise * torch.randn_like(b) if cfg.noise > 0 else b
            loss = ((model.reconstruct(inp) - b) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(b)
        sched.step()
        if log:
            log(f"epoch {epoch + 1}/{cfg.epochs} loss {total / len(xt):.4f}")
    return model.eval()


@torch.no_grad()
def score(model: nn.Module, windows: np.ndarray, batch: int = 2048) -> np.ndarray:
    """(N, T, F) windows -> (N,) float64 scores of any scorer here (ConvAE, FusionScorer, a Gaussian)."""
    out = [model(torch.from_numpy(np.asarray(windows[i : i + batch], np.float32))) for i in range(0, len(windows), batch)]
    return torch.cat(out).double().numpy() if out else np.zeros(0)


# ----------------------------------------------------------------------------------------------
# Calibrated fusion: the product's (each component's log score z-scored on normal validation
# windows, then the max), with a sum mode and any components (ConvAE, posture-only Gaussian).
# ----------------------------------------------------------------------------------------------


class FusionScorer(PostureMotionModel):
    """:class:`export.posture_motion.PostureMotionModel` (max of z-scored log scores; its
    ``components``) with ``mode="sum"`` as well, for the sum-fusion candidate.

    Input: (B, T, FEATURE_DIM) normalised windows without NaN (``appliance.features.motion.model_input``).
    """

    def __init__(self, names: list[str], scorers: list[nn.Module], mode: str = "max") -> None:
        super().__init__(names, scorers)
        self.mode = mode

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        z = self.components(w)
        return z.max(dim=1).values if self.mode == "max" else z.sum(dim=1)


def fit_fusion(
    train: np.ndarray,
    val: np.ndarray,
    components: tuple[str, ...] = ("GS", "GM", "AE"),
    mode: str = "max",
    seed: int = 0,
    ae_cfg: AEConfig = AEConfig(epochs=20),
    log=None,
    ae: ConvAE | None = None,
) -> tuple[FusionScorer, dict]:
    """Fit every component on normal training windows; shrinkage and calibration on normal val windows.

    The Gaussians are the product's (``export.posture_motion.GaussianWindowScorer`` and
    ``choose_shrink``, on the statistics of :data:`COMPONENTS`); "AE" is a ConvAE (``ae``: an already
    trained one, which saves retraining it per candidate).
    """
    train = np.nan_to_num(np.asarray(train, np.float32), nan=0.0)
    val = np.nan_to_num(np.asarray(val, np.float32), nan=0.0)
    scorers, info = [], {"components": list(components), "mode": mode, "seed": seed}
    for name in components:
        if name == "AE":
            scorers.append(ae if ae is not None else train_ae(train, ae_cfg, seed, log))
            info["ae"] = scorers[-1].cfg.to_dict()
        else:
            shrink = choose_shrink(train, val, COMPONENTS[name])
            scorers.append(GaussianWindowScorer.fit(train, shrink, COMPONENTS[name]))
            info[f"shrink_{name}"] = shrink
    fusion = FusionScorer(list(components), scorers, mode)
    with torch.no_grad():
        logs = torch.stack([torch.log(s(torch.from_numpy(val)) + 1e-9) for s in scorers], dim=1)
        fusion.loc.copy_(logs.mean(0))
        fusion.scale.copy_(logs.std(0) + 1e-6)
    return fusion.eval(), info
