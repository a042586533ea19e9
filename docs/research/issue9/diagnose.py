"""Diagnostics of the selected scorer on the TEST split (for the report only; nothing here is tuned).

    .venv/bin/python docs/research/issue9/diagnose.py            # 1. and 2.
    .venv/bin/python docs/research/issue9/diagnose.py --bound    # the best AUROC any scorer can reach

1. mocap: per anomalous clip, the share of its frames above the threshold that flags 5 % of the
   test walking frames, and its mean speed (body lengths / frame): which runs look like walks.
2. URFD: the falling label starts exactly 30 frames before the lying label in every video; AUROC
   when the first k falling frames of each fall are left out shows how much of the gap to 0.99 is
   the label onset (frames where the person is still upright) rather than the model.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path[:0] = [str(HERE), str(ROOT)]

import numpy as np  # noqa: E402
import torch  # noqa: E402

from appliance.models.metrics import auroc  # noqa: E402
from appliance.features.motion import SPEED, model_input, normalise_window  # noqa: E402
from appliance.features.window import sliding_windows, window_scores_to_frames  # noqa: E402
from common import frame_scores, load_features, normal_windows  # noqa: E402
from model import fit_fusion, score  # noqa: E402

COMPONENTS, MODE = ("GS", "GM", "GA"), "max"


def main() -> None:
    torch.set_num_threads(1)
    for name in ("mocap", "urfd"):
        d = load_features(name)
        model, info = fit_fusion(normal_windows(d["train"]), normal_windows(d["val"]), COMPONENTS, MODE)
        scores = frame_scores(d["test"], lambda w: score(model, model_input(w)))
        seqs = d["test"]
        if name == "mocap":
            walk = np.concatenate([s for s, q in zip(scores, seqs) if q["labels"][0] == 0])
            thr = np.nanpercentile(walk, 95)
            print(f"[mocap] threshold flagging 5% of test walk frames: {thr:.2f}")
            rows = []
            for s, q in zip(scores, seqs):
                if q["labels"][0] == 0 or not np.isfinite(s).any():
                    continue
                w = normalise_window(sliding_windows(q["feat"], 30))
                sp = float(np.nanmean(w[..., SPEED]))
                rows.append((d["classes"][int(q["labels"][0])], q["name"], float((s > thr).mean()), sp))
            for cls, nm, frac, sp in sorted(rows):
                print(f"  {cls:6s} {nm:42s} flagged {frac:5.2f}  mean speed {sp:.3f}")
            wsp = [float(np.nanmean(normalise_window(sliding_windows(q['feat'], 30))[..., SPEED]))
                   for q in seqs if q["labels"][0] == 0 and len(q["labels"]) >= 30]
            print(f"  walk clips mean speed: median {np.median(wsp):.3f}, max {np.max(wsp):.3f}")
        else:
            s_all = np.concatenate(scores)
            y_all = np.concatenate([q["labels"] for q in seqs])
            for skip in (0, 5, 10, 15, 20):
                keep = np.ones(len(y_all), bool)
                offset = 0
                for q in seqs:
                    onset = np.flatnonzero(q["labels"] == 1)
                    if len(onset):
                        keep[offset + onset[0] : offset + onset[0] + skip] = False
                    offset += len(q["labels"])
                k = keep & np.isfinite(s_all)
                fall = k & ((y_all == 0) | (y_all == 1))
                print(f"[urfd] first {skip:2d} falling frames of each fall left out: pooled AUROC "
                      f"{auroc(s_all[k], y_all[k] > 0):.3f}, falling {auroc(s_all[fall], y_all[fall] > 0):.3f}")
            gaps = [int(np.flatnonzero(q["labels"] == 2)[0] - np.flatnonzero(q["labels"] == 1)[0])
                    for q in d["train"] + d["val"] + d["test"] if (q["labels"] == 1).any() and (q["labels"] == 2).any()]
            print(f"[urfd] frames from falling onset to lying onset, all 30 videos: {sorted(set(gaps))}")


if __name__ == "__main__" and "--bound" not in sys.argv:
    main()


def protocol_bound() -> None:
    """AUROC of a perfect last-frame classifier pushed through the evaluation protocol (window score
    = 1 if the window's last frame is anomalous): the first T-1 frames of a video take the first
    window's score, so upright frames before a fall that starts inside the first window count as
    false alarms whatever the model."""
    for name in ("urfd", "mocap"):
        d = load_features(name)
        s, y = [], []
        for q in d["test"]:
            n = len(q["labels"])
            if n < 30:
                continue
            ws = (q["labels"][29:] > 0).astype(float)
            s.append(window_scores_to_frames(ws, n, 30))
            y.append(q["labels"])
        s, y = np.concatenate(s), np.concatenate(y)
        # The best any scorer can do: frames 0..T-1 of a video share one score; put every such
        # mixed group between all clean normal (0) and clean anomalous (2) frames, ordered by its
        # anomalous fraction (optimal by an exchange argument); only within-group pairs stay tied.
        best, yb = [], []
        for q in d["test"]:
            n, lab = len(q["labels"]), q["labels"] > 0
            if n < 30:
                continue
            head = lab[:30]
            g = 2.0 if head.all() else 0.0 if not head.any() else 1.0 + head.mean()
            best.append(np.r_[np.full(30, g), np.where(lab[30:], 2.0, 0.0)])
            yb.append(q["labels"])
        best, yb = np.concatenate(best), np.concatenate(yb)
        print(f"[{name}] upper bound for ANY scorer under the protocol: pooled AUROC {auroc(best, yb > 0):.3f}")
        print(f"[{name}] protocol bound (perfect last-frame classifier): pooled AUROC {auroc(s, y > 0):.3f}, "
              f"normal frames before the first full window that inherit an anomalous score: "
              f"{int(((y == 0) & (s > 0)).sum())} of {int((y == 0).sum())}")


if __name__ == "__main__" and "--bound" in sys.argv:
    protocol_bound()
