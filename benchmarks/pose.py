"""Pose benchmark: the blazepose backend's latency, accuracy, small-people detection rate, and the same
frames through MediaPipe's own ``solutions.pose`` for a ratio.

Usage: python benchmarks/pose.py [--data ../shared/data] [--threads 1,2] [--vtest-frames 300] [--no-mediapipe]

Prints, from one run:
- per-frame latency p50/p99 on the real clips: *full* (detector + landmark model on every frame, the
  backend reset before each) and *tracking* (the landmark model on the previous frame's ROI), per
  thread count; median keypoint error against the clips' reference keypoints;
- on the elevated CCTV clip (``cctv-walking/vtest.avi``, people ~100 px tall): the fraction of frames
  with at least one good skeleton and people per frame, for the detector alone (before), with
  tracking, and with each small-people proposal mode (after), with their cost;
- MediaPipe 0.10.21 ``solutions.pose`` (video mode, model_complexity=1) on the same frames, run in a
  separate venv ``.venv-mediapipe`` (created on demand) as a subprocess: its latency, our/its ratio,
  and the median distance between its keypoints and ours.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from appliance.capture.sources import read_video_frames  # noqa: E402
from appliance.pose.blazepose import BlazePoseBackend  # noqa: E402
from appliance.pose.layouts import BLAZEPOSE33, COCO17  # noqa: E402

MEDIAPIPE_VERSION = "0.10.21"
BODY13 = [BLAZEPOSE33.joints.index(j) for j in COCO17.joints if "eye" not in j and "ear" not in j]
COCO_FROM_BLAZE = [BLAZEPOSE33.joints.index(j) for j in COCO17.joints]

# Runs inside .venv-mediapipe: frames from an .npy, one Pose per clip (video mode), times + landmarks.
MEDIAPIPE_SCRIPT = r"""
import json, sys, time
import cv2, numpy as np
import mediapipe as mp
out = {}
for name in sys.argv[2:]:
    frames = np.load(f"{sys.argv[1]}/{name}.npy")
    h, w = frames.shape[1:3]
    times, points = [], []
    with mp.solutions.pose.Pose(static_image_mode=False, model_complexity=1, smooth_landmarks=True,
                                min_detection_confidence=0.5, min_tracking_confidence=0.5) as pose:
        for frame in frames:
            t = time.perf_counter()
            res = pose.process(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            times.append(time.perf_counter() - t)
            lm = res.pose_landmarks
            points.append(None if lm is None else [[p.x * w, p.y * h, p.visibility] for p in lm.landmark])
    out[name] = {"times": times, "points": points}
json.dump(out, open(f"{sys.argv[1]}/mediapipe.json", "w"))
"""


def read_frames(path: Path, limit: int | None = None) -> list[np.ndarray]:
    """Decoded BGR frames of a video (all, or the first ``limit``)."""
    if not path.is_file():
        sys.exit(f"error: {path} not found (pass --data)")
    return read_video_frames(path, limit)


def run_backend(
    frames: list[np.ndarray], reset_each: bool = False, **options
) -> tuple[np.ndarray, list, dict]:
    """Per-frame seconds, people per frame and model-call counts of one pass over ``frames``.

    Every person runs the landmark model on every frame (``still_skip`` 0, as MediaPipe does) and at
    most 4 are followed unless a row says otherwise: the settings this comparison was measured
    with. What carrying still people saves is measured by ``benchmarks/pose_cost.py``.
    """
    backend = BlazePoseBackend(**{"still_skip": 0, "max_people": 4, **options})
    backend.infer(frames[0])  # warm-up (first-call allocation)
    backend.reset()
    backend.stats = dict.fromkeys(backend.stats, 0)
    times, people = np.empty(len(frames)), []
    for i, frame in enumerate(frames):
        t = time.perf_counter()
        if reset_each:
            backend.reset()
        people.append(backend.infer(frame))
        times[i] = time.perf_counter() - t
    stats = dict(backend.stats)
    backend.close()
    return times, people, stats


def ms(t: np.ndarray) -> str:
    return f"p50 {np.median(t) * 1e3:6.1f} ms  p99 {np.percentile(t, 99) * 1e3:6.1f} ms"


def good(person) -> bool:
    return int((person.keypoints[BODY13, 2] >= 0.5).sum()) >= 8


def median_error(people: list, ref: np.ndarray, joints: list[int] | None = None) -> float:
    errs = [
        np.linalg.norm(p[0].keypoints[joints if joints else slice(None), :2] - r, axis=1)
        for p, r in zip(people, ref, strict=True)
        if p
    ]
    return float(np.median(errs)) if errs else float("nan")


def mediapipe_run(venv: Path, clips: dict[str, list[np.ndarray]]) -> dict | None:
    """MediaPipe solutions.pose on the same frames, in its own venv (created if missing)."""
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"creating {venv} with mediapipe=={MEDIAPIPE_VERSION} (once) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(python), "-m", "pip", "install", "--quiet", f"mediapipe=={MEDIAPIPE_VERSION}"]
        if subprocess.run(pip).returncode != 0:
            print("mediapipe could not be installed; skipping the comparison")
            return None
    with tempfile.TemporaryDirectory(prefix="pose-bench-") as tmp:
        for name, frames in clips.items():
            np.save(f"{tmp}/{name}.npy", np.stack(frames))
        result = subprocess.run(
            [str(python), "-c", MEDIAPIPE_SCRIPT, tmp, *clips], capture_output=True, text=True
        )
        if result.returncode != 0:
            print("mediapipe run failed:\n" + result.stderr[-2000:])
            return None
        return json.loads(Path(tmp, "mediapipe.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--threads", default="1,2", help="comma-separated LiteRT thread counts")
    parser.add_argument("--vtest-frames", type=int, default=300)
    parser.add_argument("--no-mediapipe", action="store_true")
    parser.add_argument("--mediapipe-venv", type=Path, default=ROOT / ".venv-mediapipe")
    args = parser.parse_args()
    thread_counts = [int(t) for t in args.threads.split(",")]
    cv2.setNumThreads(1)

    td = args.data / "pose-testdata"
    clips = {
        "squats": read_frames(td / "pose_squats.mp4"),
        "pose_1": read_frames(td / "pose_1.mp4"),
        "vtest": read_frames(args.data / "cctv-walking/vtest.avi", args.vtest_frames),
    }
    refs = {
        "squats": (np.asarray(json.loads((td / "pose_squats.full.json").read_text()))[..., :2], None),
        "pose_1": (
            np.array(
                [
                    [[f[j]["x"], f[j]["y"]] for j in COCO17.joints]
                    for f in json.loads((td / "pose_1.json").read_text())
                ]
            ),
            COCO_FROM_BLAZE,
        ),
    }
    print(
        f"frames: squats {len(clips['squats'])} (720x1280), pose_1 {len(clips['pose_1'])} (576x576), "
        f"vtest {len(clips['vtest'])} (768x576)"
    )

    print("\n== single person: latency per frame ==")
    ours_people: dict[str, list] = {}
    for threads in thread_counts:
        for name in ("squats", "pose_1"):
            full, _, _ = run_backend(clips[name], reset_each=True, threads=threads, small_people="off")
            track_off, _, st = run_backend(clips[name], threads=threads, small_people="off")
            track, people, _ = run_backend(clips[name], threads=threads)
            ref, joints = refs[name]
            print(f"{threads} thr {name:7s} full      {ms(full)}")
            print(
                f"{threads} thr {name:7s} tracking  {ms(track_off)}   "
                f"(detector on {st['detector']}/{st['frames']} frames)"
            )
            print(
                f"{threads} thr {name:7s} tracking + motion proposals {ms(track)}   "
                f"median error vs reference {median_error(people, ref, joints):.1f} px"
            )

    threads = thread_counts[-1]
    print(
        f"\n== vtest (elevated CCTV, ~100 px people), first {len(clips['vtest'])} frames, "
        f"{threads} threads =="
    )
    print(
        "mode                               frames>=1 good  people/frame  mean ms   p99 ms   "
        "landmark calls/frame"
    )
    rows = [
        ("before: detector only, no tracking", dict(reset_each=True, small_people="off", detect_interval=1)),
        ("detector + tracking", dict(small_people="off")),
        ("after: + motion proposals (default)", dict(small_people="motion")),
        ("after: + tile proposals", dict(small_people="tiles")),
        ("motion, max_people=8", dict(small_people="motion", max_people=8)),
    ]
    for label, opts in rows:
        t, people, st = run_backend(clips["vtest"], threads=threads, **opts)
        n = np.array([sum(good(p) for p in ps) for ps in people])
        print(
            f"{label:36s} {(n >= 1).mean():14.3f} {n.mean():13.2f} {t.mean() * 1e3:8.1f} "
            f"{np.percentile(t, 99) * 1e3:8.1f} {st['landmark'] / st['frames']:10.2f}"
        )

    if args.no_mediapipe:
        return
    print(
        f"\n== MediaPipe {MEDIAPIPE_VERSION} solutions.pose (video mode, model_complexity=1), same frames =="
    )
    print("(MediaPipe smooths landmarks over time, we do not; its threads are its own)")
    mp = mediapipe_run(args.mediapipe_venv, clips)
    if mp is None:
        return
    for name in ("squats", "pose_1", "vtest"):
        t = np.asarray(mp[name]["times"])
        found = [p is not None for p in mp[name]["points"]]
        line = f"{name:7s} mediapipe {ms(t)}  person on {np.mean(found):.3f} of frames"
        # ours again right after MediaPipe: the CPUs may be shared, so compare runs close in time
        ours, ours_people[name], _ = run_backend(clips[name], threads=threads)
        line += f" | ours ({threads} thr, default options) {ms(ours)}  ratio ours/mediapipe p50 "
        line += f"{np.median(ours) / np.median(t):.2f}"
        if name in refs:
            ref, joints = refs[name]
            mp_people = [[_Pts(np.asarray(p))] if p is not None else [] for p in mp[name]["points"]]
            agree = [
                np.linalg.norm(o[0].keypoints[:, :2] - m[0].keypoints[:, :2], axis=1)
                for o, m in zip(ours_people[name], mp_people, strict=True)
                if o and m
            ]
            line += f"\n        mediapipe error vs reference {median_error(mp_people, ref, joints):.1f} px; "
            line += f"median distance ours-mediapipe {np.median(agree):.1f} px"
        print(line)


class _Pts:
    """MediaPipe landmarks shaped like a Person for the error helpers."""

    def __init__(self, keypoints: np.ndarray) -> None:
        self.keypoints = keypoints


if __name__ == "__main__":
    main()
