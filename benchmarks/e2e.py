"""End-to-end benchmark of the daemon on real clips: frames/s, per-stage latency, CPU, memory, start-up.

Runs the real daemon (capture -> BlazePose -> tracks -> maps -> scorer -> detector -> sinks) in this
process on real footage paced like a live camera, and prints one table:

- ``1 camera @ 30 fps``: ``pose_1.mp4`` (one person, 576x576, a real 30 fps clip) looped and paced
  at 30 fps, as the appliance's main case (one worker under a ceiling camera);
- ``N cameras``: the same clip on N cameras at once, sharing one copy of the pose models (the
  default), and again with a copy per camera (how the daemon ran before the shared engine): the
  peak RSS of the two rows is the memory the engine saves;
- ``multi-person``: the walking clip shipped for the demo (``vtest``, 768x576, 10 fps, several people);
- ``3 people each``: ``pose_1.mp4`` three times at half size in one frame, out of step, at 15 fps on
  N cameras.

Per stage: decode (OpenCV read of one frame, measured on the clip beforehand), frame age (how long
a frame waited in the newest-frame buffer), the wait for the shared pose models, pose, map + score
+ detector, publish; p50/p99 in ms. Frames lost: frames on the model's clock that were not scored.
CPU share = process CPU time / wall time / cores; peak RSS from getrusage; start = from the
process's start (imports included) to the first window score.

    python benchmarks/e2e.py [--seconds 20] [--cameras 2] [--bundle B] [--pose-threads 2]
        [--landmark full|lite] [--camera-fps 30] [--budget-ms auto|off|MS]
        [--runtime auto|tflite|onnxruntime] [--only 0 3]
"""

from __future__ import annotations

import os

# as `appliance` itself does before numpy loads (see appliance/__init__.py)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from appliance.capture.sources import read_video_frames  # noqa: E402
from appliance.config import parse_config  # noqa: E402
from appliance.service.daemon import Appliance  # noqa: E402
from appliance.service.demo import DEMO_CLIP, STARTER_BUNDLE  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
CLIP_30FPS = DATA / "pose-testdata" / "pose_1.mp4"
# --pose-threads, --landmark, --camera-fps
POSE = {
    "threads": 2,
    "landmark_model": "full",
    "camera_fps": 30.0,
    "frame_budget_ms": None,
    "runtime": "tflite",
}


def process_start() -> float:
    """When this process started, on the ``time.monotonic()`` clock (from /proc: imports included)."""
    with open("/proc/self/stat") as fh:
        ticks = int(fh.read().rsplit(")", 1)[1].split()[19])  # field 22: start time since boot
    age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    return time.monotonic() - age


def decode_ms(path: Path, frames: int = 200) -> np.ndarray:
    cap = cv2.VideoCapture(str(path))
    out = []
    for _ in range(frames):
        t0 = time.perf_counter()
        ok, _ = cap.read()
        if not ok:
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            continue
        out.append((time.perf_counter() - t0) * 1e3)
    return np.asarray(out)


def run_case(
    name: str,
    clip: Path,
    cameras: int,
    fps: float | None,
    seconds: float,
    bundle: Path,
    tmp: Path,
    copies: int,
):
    cfg = {
        "schema_version": 1,
        "appliance_id": "bench",
        "state_dir": str(tmp),
        "model": {"bundle": str(bundle), "threads": 1, "runtime": POSE["runtime"]},
        "pose": {
            "type": "blazepose",
            "model_copies": copies,
            "threads": POSE["threads"],
            "landmark_model": POSE["landmark_model"],
            "frame_budget_ms": POSE["frame_budget_ms"],
        },
        "cameras": [
            {"id": f"cam{i}", "source": str(clip), "loop": True, "realtime": True, "fps": fps}
            for i in range(cameras)
        ],
        "sinks": [{"type": "jsonl", "path": str(tmp / f"{name}.jsonl")}],
    }
    app = Appliance(parse_config(yaml.safe_dump(cfg), name))
    stop = threading.Event()
    cpu0, wall0 = time.process_time(), time.monotonic()
    app.start()
    threading.Timer(seconds, stop.set).start()
    app.wait(stop, status_interval_s=1e9)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    app.stop()
    rows = []
    began = process_start()
    for w in app.workers:
        s = w.stats
        first = (s.first_score_at - began) if s.first_score_at else float("nan")
        rows.append(
            (
                s.frames / seconds,
                np.asarray(s.pose_ms),
                np.asarray(s.pipeline_ms),
                np.asarray(s.publish_ms),
                np.asarray(s.pose_wait_ms),
                np.asarray(s.frame_age_ms),
                first,
                s.people / max(1, s.frames),
                _lost(w, s.frames / seconds, clip),
            )
        )
    return rows, cpu / wall, wall


