"""The posture-motion model fitted and scored with numpy alone: what the device runs to learn its site.

The model (see :mod:`export.posture_motion` for the why) is closed form: per component, the normal
windows' statistics are standardised, their covariance shrunk towards the identity by the amount
that best explains held-out normal windows, and a window scores its squared Mahalanobis distance;
each component's log score is z-scored on the held-out windows and the window scores the largest.
So fitting is a mean, a covariance, a Cholesky factor and a few quantiles: seconds on the device,
no torch and no graph export. The server (``appliance-export posture-motion``) fits through this
very code and only wraps the result in a torch module to export it, so a model learned on the
device and one learned on the server from the same windows are the same model.

Windows are (N, T, ``FEATURE_DIM``) body-normalised features (:func:`appliance.features.motion.
normalise_window`); NaN speeds count as 0, as in the exported graph. Everything the model needs of a
window is its (``stat_dim``,) statistics (:func:`window_stats`; the speed rule is their first ``S``
value), so the functions ending in ``_stats`` take those instead: a tenth of a window's memory, which
is what lets ``appliance learn`` hold an hour of footage.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from appliance.features.motion import CENTRE_VELOCITY, NUM_JOINTS, POSTURE, SPEED, VELOCITY

STAT_GROUPS = ("P", "V", "C", "S", "A")
# P posture mean + std over the window (60); V per-joint speed mean + std (30); C centre velocity
# mean, std and mean |.| (6); S mean joint speed mean + std (2); A per-joint acceleration mean (15).
COMPONENTS = {"speed": ("S",), "motion": ("V", "C", "S", "A"), "all": STAT_GROUPS}
SPEED_RULE = "speed_rule"
SHRINK_GRID = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95)
SD_FLOOR = 1e-3  # added to each statistic's spread: a constant statistic must not divide by zero
LOG_FLOOR = 1e-9  # added before the log of a component's distance
EPS = 1e-12  # inside square roots, as in the exported graph


def _mean_std(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(1)
    var = ((x - mean[:, None]) ** 2).mean(1)
    return mean, np.sqrt(var + EPS)


def window_stats(windows: np.ndarray, groups: tuple[str, ...] = STAT_GROUPS, batch: int = 4096) -> np.ndarray:
    """(N, T, FEATURE_DIM) normalised windows -> (N, D) float64 window statistics (in batches)."""
    w_all = np.asarray(windows)
    if w_all.ndim != 3:
        raise ValueError(f"windows must be (N, T, features), got shape {w_all.shape}")
    parts = [_stats(w_all[i : i + batch], groups) for i in range(0, len(w_all), batch)]
    return np.concatenate(parts) if parts else np.zeros((0, stat_dim(groups)))


def _stats(w: np.ndarray, groups: tuple[str, ...]) -> np.ndarray:
    w = np.nan_to_num(np.asarray(w, np.float32), nan=0.0).astype(np.float64)
    b, t, _ = w.shape
    p = w[..., POSTURE].reshape(b, t, NUM_JOINTS, 2)
    v = w[..., VELOCITY].reshape(b, t, NUM_JOINTS, 2)
    out: list[np.ndarray] = []
    for g in groups:
        if g == "P":
            out += [m.reshape(b, -1) for m in _mean_std(p)]
        elif g == "V":
            vn = np.sqrt((v * v).sum(-1) + EPS)
            out += [m.reshape(b, -1) for m in _mean_std(vn)]
        elif g == "C":
            c = w[..., CENTRE_VELOCITY]
            out += [c.mean(1), c.std(1), np.abs(c).mean(1)]
        elif g == "S":
            s = w[..., SPEED : SPEED + 1]
            out += [s.mean(1), s.std(1)]
        elif g == "A":
            a = np.sqrt(((v[:, 1:] - v[:, :-1]) ** 2).sum(-1) + EPS)
            out += [a.mean(1)]
        else:
            raise ValueError(f"unknown statistics group {g!r}")
    return np.concatenate(out, axis=1)


def stat_dim(groups: tuple[str, ...]) -> int:
    sizes = {"P": 4 * NUM_JOINTS, "V": 2 * NUM_JOINTS, "C": 6, "S": 2, "A": NUM_JOINTS}
    return sum(sizes[g] for g in groups)


@dataclass
class GaussianComponent:
    """Squared Mahalanobis distance of a window's statistics: ||((s - mu) / sd) @ chol||^2, with chol
    the Cholesky factor of the shrunk correlation's inverse."""

    name: str
    groups: tuple[str, ...]
    mu: np.ndarray
    sd: np.ndarray
    chol: np.ndarray
    shrink: float

    def distance(self, stats: np.ndarray) -> np.ndarray:
        y = ((stats - self.mu) / self.sd) @ self.chol
        return (y * y).sum(1)


