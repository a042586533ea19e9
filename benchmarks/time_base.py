"""What a frame-rate mismatch does to a model, and what scoring at the model's own rate gives back.

The posture-motion model is learned on the mocap set (projected through the ceiling camera) at
10 fps (every third frame of the 30 fps clips), then its test split is scored three ways:

- at 10 fps, the rate it was learned at (what the daemon now does whatever the camera delivers:
  :class:`appliance.capture.frame_rate.RateGate` keeps every third frame of a 30 fps camera);
- at 30 fps, every frame fed (what the daemon did before: a window then spans 1 s instead of 3 s,
  per-frame speeds are a third);
- and, as a reference, a model learned at 30 fps scored at 30 fps.

Frame AUROC over the test frames that were scored (each window's score on its last frame; at 10 fps
every third frame), with the validation split for shrinkage and z-scores (nothing chosen on test).

    python benchmarks/time_base.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from appliance.features.motion import normalise_window, sequence_features  # noqa: E402
from appliance.features.window import sliding_windows  # noqa: E402
from appliance.models.metrics import auroc  # noqa: E402
from appliance.models.posture_motion_fit import fit  # noqa: E402
from appliance.pose.layouts import to_body_graph  # noqa: E402

WINDOW = 30


def _features(seqs, step: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(raw features, labels) of each sequence at every ``step``-th frame (the gate's choice)."""
    out = []
    for s in seqs:
        body = to_body_graph(s.keypoints[::step], s.layout)
        out.append((sequence_features(body), np.asarray(s.labels[::step])))
    return out


def _normal_windows(parts) -> np.ndarray:
    wins = []
    for raw, labels in parts:
        if len(raw) >= WINDOW:
            ok = sliding_windows(labels == 0, WINDOW).all(axis=1)
            wins.append(normalise_window(sliding_windows(raw, WINDOW)[ok]))
    return np.concatenate(wins)


def _frame_auroc(params, parts) -> tuple[float, int]:
    scores, positive = [], []
    for raw, labels in parts:
        if len(raw) < WINDOW:
            continue
        scores.append(params.score(normalise_window(sliding_windows(raw, WINDOW))))
        positive.append(labels[WINDOW - 1 :] > 0)
    s, y = np.concatenate(scores), np.concatenate(positive)
    return auroc(s, y), len(s)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    from export.datasets import mocap_split

    t0 = time.perf_counter()
    split = mocap_split(args.data)
    learned = {}
    for fps, step in ((10, 3), (30, 1)):
        train, val = _features(split.train, step), _features(split.val, step)
        learned[fps] = fit(_normal_windows(train), _normal_windows(val))
    rows = [
        ("learned at 10 fps, scored at 10 fps (now: the gate keeps every third frame)", 10, 3),
        ("learned at 10 fps, scored at 30 fps (before: every frame fed)", 10, 1),
        ("learned at 30 fps, scored at 30 fps (reference)", 30, 1),
    ]
    print("| model and feed | windows scored | frame AUROC (mocap test) |")
    print("|---|---|---|")
    for label, fps, step in rows:
        value, n = _frame_auroc(learned[fps], _features(split.test, step))
        print(f"| {label} | {n} | {value:.3f} |")
    print(f"\n({time.perf_counter() - t0:.0f} s; mocap test split, {len(split.test)} clips)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