def _lost(worker, scored_fps: float, clip: Path) -> float:
    """Share of the frames on the model's clock that were not scored: the camera delivers
    min(source fps, model fps) of them a second; fewer scored means the pipeline fell behind."""
    cap = cv2.VideoCapture(str(clip))
    source_fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    cap.release()
    expected = min(source_fps, worker.gate.fps or source_fps)
    return max(0.0, 1.0 - scored_fps / expected)


def budget_option(text: str) -> float | str | None:
    """--budget-ms as pose.frame_budget_ms: 'auto', None for 'off', or milliseconds."""
    return {"auto": "auto", "off": None}[text] if text in ("auto", "off") else float(text)


def pct(a: np.ndarray, q: float) -> float:
    return float(np.percentile(a, q)) if len(a) else float("nan")


def three_people(out: Path) -> Path:
    """``pose_1.mp4`` three times at half size in one 576x576 frame (two tiles on top, one below
    between them), each a third of the clip later than the last: three real people moving out of
    step (the 3-people case)."""
    if out.is_file():
        return out
    frames = [
        cv2.resize(frame, (frame.shape[1] // 2, frame.shape[0] // 2), interpolation=cv2.INTER_AREA)
        for frame in read_video_frames(CLIP_30FPS)
    ]
    n, (h, w) = len(frames), frames[0].shape[:2]
    spots = [(0, 0), (0, w), (h, w // 2)]  # top left, top right, bottom centre
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (2 * w, 2 * h))
    for i in range(n):
        canvas = np.zeros((2 * h, 2 * w, 3), np.uint8)
        for k, (y, x) in enumerate(spots):
            canvas[y : y + h, x : x + w] = frames[(i + k * n // 3) % n]
        writer.write(canvas)
    writer.release()
    return out


CLIP_THREE = Path(tempfile.gettempdir()) / "e2e-pose_1-three-people.mp4"
CAMERA = "--camera-fps"  # a case at the camera fps given on the command line (default 30)

# (name, clip, cameras (None: --cameras), camera fps, pose model copies (None: one per camera))
CASES = [
    ("1 camera @ 30 fps (pose_1.mp4)", CLIP_30FPS, 1, CAMERA, 1),
    ("{n} cameras @ 30 fps, one shared pose model copy", CLIP_30FPS, None, CAMERA, 1),
    ("{n} cameras @ 30 fps, a copy per camera (as before)", CLIP_30FPS, None, CAMERA, None),
    ("multi-person walkway @ 10 fps (demo clip)", DEMO_CLIP, 1, None, 1),
    ("{n} cameras, multi-person walkway @ 10 fps each", DEMO_CLIP, None, None, 1),
    ("{n} cameras @ 15 fps, 3 people each (pose_1.mp4 three times)", CLIP_THREE, None, 15.0, 1),
]


def one_case(index: int, seconds: float, cameras: int, bundle: Path) -> str:
    """Run one case in this process and return its table row (peak RSS is this process's)."""
    name, clip, n, fps, copies = CASES[index]
    if fps == CAMERA:
        fps = POSE["camera_fps"]
        name = name.replace("@ 30 fps", f"@ {fps:g} fps")
    if clip == CLIP_THREE:
        three_people(clip)
    n = n or cameras
    name = name.format(n=n)
    dec = decode_ms(clip)
    with tempfile.TemporaryDirectory() as tmp:
        rows, cores, _ = run_case(name, clip, n, fps, seconds, bundle, Path(tmp), copies or n)
    pose = np.concatenate([r[1] for r in rows])
    pipe = np.concatenate([r[2] for r in rows])
    pub = np.concatenate([r[3] for r in rows])
    wait = np.concatenate([r[4] for r in rows])
    age = np.concatenate([r[5] for r in rows])
    m = min(len(pose), len(pipe), len(pub), len(wait), len(age))
    frame = age[:m] + wait[:m] + pose[:m] + pipe[:m] + pub[:m] + pct(dec, 50)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ncpu = os.cpu_count() or 1
    return (
        f"| {name} | {np.mean([r[0] for r in rows]):.1f} | {np.mean([r[8] for r in rows]):.1%} | "
        f"{np.mean([r[7] for r in rows]):.2f} | "
        f"{pct(dec, 50):.1f} | {pct(age, 50):.1f} / {pct(age, 99):.1f} | "
        f"{pct(wait, 50):.1f} / {pct(wait, 99):.1f} | "
        f"{pct(pose, 50):.1f} / {pct(pose, 99):.1f} | "
        f"{pct(pipe, 50):.2f} / {pct(pipe, 99):.2f} | {pct(pub, 99):.2f} | {pct(frame, 99):.1f} | "
        f"{cores:.2f} ({100 * cores / ncpu:.0f}%) | {rss:.0f} MB | {max(r[6] for r in rows):.2f} s |"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--cameras", type=int, default=2)
    ap.add_argument("--bundle", type=Path, default=STARTER_BUNDLE)
    ap.add_argument("--pose-threads", type=int, default=2, help="LiteRT threads per pose model copy")
    ap.add_argument("--landmark", choices=("full", "lite"), default="full", help="landmark model")
    ap.add_argument("--only", type=int, nargs="+", help="run these cases (0-based) only")
    ap.add_argument(
        "--camera-fps", type=float, default=30.0, help="camera fps of the 30 fps pose_1.mp4 cases"
    )
    ap.add_argument(
        "--runtime", choices=("auto", "tflite", "onnxruntime"), default="auto", help="model.runtime"
    )
    ap.add_argument(
        "--budget-ms", default="off", help="pose.frame_budget_ms: off (the default), auto, or milliseconds"
    )
    ap.add_argument("--case", type=int, help=argparse.SUPPRESS)  # internal: run one case
    args = ap.parse_args()
    POSE.update(
        threads=args.pose_threads, landmark_model=args.landmark, camera_fps=args.camera_fps,
        frame_budget_ms=budget_option(args.budget_ms), runtime=args.runtime,
    )  # fmt: skip
    if args.case is not None:
        print(one_case(args.case, args.seconds, args.cameras, args.bundle))
        return 0
    print(
        f"{os.cpu_count()} cores; bundle {args.bundle.name}; pose {POSE}; {args.seconds:.0f} s per case, "
        "each case in its own process\n"
    )
    print(
        "| case | fps/camera | frames lost | people/frame | decode p50 | frame age p50 / p99 | "
        "engine wait p50 / p99 | pose p50 / p99 | map+score p50 / p99 | publish p99 | frame p99 | "
        "CPU cores (share) | peak RSS | process start->first score |"
    )
    print("|---" * 14 + "|")
    for i in args.only or range(len(CASES)):
        cmd = [
            sys.executable,
            __file__,
            "--case",
            str(i),
            "--seconds",
            str(args.seconds),
            "--cameras",
            str(args.cameras),
            "--bundle",
            str(args.bundle),
            "--pose-threads",
            str(args.pose_threads),
            "--landmark",
            args.landmark,
            "--camera-fps",
            str(args.camera_fps),
            "--budget-ms",
            args.budget_ms,
            "--runtime",
            args.runtime,
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        row = [line for line in out.stdout.splitlines() if line.startswith("| ")]
        print(row[-1] if row else f"| case {i} failed: {out.stderr.strip().splitlines()[-1:]} |", flush=True)
    print(
        "\nms figures are per frame; frame = decode p50 + age + engine wait + pose + map/score + publish "
        "(age: the time a frame waited in the newest-frame buffer); "
        "frames lost: frames on the model's clock (min(source, model fps)) that were not scored."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
