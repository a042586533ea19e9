"""The paper's LSTM-VAE and its per-frame AE/VAE baselines (server side, PyTorch).

Every model is a per-frame :class:`FrameEncoder` (CNN with batch norm) followed by a part that
works on encodings, so the edge can encode each frame once and reuse the encoding in the 30 windows
that contain it. Decoders output Bernoulli logits per map pixel.

Scores (higher = more anomalous) are Bernoulli negative log-likelihoods of the input maps given the
posterior mean (z = mu, deterministic), in nats per frame: the paper's "reconstruction error" in
the units of its training loss.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ModelConfig:
    """Architecture hyper-parameters (defaults: the paper's Table 2 where it gives them)."""

    model_type: str = "lstm_vae"  # lstm_vae | ae | vae
    map_size: int = 28
    window: int = 30  # T
    latent_dim: int = 16  # J
    lstm_units: int = 300
    frame_features: int = 64
    channels: tuple[int, int] = (16, 32)

    @property
    def scores_windows(self) -> bool:
        """Whether the architecture scores T-frame windows (the LSTM-VAE) rather than single maps."""
        return ARCHITECTURES[self.model_type].windows

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        d = dict(d)
        d["channels"] = tuple(d["channels"])
        return cls(**d)


class FrameEncoder(nn.Module):
    """(B, 1, S, S) map -> (B, F) features: two stride-2 convolutions with batch norm, then FC."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        c1, c2 = cfg.channels
        self.conv = nn.Sequential(
            nn.Conv2d(1, c1, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(c1),
            nn.ReLU(),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(c2),
            nn.ReLU(),
        )
        side = cfg.map_size // 4
        self.fc = nn.Linear(c2 * side * side, cfg.frame_features)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fc(self.conv(maps).flatten(1)))


class FrameDecoder(nn.Module):
    """(B, D) code -> (B, 1, S, S) Bernoulli logits: FC then two stride-2 transposed convolutions."""

    def __init__(self, cfg: ModelConfig, in_dim: int) -> None:
        super().__init__()
        c1, _ = cfg.channels
        self.side = cfg.map_size // 4
        self.c1 = c1
        self.fc = nn.Linear(in_dim, c1 * self.side * self.side)
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(c1, c1, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(c1),
            nn.ReLU(),
            nn.ConvTranspose2d(c1, 1, 4, stride=2, padding=1),
        )

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.fc(code)).view(-1, self.c1, self.side, self.side)
        return self.deconv(h)


def bernoulli_nll(logits: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """Per-map negative log-likelihood (sum over pixels), shape = logits.shape[:-3].

    Written out as relu(x) - x*z + log1p(exp(-|x|)), which stays finite however confident the
    decoder is, in PyTorch and in every exported graph alike. (The ONNX exporter lowers
    ``binary_cross_entropy_with_logits`` to log(sigmoid(x)) and log(1 - sigmoid(x)), which gives
    0 * -inf = NaN once the sigmoid saturates: measured on the mocap model.)
    """
    nll = F.relu(logits) - logits * maps + torch.log1p(torch.exp(-logits.abs()))
    return nll.sum(dim=(-3, -2, -1))


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) per sample."""
    return -0.5 * (1.0 + logvar - mu * mu - logvar.exp()).sum(dim=-1)


class SequenceVAE(nn.Module):
    """The LSTM-VAE's sequence part: (B, T, F) frame encodings -> (B, T, 1, S, S) logits.

    Encoder LSTM over the T encodings; its last hidden state gives mu and log sigma^2 of z (J=16).
    The decoder LSTM reads z at every step and each step's output is decoded into one map.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder_lstm = nn.LSTM(cfg.frame_features, cfg.lstm_units, batch_first=True)
        self.to_mu = nn.Linear(cfg.lstm_units, cfg.latent_dim)
        self.to_logvar = nn.Linear(cfg.lstm_units, cfg.latent_dim)
        self.decoder_lstm = nn.LSTM(cfg.latent_dim, cfg.lstm_units, batch_first=True)
        self.frame_decoder = FrameDecoder(cfg, cfg.lstm_units)

    def encode(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, (h, _) = self.encoder_lstm(features)
        h = h[-1]
        return self.to_mu(h), self.to_logvar(h)

    def decode(self, z: torch.Tensor, steps: int) -> torch.Tensor:
        out, _ = self.decoder_lstm(z.unsqueeze(1).expand(-1, steps, -1))
        b = out.shape[0]
        logits = self.frame_decoder(out.reshape(b * steps, -1))
        return logits.view(b, steps, *logits.shape[1:])

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(features)
        z = mu
        if self.training:
            z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        return self.decode(z, features.shape[1]), mu, logvar


class LSTMVAE(nn.Module):
    """Paper model: windows (B, T, S, S) of binary maps -> per-window anomaly score."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.frame_encoder = FrameEncoder(cfg)
        self.sequence = SequenceVAE(cfg)

    def encode_frames(self, maps: torch.Tensor) -> torch.Tensor:
        """(..., S, S) -> (..., F); the part the edge runs once per frame."""
        lead = maps.shape[:-2]
        feats = self.frame_encoder(maps.reshape(-1, 1, *maps.shape[-2:]))
        return feats.view(*lead, -1)

    def forward(self, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, mu, logvar = self.sequence(self.encode_frames(windows))
        return logits.squeeze(2), mu, logvar

    def loss(self, windows: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        logits, mu, logvar = self(windows)
        recon = bernoulli_nll(logits.unsqueeze(2), windows.unsqueeze(2)).sum(dim=1)
        kl = kl_to_standard_normal(mu, logvar)
        loss = (recon + kl).mean()
        return loss, {
            "recon": float(recon.detach().mean()) / windows.shape[1],
            "kl": float(kl.detach().mean()),
        }

    @torch.no_grad()
    def score(self, windows: torch.Tensor) -> torch.Tensor:
        """(B, T, S, S) -> (B,) mean Bernoulli NLL per frame of the window, z = mu."""
        logits, _, _ = self(windows)
        return bernoulli_nll(logits.unsqueeze(2), windows.unsqueeze(2)).mean(dim=1)


class FrameAutoencoder(nn.Module):
    """Per-frame baselines: AE (deterministic code) or VAE (Gaussian code), J=16."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.variational = ARCHITECTURES[cfg.model_type].variational
        self.frame_encoder = FrameEncoder(cfg)
        self.to_code = nn.Linear(cfg.frame_features, cfg.latent_dim * (2 if self.variational else 1))
        self.decoder = FrameDecoder(cfg, cfg.latent_dim)

    def forward(self, maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        code = self.to_code(self.frame_encoder(maps.unsqueeze(1)))
        if not self.variational:
            return self.decoder(code).squeeze(1), code, None
        mu, logvar = code.chunk(2, dim=-1)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
        return self.decoder(z).squeeze(1), mu, logvar

    def loss(self, maps: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        logits, mu, logvar = self(maps)
        recon = bernoulli_nll(logits.unsqueeze(1), maps.unsqueeze(1))
        parts = {"recon": float(recon.detach().mean())}
        if logvar is None:
            return recon.mean(), parts
        kl = kl_to_standard_normal(mu, logvar)
        parts["kl"] = float(kl.detach().mean())
        return (recon + kl).mean(), parts

    @torch.no_grad()
    def score(self, maps: torch.Tensor) -> torch.Tensor:
        """(B, S, S) -> (B,) Bernoulli NLL of each map."""
        logits, _, _ = self(maps)
        return bernoulli_nll(logits.unsqueeze(1), maps.unsqueeze(1))


@dataclass(frozen=True)
class Architecture:
    """A trainable map model: its torch module, whether it scores windows, whether its code is sampled."""

    module: type[nn.Module]
    windows: bool
    variational: bool


# the paper's model and its per-frame baselines (Table 3), by ``ModelConfig.model_type``
ARCHITECTURES = {
    "lstm_vae": Architecture(LSTMVAE, windows=True, variational=True),
    "ae": Architecture(FrameAutoencoder, windows=False, variational=False),
    "vae": Architecture(FrameAutoencoder, windows=False, variational=True),
}
MODEL_TYPES = tuple(ARCHITECTURES)


def build_model(cfg: ModelConfig) -> LSTMVAE | FrameAutoencoder:
    if cfg.model_type not in ARCHITECTURES:
        raise ValueError(f"unknown model type {cfg.model_type!r}; known: {', '.join(MODEL_TYPES)}")
    return ARCHITECTURES[cfg.model_type].module(cfg)
