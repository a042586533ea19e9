"""Issue #9 follow-up: do one-sided / short-horizon components help the product's max-fusion?

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python docs/research/issue9/horizon.py [--no-test]

The product model (``export.posture_motion.fit_posture_motion``) is the max of the z-scored log
scores of three Gaussian window scorers (speed, motion, all) and the one-sided 30-frame speed rule.
A fall is scored late because every one-sided part averages over the whole 30-frame window. This
script adds (as a 5th component) or substitutes (for the 30-frame rule) short-horizon one-sided
components, each a plain torch module on the (B, 30, 78) normalised window (NaN allowed), each
z-scored like the others (log score; loc/scale = mean/std over the normal validation windows).

Protocol: as export/evaluate.py (stride-1 windows of 30, score on the last frame, first 29 frames
take the first window's score, frame AUROC). Gaussians fit on normal training windows; shrinkage and
calibration on normal validation windows. Selection, fixed before any test number is computed:

    criterion = mean(URFD val pooled AUROC, mocap val pooled AUROC)
    a candidate wins if criterion > product's + 0.003 AND URFD 5-fold CV mean >= product's.

URFD 5-fold CV: the folds of cv_urfd.py (the 20 non-test videos sorted by name, fold i =
pool[i::5]; fold 4 = the official validation split), fit on the other 16 videos, shrinkage +
calibration on the fold's normal windows, pooled AUROC on the fold's frames. cv_urfd.py builds the
folds inline in its main(), so the two lines are repeated here (and checked: fold 4 == val split).

Test split: computed once, only for the finalists (product, speed rule, the 3 best candidates by
the criterion, and the best winning candidate if it is not among them). Nothing is chosen on it.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from appliance.features.motion import (  # noqa: E402
    CENTRE_VELOCITY,
    MASK,
    NUM_JOINTS,
    POSTURE,
    SPEED,
    normalise_window,
)
from appliance.pose.layouts import NECK  # noqa: E402
from appliance.features.window import sliding_windows, window_scores_to_frames  # noqa: E402
from common import frame_scores, load_features, metrics, normal_windows  # noqa: E402
from appliance.models.posture_motion_fit import COMPONENTS  # noqa: E402
from export.posture_motion import (  # noqa: E402
    GaussianWindowScorer,
    PostureMotionModel,
    SpeedRuleScorer,
    choose_shrink,
    export_onnx,
    fit_posture_motion,
    speed_rule,
)

WINDOW = 30
MARGIN = 0.003
CY = CENTRE_VELOCITY.start + 1  # vertical centre velocity (image y points down: > 0 = moving down)


# ----------------------------------------------------------------------------------------------
# Candidate components: plain torch modules, (B, 30, 78) normalised window (NaN allowed) -> (B,) > 0.
# Signed quantities x are returned as exp(x), so the fusion's log gives x back (z-scored linearly);
# through the max-fusion only large values matter, so every component below is one-sided.
# ----------------------------------------------------------------------------------------------


class LastKSpeedRule(nn.Module):
    """Mean joint speed / body scale over the last k frames of the window (1.)."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return torch.nan_to_num(w, nan=0.0)[:, -self.k :, SPEED].mean(1)


class CentreSpeedRule(nn.Module):
    """Mean |centre velocity| / body scale over the last k frames (2.)."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        c = torch.nan_to_num(w, nan=0.0)[:, -self.k :, CENTRE_VELOCITY]
        return torch.sqrt((c * c).sum(-1) + 1e-12).mean(1)


class TopSpeedRule(nn.Module):
    """Mean of the n largest per-frame mean joint speeds of the window (n = 1: the max) (2.)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        s = torch.nan_to_num(w, nan=0.0)[..., SPEED]
        return torch.topk(s, self.n, dim=1).values.mean(1)