def _standardise(fit: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mu, sd = fit.mean(0), fit.std(0) + SD_FLOOR
    return mu, sd, (fit - mu) / sd


def _shrunk(z: np.ndarray, shrink: float, cov: np.ndarray | None = None) -> np.ndarray:
    cov = np.cov(z.T) if cov is None else cov
    return (1 - shrink) * cov + shrink * np.eye(z.shape[1])


def choose_shrink(fit_stats: np.ndarray, held_stats: np.ndarray) -> float:
    """Shrinkage maximising the Gaussian log-likelihood of the held-out windows' statistics."""
    mu, sd, z = _standardise(fit_stats)
    zt = (held_stats - mu) / sd
    best, best_ll = SHRINK_GRID[0], -np.inf
    raw = np.cov(z.T)
    for shrink in SHRINK_GRID:
        cov = _shrunk(z, shrink, raw)
        _, logdet = np.linalg.slogdet(cov)
        ll = -0.5 * (((zt @ np.linalg.inv(cov)) * zt).sum(1).mean() + logdet)  # a BLAS product, not einsum
        if ll > best_ll:
            best, best_ll = shrink, ll
    return best


def fit_component(
    name: str, groups: tuple[str, ...], fit_stats: np.ndarray, shrink: float
) -> GaussianComponent:
    mu, sd, z = _standardise(fit_stats)
    chol = np.linalg.cholesky(np.linalg.inv(_shrunk(z, shrink)))
    return GaussianComponent(name, tuple(groups), mu, sd, chol, float(shrink))


@dataclass
class PostureMotionParams:
    """Everything that defines a fitted posture-motion model, as plain arrays."""

    components: list[GaussianComponent]
    loc: np.ndarray  # per component (Gaussians then the speed rule): z-score of the log distance
    scale: np.ndarray
    info: dict = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.components] + [SPEED_RULE]

    def log_components(self, windows: np.ndarray) -> np.ndarray:
        """(N, T, FEATURE_DIM) -> (N, components) log distances (before z-scoring)."""
        return self.log_components_stats(window_stats(windows))

    def log_components_stats(self, stats: np.ndarray) -> np.ndarray:
        """(N, stat_dim) window statistics -> (N, components) log distances."""
        offsets = _group_offsets(STAT_GROUPS)
        cols = []
        for c in self.components:
            idx = np.concatenate([offsets[g] for g in c.groups])
            cols.append(np.log(c.distance(stats[:, idx]) + LOG_FLOOR))
        cols.append(np.log(stats[:, offsets["S"][0]] + LOG_FLOOR))  # the mean joint speed
        return np.stack(cols, axis=1)

    def score(self, windows: np.ndarray) -> np.ndarray:
        """(N, T, FEATURE_DIM) windows -> (N,) float64 scores: the largest z-scored log distance."""
        return self.score_stats(window_stats(windows))

    def score_stats(self, stats: np.ndarray) -> np.ndarray:
        """(N, stat_dim) window statistics -> (N,) float64 scores."""
        if len(stats) == 0:
            return np.zeros(0)
        return ((self.log_components_stats(stats) - self.loc) / self.scale).max(axis=1)

    # -- as arrays (the site model's file) ---------------------------------------------------------
    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays: dict[str, np.ndarray] = {"loc": self.loc, "scale": self.scale}
        for c in self.components:
            arrays |= {f"{c.name}.mu": c.mu, f"{c.name}.sd": c.sd, f"{c.name}.chol": c.chol}
        return arrays

    def describe(self) -> dict:
        """The JSON half: component names, groups and shrinkage (the arrays hold the numbers)."""
        return {
            "components": [
                {"name": c.name, "groups": list(c.groups), "shrink": c.shrink} for c in self.components
            ],
            "speed_rule": SPEED_RULE,
            "fusion": "max of z-scored log scores",
        }

    @classmethod
    def from_arrays(cls, described: dict, arrays: dict[str, np.ndarray]) -> PostureMotionParams:
        """Inverse of :meth:`to_arrays` + :meth:`describe`; raises ValueError on anything inconsistent."""
        try:
            comps = []
            for c in described["components"]:
                name, groups = str(c["name"]), tuple(str(g) for g in c["groups"])
                if not groups or set(groups) - set(STAT_GROUPS):
                    raise ValueError(f"component {name}: unknown statistics groups {groups}")
                d = stat_dim(groups)
                mu, sd, chol = (np.asarray(arrays[f"{name}.{k}"], np.float64) for k in ("mu", "sd", "chol"))
                if mu.shape != (d,) or sd.shape != (d,) or chol.shape != (d, d):
                    raise ValueError(f"component {name}: arrays do not match its {d} statistics")
                comps.append(GaussianComponent(name, groups, mu, sd, chol, float(c["shrink"])))
            loc, scale = (np.asarray(arrays[k], np.float64) for k in ("loc", "scale"))
        except KeyError as exc:
            raise ValueError(f"missing {exc.args[0]!r}") from None
        if loc.shape != (len(comps) + 1,) or scale.shape != loc.shape:
            raise ValueError("loc and scale must hold one value per component and the speed rule")
        every = [loc, scale, *[a for c in comps for a in (c.mu, c.sd, c.chol)]]
        positive = [scale, *[c.sd for c in comps]]
        if not all(np.isfinite(a).all() for a in every) or not all((a > 0).all() for a in positive):
            raise ValueError("non-finite or non-positive parameters")
        return cls(comps, loc, scale)


