"""Would one scorer call for the tracks of every camera beat a scorer per camera? Measured on the
shipped fused starter, both runtimes, real skeletons.

    python benchmarks/scoring_batch.py [--cameras 4] [--tracks 2] [--frames 150]

Real skeletons: URFD fall videos (``../shared/data/urfd-falls``), one video per track, rendered to
the starter's maps and body graphs as the daemon renders them. For each runtime it times, per model
frame, (a) ``cameras`` scorers each pushed its own ``tracks`` tracks (how the daemon scores today)
and (b) one scorer pushed all ``cameras x tracks`` tracks in one call (scoring batched across
cameras). Median ms per frame over ``frames`` frames after the first full window; ratio b / a.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from appliance.features.skeleton_map import neck_of, render_map  # noqa: E402
from appliance.keypoints.urfd import read_urfd_csv  # noqa: E402
from appliance.models.bundle import open_bundle  # noqa: E402
from appliance.pose.layouts import to_body_graph  # noqa: E402
from appliance.service.demo import STARTER_BUNDLE  # noqa: E402

URFD = ROOT.parent / "shared" / "data" / "urfd-falls" / "pose_urfd_3classes.csv"


def inputs(bundle, n_tracks: int, frames: int) -> list[dict[int, tuple[np.ndarray, np.ndarray]]]:
    """Per frame: track id -> (map, body graph) from ``n_tracks`` URFD videos (looped)."""
    spec = bundle.contract.map_spec
    seqs = [s for s in read_urfd_csv(URFD) if len(s) >= 60][:n_tracks]
    per_frame, necks = [], {}
    for i in range(frames):
        frame = {}
        for tid, seq in enumerate(seqs):
            body = to_body_graph(seq.keypoints[i % len(seq)], seq.layout)
            neck = neck_of(body, spec.min_confidence)
            necks[tid] = neck if neck is not None else necks.get(tid, np.array([320.0, 240.0]))
            frame[tid] = (render_map(body, necks[tid], (640, 480), spec), body)  # as the pipeline draws
        per_frame.append(frame)
    return per_frame


def median_ms(scorers, split, frames, window: int) -> float:
    times = []
    for i, frame in enumerate(frames):
        parts = split(frame)
        t0 = time.perf_counter()
        for scorer, part in zip(scorers, parts, strict=True):
            scorer.push(part)
        if i >= window:  # every track has a full window: each push scores
            times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cameras", type=int, default=4)
    ap.add_argument("--tracks", type=int, default=2, help="tracks per camera")
    ap.add_argument("--frames", type=int, default=150)
    args = ap.parse_args()
    bundle = open_bundle(STARTER_BUNDLE)
    window = bundle.contract.window
    n = args.cameras * args.tracks
    frames = inputs(bundle, n, args.frames + window)
    print(
        f"starter {bundle.name}; {args.cameras} cameras x {args.tracks} tracks, {args.frames} frames "
        "(median ms per model frame, one thread)\n"
    )
    print("| runtime | a scorer per camera | one scorer for all | one / per camera |")
    print("|---|---|---|---|")
    for runtime in ("tflite", "onnxruntime"):
        rt, _ = bundle.open(runtime, None, 1)

        def per_camera(frame):
            return [
                {t: frame[t] for t in range(c * args.tracks, (c + 1) * args.tracks)}
                for c in range(args.cameras)
            ]

        separate = median_ms(
            [bundle.kind.scorer(bundle, rt) for _ in range(args.cameras)], per_camera, frames, window
        )
        together = median_ms([bundle.kind.scorer(bundle, rt)], lambda f: [f], frames, window)
        print(f"| {runtime} | {separate:.2f} | {together:.2f} | {together / separate:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