class PostureChange(nn.Module):
    """|| mean posture of the last k frames - mean posture of the first k frames || (body scales) (3.)."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        p = torch.nan_to_num(w, nan=0.0)[..., POSTURE]
        d = p[:, -self.k :].mean(1) - p[:, : self.k].mean(1)
        return torch.sqrt((d * d).sum(1) + 1e-12)


class CentreDown(nn.Module):
    """exp(mean downward centre velocity over the last k frames): the body's centre dropping (4.)."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        vy = torch.nan_to_num(w, nan=0.0)[:, -self.k :, CY].mean(1)
        return torch.exp(torch.clamp(vy, max=30.0))


def _height(w: torch.Tensor) -> torch.Tensor:
    """(B, T) vertical extent of the seen joints (body scales), 0 where none is seen."""
    y = w[..., POSTURE].reshape(*w.shape[:2], NUM_JOINTS, 2)[..., 1]
    seen = w[..., MASK] > 0.5
    top = torch.where(seen, y, torch.full_like(y, 1e3)).min(-1).values
    bottom = torch.where(seen, y, torch.full_like(y, -1e3)).max(-1).values
    return torch.where(seen.any(-1), bottom - top, torch.zeros_like(top))


class HeightDrop(nn.Module):
    """exp(mean height of the first k frames - mean height of the last k frames): the body shrinking (4.)."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        h = _height(torch.nan_to_num(w, nan=0.0))
        return torch.exp(torch.clamp(h[:, : self.k].mean(1) - h[:, -self.k :].mean(1), max=30.0))


def _tilt(w: torch.Tensor) -> torch.Tensor:
    """(B, T) torso tilt 1 - cos(angle of neck - centre to the image's up direction), in [0, 2]."""
    p = w[..., POSTURE].reshape(*w.shape[:2], NUM_JOINTS, 2)[:, :, NECK]
    return 1.0 + p[..., 1] / torch.sqrt((p * p).sum(-1) + 1e-6)


class TiltChange(nn.Module):
    """exp(mean torso tilt of the last k frames - that of the first k frames): the torso tipping over (4.)."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        t = _tilt(torch.nan_to_num(w, nan=0.0))
        return torch.exp(t[:, -self.k :].mean(1) - t[:, : self.k].mean(1))


class SpeedRise(nn.Module):
    """exp(mean speed of the last k frames - mean speed of the earlier frames): a sudden speed-up (4.)."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        s = torch.nan_to_num(w, nan=0.0)[..., SPEED]
        return torch.exp(torch.clamp(s[:, -self.k :].mean(1) - s[:, : -self.k].mean(1), max=30.0))


class EwmaSpeedRule(nn.Module):
    """Exponentially weighted mean joint speed, half-life h frames counted back from the last (4.)."""

    def __init__(self, half_life: float, window: int = WINDOW) -> None:
        super().__init__()
        a = 0.5 ** (np.arange(window)[::-1] / half_life)
        self.register_buffer("weights", torch.tensor(a / a.sum(), dtype=torch.float32))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return (torch.nan_to_num(w, nan=0.0)[..., SPEED] * self.weights).sum(1)


NEW_COMPONENTS: dict[str, callable] = {
    **{f"speed_last{k}": (lambda k=k: LastKSpeedRule(k)) for k in (5, 10, 15)},
    **{f"centre_last{k}": (lambda k=k: CentreSpeedRule(k)) for k in (5, 10, 15, 30)},
    "speed_max": lambda: TopSpeedRule(1),
    "speed_top3": lambda: TopSpeedRule(3),
    **{f"posture_change{k}": (lambda k=k: PostureChange(k)) for k in (5, 10, 15)},
    **{f"centre_down{k}": (lambda k=k: CentreDown(k)) for k in (5, 10, 15)},
    **{f"height_drop{k}": (lambda k=k: HeightDrop(k)) for k in (5, 10, 15)},
    **{f"tilt_change{k}": (lambda k=k: TiltChange(k)) for k in (5, 10, 15)},
    **{f"speed_rise{k}": (lambda k=k: SpeedRise(k)) for k in (5, 10)},
    **{f"speed_ewma{h}": (lambda h=h: EwmaSpeedRule(h)) for h in (5, 10)},
}
GAUSS = tuple(COMPONENTS)  # ("speed", "motion", "all"): never dropped
PRODUCT = (*GAUSS, "rule30")

# Candidates (fixed a priori): every new component as a 5th component and as the 30-frame rule's
# replacement; a few combinations at k = 10 (the middle horizon, not picked from results).
CANDIDATES: dict[str, tuple[str, ...]] = {"product (3 Gauss + rule30)": PRODUCT}
for _n in NEW_COMPONENTS:
    CANDIDATES[f"+ {_n}"] = (*PRODUCT, _n)
    CANDIDATES[f"rule30 -> {_n}"] = (*GAUSS, _n)
for _combo in (
    ("speed_last10", "centre_last10"),
    ("speed_last10", "posture_change10"),
    ("speed_last10", "speed_top3"),
    ("speed_last10", "centre_down10", "height_drop10", "tilt_change10"),
    ("speed_last10", "centre_last10", "speed_top3", "posture_change10"),
):
    CANDIDATES["+ " + " + ".join(_combo)] = (*PRODUCT, *_combo)


# ----------------------------------------------------------------------------------------------
# Fitting and scoring
# ----------------------------------------------------------------------------------------------


def fit_components(train: np.ndarray, val: np.ndarray) -> tuple[dict[str, nn.Module], dict[str, float]]:
    """The product's Gaussians (same shrinkage choice) + rule30 + every new component, each with its
    log-score calibration (mean, std over the normal validation windows), as fit_posture_motion does."""
    train = np.nan_to_num(np.asarray(train, np.float32), nan=0.0)
    val = np.nan_to_num(np.asarray(val, np.float32), nan=0.0)
    scorers: dict[str, nn.Module] = {}
    shrinks = {}
    for name, groups in COMPONENTS.items():
        shrinks[name] = choose_shrink(train, val, groups)
        scorers[name] = GaussianWindowScorer.fit(train, shrinks[name], groups)
    scorers["rule30"] = SpeedRuleScorer()
    for name, make in NEW_COMPONENTS.items():
        scorers[name] = make().eval()
    calib = {}
    with torch.no_grad():
        v = torch.from_numpy(val)
        for name, s in scorers.items():
            logs = torch.log(s(v) + 1e-9)
            calib[name] = (logs.mean(), logs.std() + 1e-6)  # as fit_posture_motion (unbiased std)
    return scorers, {"calib": calib, "shrink": shrinks}


@torch.no_grad()
def component_z(scorers: dict[str, nn.Module], calib: dict, seqs: list[dict]) -> dict[str, list[np.ndarray]]:
    """Per component, per sequence: float32 z-scored log window scores (empty for short sequences)."""
    out: dict[str, list[np.ndarray]] = {n: [] for n in scorers}
    for q in seqs:
        w = sliding_windows(q["feat"], WINDOW)
        x = torch.from_numpy(np.asarray(normalise_window(w), np.float32)) if len(w) else None
        for n, s in scorers.items():
            if x is None:
                out[n].append(np.zeros(0, np.float32))
                continue
            loc, scale = calib[n]
            out[n].append(((torch.log(s(x) + 1e-9) - loc) / scale).numpy())
    return out


def candidate_metrics(z: dict, comps: tuple[str, ...], seqs: list[dict], classes: dict) -> dict:
    frames = []
    for i, q in enumerate(seqs):
        ws = np.max(np.stack([z[c][i] for c in comps]), axis=0) if len(z[comps[0]][i]) else np.zeros(0)
        frames.append(window_scores_to_frames(np.asarray(ws, np.float64), len(q["labels"]), WINDOW))
    return metrics(seqs, frames, classes)


def rule_metrics(seqs: list[dict], classes: dict) -> dict:
    return metrics(seqs, frame_scores(seqs, speed_rule), classes)


def check_product(d: dict, scorers: dict, calib: dict, z: dict) -> float:
    """Max |difference| between this script's product scores and export's fit_posture_motion model."""
    model, _ = fit_posture_motion(normal_windows(d["train"]), normal_windows(d["val"]))
    diff = 0.0
    for i, q in enumerate(d["val"]):
        if not len(z["rule30"][i]):
            continue
        ref = model.score(normalise_window(sliding_windows(q["feat"], WINDOW)))
        mine = np.max(np.stack([z[c][i] for c in PRODUCT]), axis=0).astype(np.float64)
        diff = max(diff, float(np.abs(ref - mine).max()))
    return diff


def check_onnx(scorers: dict, calib: dict, windows: np.ndarray) -> str:
    """Export one model holding every component (max-fusion) to ONNX and compare with torch."""
    try:
        import onnxruntime as ort
    except ImportError:
        return "onnxruntime not installed: export not checked"
    names = list(scorers)
    model = PostureMotionModel(names, [scorers[n] for n in names])
    with torch.no_grad():
        model.loc.copy_(torch.stack([calib[n][0] for n in names]))
        model.scale.copy_(torch.stack([calib[n][1] for n in names]))
    model.eval()
    x = np.nan_to_num(windows[:512], nan=0.0).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "all.onnx"
        export_onnx(model, path, WINDOW)  # the product's export (opset 17)
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = sess.run(None, {"window": x})[0]
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    return f"ONNX (opset 17) of all {len(names)} components fused: max |onnx - torch| = {np.abs(got - ref).max():.2e}"


def cv_folds(d: dict) -> list[list[dict]]:
    pool = sorted(d["train"] + d["val"], key=lambda q: q["name"])  # as cv_urfd.py
    folds = [pool[i::5] for i in range(5)]
    assert sorted(q["name"] for q in folds[4]) == sorted(q["name"] for q in d["val"]), "fold 4 != val split"
    return folds


# ----------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-test", action="store_true", help="validation + CV only")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    lines: list[str] = []

    def log(s: str = "") -> None:
        print(s, flush=True)
        lines.append(s)

    src = (ROOT / "export" / "posture_motion.py").read_bytes()
    log("# Issue #9 follow-up: short-horizon one-sided components (horizon.py)")
    log(f"export/posture_motion.py sha256[:12] = {hashlib.sha256(src).hexdigest()[:12]}; "
        f"{len(CANDIDATES)} candidates, {len(NEW_COMPONENTS)} new components")  # fmt: skip

    data = {n: load_features(n) for n in ("urfd", "mocap")}
    fits, val_m, rule_val = {}, {}, {}
    for name, d in data.items():
        W, V = normal_windows(d["train"]), normal_windows(d["val"])
        scorers, info = fit_components(W, V)
        z = component_z(scorers, info["calib"], d["val"])
        fits[name] = (scorers, info)
        diff = check_product(d, scorers, info["calib"], z)
        log(f"[{name}] train/val normal windows {len(W)}/{len(V)}; shrink {info['shrink']}; "
            f"max |score - export.fit_posture_motion score| on val = {diff:.1e}")  # fmt: skip
        val_m[name] = {c: candidate_metrics(z, comps, d["val"], d["classes"]) for c, comps in CANDIDATES.items()}
        rule_val[name] = rule_metrics(d["val"], d["classes"])
        if name == "mocap":
            log(check_onnx(scorers, info["calib"], V))

    # URFD 5-fold CV
    d = data["urfd"]
    cv: dict[str, list[float]] = {c: [] for c in CANDIDATES}
    cv_rule: list[float] = []
    for k, fold in enumerate(cv_folds(d)):
        names = {q["name"] for q in fold}
        train = [q for q in d["train"] + d["val"] if q["name"] not in names]
        scorers, info = fit_components(normal_windows(train), normal_windows(fold))
        z = component_z(scorers, info["calib"], fold)
        for c, comps in CANDIDATES.items():
            cv[c].append(candidate_metrics(z, comps, fold, d["classes"])["auroc"])
        cv_rule.append(rule_metrics(fold, d["classes"])["auroc"])
    log(f"validation + CV done in {time.perf_counter() - t0:.0f} s")

    crit = {c: 0.5 * (val_m["urfd"][c]["auroc"] + val_m["mocap"][c]["auroc"]) for c in CANDIDATES}
    base = "product (3 Gauss + rule30)"
    wins = [
        c for c in CANDIDATES
        if c != base and crit[c] > crit[base] + MARGIN and np.mean(cv[c]) >= np.mean(cv[base])
    ]  # fmt: skip
    order = sorted(CANDIDATES, key=lambda c: -crit[c])

    log()
    log("## Validation (pooled frame AUROC) and URFD 5-fold CV; sorted by the criterion")
    log()
    log(f"Rule: wins if criterion > product + {MARGIN} AND URFD CV mean >= product's "
        f"(product: criterion {crit[base]:.4f}, CV mean {np.mean(cv[base]):.4f}).")  # fmt: skip
    log()
    log("| candidate | URFD val | mocap val | criterion | URFD CV mean ± std | CV folds 0-4 | wins |")
    log("|---|---|---|---|---|---|---|")
    rule_crit = 0.5 * (rule_val["urfd"]["auroc"] + rule_val["mocap"]["auroc"])
    log(f"| speed rule (baseline, numpy) | {rule_val['urfd']['auroc']:.3f} | {rule_val['mocap']['auroc']:.3f} | "
        f"{rule_crit:.4f} | {np.mean(cv_rule):.3f} ± {np.std(cv_rule):.3f} | "
        f"{' '.join(f'{x:.3f}' for x in cv_rule)} | |")  # fmt: skip
    for c in order:
        mark = "**yes**" if c in wins else ""
        label = f"**{c}**" if c == base else c
        log(f"| {label} | {val_m['urfd'][c]['auroc']:.3f} | {val_m['mocap'][c]['auroc']:.3f} | {crit[c]:.4f} | "
            f"{np.mean(cv[c]):.3f} ± {np.std(cv[c]):.3f} | {' '.join(f'{x:.3f}' for x in cv[c])} | {mark} |")  # fmt: skip
    log()
    log("Per-class validation AUROC of the 10 best by the criterion (URFD falling/lying; mocap run/dash):")
    log()
    log("| candidate | URFD falling | URFD lying | mocap run | mocap dash |")
    log("|---|---|---|---|---|")
    for c in [base, *[o for o in order[:10] if o != base]]:
        u, m = val_m["urfd"][c]["per_class"], val_m["mocap"][c]["per_class"]
        log(f"| {c} | {u['falling']:.3f} | {u['lying']:.3f} | {m['run']:.3f} | {m['dash']:.3f} |")
    best_win = max(wins, key=lambda c: crit[c]) if wins else None
    log()
    log(f"Winners by the rule: {wins if wins else 'none'}; best winner: {best_win}")

    if args.no_test:
        log("(--no-test: test split not computed)")
        return

    finalists = [base]
    for c in order:
        if c != base and len(finalists) < 4:
            finalists.append(c)
    if best_win and best_win not in finalists:
        finalists.append(best_win)
    test = {n: {} for n in data}
    for name, dd in data.items():
        scorers, info = fits[name]
        z = component_z(scorers, info["calib"], dd["test"])
        for c in finalists:
            test[name][c] = candidate_metrics(z, CANDIDATES[c], dd["test"], dd["classes"])
        test[name]["speed rule (baseline, numpy)"] = rule_metrics(dd["test"], dd["classes"])
    log()
    log("## Test split, finalists only (record; nothing chosen on it)")
    log()
    log("| candidate | URFD pooled | falling | lying | mocap pooled | run | dash | kick | punch | slash |")
    log("|---|---|---|---|---|---|---|---|---|---|")
    for c in ["speed rule (baseline, numpy)", *finalists]:
        u, m = test["urfd"][c], test["mocap"][c]
        up, mp = u["per_class"], m["per_class"]
        log(f"| {c} | {u['auroc']:.3f} | {up['falling']:.3f} | {up['lying']:.3f} | {m['auroc']:.3f} | "
            + " | ".join(f"{mp[t]:.3f}" for t in ("run", "dash", "kick", "punch", "slash")) + " |")  # fmt: skip
    log()
    log(f"total {time.perf_counter() - t0:.0f} s")
    out = HERE / "results" / "horizon.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