def _group_offsets(groups: tuple[str, ...]) -> dict[str, np.ndarray]:
    out, start = {}, 0
    for g in groups:
        n = stat_dim((g,))
        out[g] = np.arange(start, start + n)
        start += n
    return out


def fit(fit_windows: np.ndarray, held_windows: np.ndarray) -> PostureMotionParams:
    """Gaussians on ``fit_windows``; shrinkage and z-scores on ``held_windows`` (both normal)."""
    return fit_stats(window_stats(fit_windows), window_stats(held_windows))


def fit_stats(fit_all: np.ndarray, held_all: np.ndarray) -> PostureMotionParams:
    """:func:`fit` on the windows' statistics."""
    if len(fit_all) < 2 or len(held_all) < 2:
        raise ValueError(
            f"fitting needs at least 2 windows in each part (got {len(fit_all)} and {len(held_all)})"
        )
    comps = _gaussians(fit_all, lambda i, idx: choose_shrink(fit_all[:, idx], held_all[:, idx]))
    logs = PostureMotionParams(comps, np.zeros(len(comps) + 1), np.ones(len(comps) + 1)).log_components_stats(
        held_all
    )
    return _z_scored(comps, logs, len(fit_all))


def _gaussians(stats: np.ndarray, shrink_of) -> list[GaussianComponent]:
    """One Gaussian per component on ``stats``, shrunk by ``shrink_of(component index, columns)``."""
    offsets = _group_offsets(STAT_GROUPS)
    comps = []
    for i, (name, groups) in enumerate(COMPONENTS.items()):
        idx = np.concatenate([offsets[g] for g in groups])
        comps.append(fit_component(name, groups, stats[:, idx], shrink_of(i, idx)))
    return comps


def _z_scored(
    comps: list[GaussianComponent], logs: np.ndarray, fit_windows: int, **info: str
) -> PostureMotionParams:
    """The model of ``comps``, each log distance z-scored by its mean and spread in ``logs``."""
    params = PostureMotionParams(comps, logs.mean(0), logs.std(0, ddof=1) + 1e-6)
    params.info = {
        "components": params.names,
        "fusion": "max of z-scored log scores",
        **{f"shrink_{c.name}": c.shrink for c in comps},
        "train_windows": fit_windows,
        "val_windows": len(logs),
        **info,
    }
    return params


def fit_robust(
    fit_all: np.ndarray, held_all: np.ndarray, trim: float
) -> tuple[PostureMotionParams, np.ndarray]:
    """Fit on window statistics, drop the ``trim`` share of fitting windows the first fit scores
    worst, refit. Returns the model and the mask of fitting windows kept.

    Meant for a shift of "normal" work holding a few odd moments; measured, it costs AUROC on clean
    and on dirty footage alike (README), so ``appliance learn`` runs it with ``trim`` 0."""
    first = fit_stats(fit_all, held_all)
    keep = np.ones(len(fit_all), bool)
    if trim > 0:
        scores = first.score_stats(fit_all)
        cut = np.quantile(scores, 1.0 - trim)
        keep = scores <= cut
        if keep.sum() >= 2:
            refit = fit_stats(fit_all[keep], held_all)
            refit.info["trimmed_windows"] = int((~keep).sum())
            return refit, keep
    first.info["trimmed_windows"] = 0
    return first, keep


def refit(
    stats: np.ndarray, folds: list[PostureMotionParams], held_logs: list[np.ndarray]
) -> PostureMotionParams:
    """The model fitted on all the footage after cross-fitting (as cross-validation refits on all data).

    Gaussians on ``stats`` (every fold's fitting windows' statistics) with each component's shrinkage
    averaged over the fold models; z-scores from the fold models' log distances of the windows each did
    not fit (``held_logs``, pooled), so the z-scale is one no model set on its own windows. Fitted on
    twice the windows, the refit should score new normal work no higher than the fold models did, so
    a threshold chosen on their out-of-fold scores errs towards fewer false alarms."""
    comps = _gaussians(stats, lambda i, idx: float(np.mean([f.components[i].shrink for f in folds])))
    pooled = "pooled out-of-fold log distances of the fold models"
    return _z_scored(comps, np.concatenate(held_logs), len(stats), z_scores=pooled)


class NumpyPostureMotionRuntime:
    """A fitted posture-motion model as a window runtime (the interface the scorers call)."""

    name = "numpy"
    device = "cpu"

    def __init__(self, params: PostureMotionParams) -> None:
        self.params = params

    def score_windows(self, windows: np.ndarray) -> np.ndarray:
        return self.params.score(windows).astype(np.float32)
