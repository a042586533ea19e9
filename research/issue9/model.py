"""Window scorers on posture + motion features (issue #9): a Gaussian on window statistics and a
Conv1d autoencoder, both trained on normal windows only, both exportable as plain ONNX ops.

Input of every scorer: (B, T, FEATURE_DIM) normalised windows (``features.normalise_window``),
NaN speeds allowed (they are zeroed inside). Output: (B,) anomaly scores, higher = more anomalous.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from features import CENTRE_VELOCITY, FEATURE_DIM, MASK, NUM_JOINTS, POSTURE, SPEED, VELOCITY

# ----------------------------------------------------------------------------------------------
# Window statistics (the Gaussian model's input), written in torch so they export to ONNX as-is.
# ----------------------------------------------------------------------------------------------

STAT_GROUPS = ("P", "V", "C", "S", "A")
# P posture mean + std over the window (60); V per-joint speed mean + std (30); C centre velocity
# mean, std and mean |.| (6); S mean joint speed mean + std (2); A per-joint acceleration mean (15);
# M visibility fraction per joint (15, not used by default).
# With masked=True, per-joint statistics use only the frames where the joint is seen (velocity:
# seen in both frames; acceleration: in three) and are NaN where it is never seen in the window;
# the scorers replace a NaN statistic by the normal mean (a zero z-score).


def _masked_mean_std(x: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (B, T, J, D), m (B, T, J) -> mean, std over T of the masked entries, each (B, J, D); NaN if none."""
    m = m.unsqueeze(-1)
    n = m.sum(1)
    mean = (x * m).sum(1) / n.clamp(min=1.0)
    var = (((x - mean.unsqueeze(1)) ** 2) * m).sum(1) / n.clamp(min=1.0)
    nan = torch.full_like(mean, float("nan"))
    has = (n > 0).expand_as(mean)
    return torch.where(has, mean, nan), torch.where(has, torch.sqrt(var + 1e-12), nan)


def window_stats(w: torch.Tensor, groups: tuple[str, ...] = STAT_GROUPS, masked: bool = True) -> torch.Tensor:
    """(B, T, FEATURE_DIM) normalised windows -> (B, D) statistics (NaN only where masked and unseen)."""
    w = torch.nan_to_num(w, nan=0.0)
    B, T, _ = w.shape
    P = w[..., POSTURE].reshape(B, T, NUM_JOINTS, 2)
    M = w[..., MASK]
    V = w[..., VELOCITY].reshape(B, T, NUM_JOINTS, 2)
    Vn = torch.sqrt((V * V).sum(-1, keepdim=True) + 1e-12)
    C = w[..., CENTRE_VELOCITY]
    S = w[..., SPEED : SPEED + 1]
    ones = torch.ones_like(M)
    mp = M if masked else ones
    mv = torch.cat([torch.zeros_like(M[:, :1]), M[:, 1:] * M[:, :-1]], 1) if masked else ones
    out = []
    for g in groups:
        if g == "P":
            mean, std = _masked_mean_std(P, mp)
            out += [mean.flatten(1), std.flatten(1)]
        elif g == "V":
            mean, std = _masked_mean_std(Vn, mv)
            out += [mean.flatten(1), std.flatten(1)]
        elif g == "C":
            out += [C.mean(1), C.std(1, unbiased=False), C.abs().mean(1)]
        elif g == "S":
            out += [S.mean(1), S.std(1, unbiased=False)]
        elif g == "A":
            A = torch.sqrt(((V[:, 1:] - V[:, :-1]) ** 2).sum(-1, keepdim=True) + 1e-12)
            ma = mv[:, 1:] * mv[:, :-1]
            mean, _ = _masked_mean_std(A, ma)
            out += [mean.flatten(1)]
        elif g == "M":
            out += [M.mean(1)]
        elif g == "K":  # elbow and knee angles (cosine): mean, std, min, max over the window
            cos = []
            for a, b, c in ((2, 3, 4), (5, 6, 7), (9, 10, 11), (12, 13, 14)):
                u, v = P[:, :, a] - P[:, :, b], P[:, :, c] - P[:, :, b]
                cos.append((u * v).sum(-1) / torch.sqrt((u * u).sum(-1) * (v * v).sum(-1) + 1e-6))
            K = torch.stack(cos, -1)
            out += [K.mean(1), K.std(1, unbiased=False), K.amin(1), K.amax(1)]
        elif g == "Y":  # vertical bounce: range of the integrated centre height, std of vertical velocity
            y = torch.cumsum(C[..., 1], 1)
            out += [(y.amax(1) - y.amin(1) - (y[:, -1] - y[:, 0]).abs()).unsqueeze(1), C[..., 1].std(1, unbiased=False).unsqueeze(1)]
        elif g == "L":  # the newest frame's posture
            out += [P[:, -1].flatten(1)]
        elif g == "R":  # per-joint speed over the newest 5 frames
            out += [Vn[:, -5:].mean(1).flatten(1)]
        elif g == "E":  # exponentially weighted (half-life 5 frames) posture mean, newest frames first
            k = torch.pow(torch.tensor(0.5), torch.arange(T - 1, -1, -1, dtype=w.dtype) / 5.0)
            k = (k / k.sum()).reshape(1, T, 1, 1)
            out += [(P * k).sum(1).flatten(1), (Vn * k).sum(1).flatten(1)]
        else:
            raise ValueError(f"unknown statistics group {g!r}")
    return torch.cat(out, dim=1)


