"""How much of the URFD gap is the protocol's start-up rule? Test AUROC of the product model and the
speed rule (1) under the protocol (the first T-1 frames of a video take the first window's score) and
(2) with those T-1 frames left out (only frames a full window ends on are scored). Diagnostic only:
nothing is chosen on it.

    .venv/bin/python docs/research/issue9/protocol_sensitivity.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]  # docs/research/issue9/this.py -> the repository
sys.path.insert(0, str(ROOT))

from appliance.models.metrics import auroc  # noqa: E402
from export.motion_eval import fit_dataset, frame_scores  # noqa: E402
from export.posture_motion import speed_rule  # noqa: E402

T = 30


def main() -> None:
    data = ROOT.parent / "shared" / "data"
    for name in ("urfd", "mocap"):
        model, _, d = fit_dataset(name, data)
        test = [s for s in d["parts"]["test"] if len(s.labels) >= T]
        print(f"{name}: {len(test)} test sequences")
        for label, fn in (("posture-motion", model.score), ("speed rule", speed_rule)):
            scores = frame_scores(test, fn)
            row = []
            for skip in (0, T - 1):
                s = np.concatenate([x[skip:] for x in scores])
                y = np.concatenate([q.labels[skip:] for q in test]) > 0
                row.append(f"{auroc(s, y):.3f} ({len(s)} frames, {int(y.sum())} anomalous)")
            print(f"  {label:15s} protocol {row[0]};  first {T - 1} frames left out {row[1]}")


if __name__ == "__main__":
    main()
