"""Edge cost of the posture-motion model, measured in one run: per new frame and track, the body
features (streamed, cached) plus the exported graph on the 30-frame window, ONNX and TFLite (where
the [tflite-export] extra is installed), fp32 and int8, one thread; and each variant's AUROC against
PyTorch on the URFD test split.

    python benchmarks/posture_motion.py [--data ../shared/data] [--frames 3000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from appliance.models.bundle import open_bundle  # noqa: E402
from appliance.models.posture_motion import PostureMotionScorer  # noqa: E402
from appliance.pose.layouts import to_body_graph  # noqa: E402
from export.bundle import buildable_variants  # noqa: E402
from export.posture_motion_bundle import bundle_dataset  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--frames", type=int, default=3000)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        out, _, _ = bundle_dataset(
            "urfd", args.data, Path(tmp) / "urfd-pm", "bench", "0", buildable_variants(), log=lambda *_: None
        )
        print(f"fit, export, parity and bundle: {time.perf_counter() - t0:.1f} s (closed-form fit, one core)")
        bundle = open_bundle(out)
        rows = {r["variant"]: r for r in bundle.manifest["evaluation"]["parity"]}
        from export.datasets import load_split

        seqs = load_split("urfd", args.data).test
        bodies = np.concatenate([to_body_graph(s.keypoints, s.layout) for s in seqs])[: args.frames]
        medians = {}
        for variant, spec in bundle.manifest["variants"].items():
            runtime, _ = bundle.open(spec["runtime"], variant, threads=1)
            scorer = PostureMotionScorer(runtime, 30)
            times = []
            for body in bodies:
                t0 = time.perf_counter()
                scorer.push({1: body})
                times.append(time.perf_counter() - t0)
            ms = np.array(times[30:]) * 1e3
            medians[variant] = float(np.median(ms))
            size = (out / bundle.manifest["variants"][variant]["model"]).stat().st_size / 1024
            print(
                f"{variant}: {np.median(ms):.3f} ms per new frame and track (features + window score), "
                f"p99 {np.percentile(ms, 99):.3f} ms, {size:.0f} KiB; budget 3 ms: "
                f"{3.0 / np.median(ms):.1f}x headroom; AUROC {rows[variant]['auroc']:.4f} "
                f"({rows[variant]['auroc_diff']:+.4f} vs PyTorch)"
            )
        if "tflite-fp32" in medians:
            print(f"ratio onnx-fp32 / tflite-fp32: {medians['onnx-fp32'] / medians['tflite-fp32']:.2f}x")


if __name__ == "__main__":
    main()
