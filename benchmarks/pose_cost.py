"""Per-person pose cost and accuracy, measured in one run: the landmark model (full, lite; on LiteRT
and, where converted by ``make pose-onnx``, on onnxruntime's CPU provider), and
carrying a still person's joints forward (``still_skip``).

    python benchmarks/pose_cost.py

Prints (1) the cost of one landmark run (crop, invoke, post-processing; median ms, 2 threads)
per model on ``pose_1.mp4``; (2) the median keypoint error of each model on the two reference clips;
(3) landmark runs saved and keypoint error with ``still_skip`` 2 against 0 on a person standing
still (the photo, with camera noise), the walkway and the dancer at the daemon's 10 fps; (4) the
walkway with and without a 20 ms ``frame_budget_ms``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from appliance.capture.sources import read_video_frames as frames  # noqa: E402
from appliance.errors import ApplianceError  # noqa: E402
from appliance.pose.blazepose import BlazePoseBackend  # noqa: E402
from appliance.pose.layouts import BLAZEPOSE33, COCO17  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
REF = DATA / "pose-testdata"
COCO = [BLAZEPOSE33.joints.index(j) for j in COCO17.joints]


def landmark_cost(model: str, runtime: str, clip: list[np.ndarray]) -> tuple[float, float, float]:
    """Median ms of crop, invoke and post-processing of one landmark run (tracking on, no carrying),
    as the landmark model times its own runs."""
    b = BlazePoseBackend(landmark_model=model, runtime=runtime, still_skip=0)
    m = b._models.sample().landmarks
    parts: list[tuple[float, float, float]] = []
    for frame in clip:
        runs = b.stats["landmark"]
        b.infer(frame)
        if b.stats["landmark"] == runs + 1:  # one person, one run: its timing is the last one
            parts.append(m.last_timing)
    b.close()
    return tuple(1e3 * float(np.median([p[i] for p in parts])) for i in range(3))  # type: ignore[return-value]


def errors(backend: BlazePoseBackend, clip: list[np.ndarray], ref: np.ndarray, joints) -> float:
    return float(
        np.median(
            [
                np.linalg.norm(backend.infer(f)[0].keypoints[joints, :2] - ref[i], axis=1)
                for i, f in enumerate(clip)
            ]
        )
    )


def main() -> int:
    squats, pose_1 = frames(REF / "pose_squats.mp4"), frames(REF / "pose_1.mp4")
    ref_sq = np.asarray(json.loads((REF / "pose_squats.full.json").read_text()))[..., :2]
    ref_p1 = np.array(
        [
            [[f[j]["x"], f[j]["y"]] for j in COCO17.joints]
            for f in json.loads((REF / "pose_1.json").read_text())
        ]
    )
    print(
        "| landmark model | runtime (CPU) | crop ms | invoke ms | post ms | one person, ms | "
        "squats error px | pose_1 error px |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for model, runtime in (
        ("full", "tflite"),
        ("lite", "tflite"),
        ("full", "onnxruntime"),
        ("lite", "onnxruntime"),
    ):
        try:
            crop, invoke, refine = landmark_cost(model, runtime, pose_1)
        except ApplianceError as exc:  # no ONNX conversion here (make pose-onnx)
            print(f"| {model} | {runtime} | not measured: {exc} |")
            continue
        sq = errors(
            BlazePoseBackend(landmark_model=model, runtime=runtime, still_skip=0), squats, ref_sq, slice(None)
        )
        p1 = errors(
            BlazePoseBackend(landmark_model=model, runtime=runtime, still_skip=0), pose_1, ref_p1, COCO
        )
        print(
            f"| {model} | {runtime} | {crop:.2f} | {invoke:.2f} | {refine:.2f} | "
            f"{crop + invoke + refine:.1f} | {sq:.1f} | {p1:.2f} |"
        )

    photo = cv2.imread(str(REF / "pose.jpg"))
    rng = np.random.default_rng(0)
    still = [
        np.clip(photo.astype(np.int16) + rng.normal(0, 2, photo.shape), 0, 255).astype(np.uint8)
        for _ in range(30)
    ]
    walkway = frames(DATA / "cctv-walking" / "vtest.avi", 60)
    dancer, ref_dancer = pose_1[::3], ref_p1[::3]  # 10 fps, as the daemon scores it
    print("\n| footage | still_skip | landmark runs | carried | median error px |")
    print("|---|---|---|---|---|")
    for name, clip, ref in (
        ("still person", still, None),
        ("walkway", walkway, None),
        ("dancer @ 10 fps", dancer, ref_dancer),
    ):
        for skip in (0, 2):
            b = BlazePoseBackend(still_skip=skip)
            err = errors(b, clip, ref, COCO) if ref is not None else float("nan")
            if ref is None:
                for f in clip:
                    b.infer(f)
            print(f"| {name} | {skip} | {b.stats['landmark']} | {b.stats['carried']} | {err:.2f} |")
            b.close()

    walkway = frames(DATA / "cctv-walking" / "vtest.avi", 100)
    print("\n| walkway, 100 frames | landmark runs | shed | people/frame | pose p50 ms |")
    print("|---|---|---|---|---|")
    for budget in (None, 20.0):
        b = BlazePoseBackend(frame_budget_ms=budget)
        people, times = 0, []
        for f in walkway:
            t0 = time.perf_counter()
            people += len(b.infer(f))
            times.append(time.perf_counter() - t0)
        label = "no budget" if budget is None else f"frame_budget_ms {budget:g}"
        print(
            f"| {label} | {b.stats['landmark']} | {b.stats['shed']} | {people / len(walkway):.2f} | "
            f"{1e3 * np.median(times):.1f} |"
        )
        b.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
