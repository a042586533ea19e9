"""Selection robustness on URFD: 5-fold cross-validation over the 20 non-test videos (4 per fold,
the official validation fold is one of them), every candidate of run_eval.py, seed 0.

    .venv/bin/python docs/research/issue9/cv_urfd.py

The test split is not touched. Each fold: fit on the upright windows of the 16 other videos,
shrinkage + calibration on the fold's upright windows, pooled AUROC on the fold's frames.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path[:0] = [str(HERE), str(ROOT)]

import numpy as np  # noqa: E402
import torch  # noqa: E402

from appliance.features.motion import model_input  # noqa: E402
from common import frame_scores, load_features, metrics, normal_windows  # noqa: E402
from export.posture_motion import speed_rule  # noqa: E402
from model import AEConfig, fit_fusion, score, train_ae  # noqa: E402
from run_eval import CANDIDATES  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    d = load_features("urfd")
    pool = sorted(d["train"] + d["val"], key=lambda q: q["name"])
    folds = [pool[i::5] for i in range(5)]
    rows: dict[str, list[float]] = {"speed rule": []}
    for k, fold in enumerate(folds):
        train = [q for q in pool if q not in fold]
        W, V = normal_windows(train), normal_windows(fold)
        ae = train_ae(np.nan_to_num(W, nan=0.0), AEConfig(epochs=20), 0)
        rows["speed rule"].append(metrics(fold, frame_scores(fold, speed_rule), d["classes"])["auroc"])
        for label, comps, mode in CANDIDATES:
            model, _ = fit_fusion(W, V, comps, mode, 0, ae=ae)
            m = metrics(fold, frame_scores(fold, lambda w: score(model, model_input(w))), d["classes"])
            rows.setdefault(label, []).append(m["auroc"])
        print(f"fold {k}: {[q['name'] for q in fold]} ({len(V)} upright windows)", flush=True)
    print("\n| method | 5-fold CV AUROC mean ± std | folds |")
    print("|---|---|---|")
    for label, v in rows.items():
        print(f"| {label} | {np.mean(v):.3f} ± {np.std(v):.3f} | {' '.join(f'{x:.3f}' for x in v)} |")


if __name__ == "__main__":
    main()