class GaussianWindowScorer(nn.Module):
    """Squared Mahalanobis distance of the window statistics to the normal windows' Gaussian.

    Covariance of the standardised statistics shrunk towards the identity by ``shrink``; the score
    is ||W (s - mu) / sd||^2 with W the Cholesky factor of the precision: one Linear layer.
    """

    def __init__(self, dim: int, groups: tuple[str, ...] = STAT_GROUPS, masked: bool = True) -> None:
        super().__init__()
        self.groups = tuple(groups)
        self.masked = masked
        self.register_buffer("mu", torch.zeros(dim))
        self.register_buffer("sd", torch.ones(dim))
        self.proj = nn.Linear(dim, dim, bias=False)

    @classmethod
    def fit(
        cls, windows: np.ndarray, shrink: float = 0.5, groups: tuple[str, ...] = STAT_GROUPS, masked: bool = True
    ):
        with torch.no_grad():
            s = window_stats(torch.from_numpy(np.asarray(windows, np.float32)), groups, masked).double().numpy()
        mu, sd = np.nanmean(s, 0), np.nanstd(s, 0) + 1e-3
        z = np.nan_to_num((s - mu) / sd, nan=0.0)
        cov = (1 - shrink) * np.cov(z.T) + shrink * np.eye(z.shape[1])
        precision = np.linalg.inv(cov)
        chol = np.linalg.cholesky(precision)  # precision = L L^T -> d^2 = ||L^T z||^2
        m = cls(s.shape[1], groups, masked)
        with torch.no_grad():
            m.mu.copy_(torch.from_numpy(mu))
            m.sd.copy_(torch.from_numpy(sd))
            m.proj.weight.copy_(torch.from_numpy(chol.T))
        return m.eval()

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        z = (window_stats(w, self.groups, self.masked) - self.mu) / self.sd
        y = self.proj(torch.nan_to_num(z, nan=0.0))
        return (y * y).sum(1)


# ----------------------------------------------------------------------------------------------
# Conv1d autoencoder on the per-frame feature sequence.
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
    out = [model(torch.from_numpy(np.asarray(windows[i : i + batch], np.float32))) for i in range(0, len(windows), batch)]
    return torch.cat(out).double().numpy() if out else np.zeros(0)


# ----------------------------------------------------------------------------------------------
# Calibrated fusion: each component's log-score z-scored on normal validation windows, then max.
# ----------------------------------------------------------------------------------------------

COMPONENTS = {
    "GS": ("S",),  # speed: mean and std of the mean joint speed over the window (two-sided)
    "GM": ("V", "C", "S", "A"),  # motion: per-joint speed, centre velocity, speed, acceleration
    "GP": ("P",),  # posture: mean and std of the body-normalised joint positions
    "GA": STAT_GROUPS,  # posture + motion statistics in one Gaussian
}
SHRINK_GRID = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95)


def choose_shrink(train: np.ndarray, val: np.ndarray, groups: tuple[str, ...]) -> float:
    """Shrinkage maximising the Gaussian log-likelihood of the normal validation windows' statistics."""
    with torch.no_grad():
        s = window_stats(torch.from_numpy(np.asarray(train, np.float32)), groups, False).double().numpy()
        t = window_stats(torch.from_numpy(np.asarray(val, np.float32)), groups, False).double().numpy()
    mu, sd = s.mean(0), s.std(0) + 1e-3
    z, zt = (s - mu) / sd, (t - mu) / sd
    best, best_ll = SHRINK_GRID[0], -np.inf
    for shrink in SHRINK_GRID:
        cov = (1 - shrink) * np.cov(z.T) + shrink * np.eye(z.shape[1])
        _, logdet = np.linalg.slogdet(cov)
        ll = -0.5 * (np.einsum("ij,jk,ik->i", zt, np.linalg.inv(cov), zt).mean() + logdet)
        if ll > best_ll:
            best, best_ll = shrink, ll
    return best


class FusionScorer(nn.Module):
    """max_k (log s_k(w) - m_k) / d_k over component scorers s_k; (m_k, d_k) from normal val windows.

    Input: (B, T, FEATURE_DIM) normalised windows without NaN (``features.model_input``).
    """

    def __init__(self, names: list[str], scorers: list[nn.Module], mode: str = "max") -> None:
        super().__init__()
        self.names = list(names)
        self.scorers = nn.ModuleList(scorers)
        self.mode = mode
        self.register_buffer("loc", torch.zeros(len(scorers)))
        self.register_buffer("scale", torch.ones(len(scorers)))

    def components(self, w: torch.Tensor) -> torch.Tensor:
        """(B, K) calibrated component scores (z-scores of the log scores)."""
        logs = torch.stack([torch.log(s(w) + 1e-9) for s in self.scorers], dim=1)
        return (logs - self.loc) / self.scale

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

    ``ae``: an already trained ConvAE to use as the "AE" component (saves retraining per candidate).
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
            scorers.append(GaussianWindowScorer.fit(train, shrink, COMPONENTS[name], masked=False))
            info[f"shrink_{name}"] = shrink
    fusion = FusionScorer(list(components), scorers, mode)
    with torch.no_grad():
        logs = torch.stack([torch.log(s(torch.from_numpy(val)) + 1e-9) for s in scorers], dim=1)
        fusion.loc.copy_(logs.mean(0))
        fusion.scale.copy_(logs.std(0) + 1e-6)
    return fusion.eval(), info
