"""Where the daemon's memory goes: ``/proc/PID/smaps_rollup`` and ``/proc/PID/smaps`` of a running
``appliance run``, by camera count and scoring runtime, split by component.

Each case starts the real daemon (``python -m appliance.cli run``) on ``pose_1.mp4`` (one person,
30 fps, looped and paced like a live camera) on 1, 2 and 4 cameras sharing one pose engine, lets it
score for ``--seconds``, then reads its memory while it runs and stops it with SIGTERM:

- RSS, PSS and anonymous memory from ``smaps_rollup`` (one read of the kernel's totals);
- RSS by component from ``smaps`` (each mapping's file: OpenCV, numpy, onnxruntime, LiteRT, Python,
  the model files LiteRT maps, other libraries; ``anonymous`` is the heap: XNNPACK-packed weights,
  frames, numpy arrays, Python objects);
- the stages before the first frame, each in its own process: Python alone, the daemon's imports,
  then the pose engine (LiteRT and its interpreters), then the scorer sessions.

    python benchmarks/memory.py [--seconds 15] [--cameras 1 2 4] [--runtime tflite onnxruntime]
        [--glibc-arenas 16]

The last rows repeat the first runtime with glibc's own number of malloc arenas (MALLOC_ARENA_MAX,
8 per core), against the daemon's cap of 2.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CLIP = DATA / "pose-testdata" / "pose_1.mp4"
STARTER = ROOT / "appliance" / "assets" / "starter-walking-fused.tar"
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}

# mapping file name -> component (first match wins); anything else with a path is "other libraries"
COMPONENTS = (
    ("OpenCV", ("cv2", "opencv")),
    ("onnxruntime", ("onnxruntime",)),
    ("LiteRT", ("ai_edge_litert", "tflite_runtime")),
    ("model files", (".tflite", ".onnx")),
    ("numpy", ("numpy",)),
    ("Python", ("libpython", "/python3", "/bin/python")),
)
ORDER = ["anonymous", *(c for c, _ in COMPONENTS), "other libraries"]


def rollup(pid: int) -> dict[str, float]:
    """MB of each field of ``smaps_rollup`` (Rss, Pss, Anonymous, ...)."""
    out = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        out[key] = int(value.split()[0]) / 1024
    return out


def by_component(pid: int) -> dict[str, float]:
    """MB of resident memory per component, summed over ``smaps`` mappings."""
    sizes = dict.fromkeys(ORDER, 0.0)
    name = ""
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and ":" not in head[0]:  # a mapping's header line
            name = head[5] if len(head) > 5 else ""
            continue
        if line.startswith("Rss:"):
            kb = int(head[1])
            if not name or name.startswith("["):  # [heap], [stack], anonymous mappings
                sizes["anonymous"] += kb / 1024
                continue
            for component, needles in COMPONENTS:
                if any(n in name for n in needles):
                    sizes[component] += kb / 1024
                    break
            else:
                sizes["other libraries"] += kb / 1024
    return sizes


def daemon_config(tmp: Path, cameras: int, runtime: str) -> Path:
    cfg = {
        "schema_version": 1,
        "appliance_id": "memory",
        "state_dir": str(tmp / "state"),
        "model": {"bundle": str(STARTER), "runtime": runtime, "threads": 1},
        "pose": {"type": "blazepose"},
        "cameras": [
            {"id": f"cam{i}", "source": str(CLIP), "loop": True, "realtime": True, "fps": 30.0}
            for i in range(cameras)
        ],
        "sinks": [{"type": "jsonl", "path": str(tmp / "events.jsonl")}],
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def running_daemon(
    cameras: int, runtime: str, seconds: float, arenas: str | None = None
) -> tuple[dict, dict]:
    """The daemon's memory after ``seconds``; ``arenas`` sets MALLOC_ARENA_MAX (None: the daemon's own
    cap of 2, appliance/service/malloc_arenas.py)."""
    env = {**ENV, "MALLOC_ARENA_MAX": arenas} if arenas else ENV
    with tempfile.TemporaryDirectory() as tmp:
        config = daemon_config(Path(tmp), cameras, runtime)
        cmd = [sys.executable, "-m", "appliance.cli", "run", "--config", str(config)]
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            time.sleep(seconds)
            if proc.poll() is not None:
                raise SystemExit(f"the daemon stopped: {proc.stderr.read().decode()[-2000:]}")
            return rollup(proc.pid), by_component(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


STAGES = """
import json, sys
from pathlib import Path
sys.path.insert(0, {root!r})
sys.argv = ["stages"]
def rss():
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        if line.startswith("Rss:"):
            return int(line.split()[1]) / 1024
out = [("Python alone", rss())]
import appliance.service.daemon  # noqa: the daemon's imports
from appliance.config import BlazePoseConfig
from appliance.models.bundle import open_bundle
from appliance.pose.registry import create_engine
out.append(("+ the daemon's imports (cv2, numpy, pydantic, yaml)", rss()))
engine = create_engine(BlazePoseConfig())
out.append(("+ the pose engine (LiteRT, detector + full landmark interpreters)", rss()))
bundle = open_bundle(Path({bundle!r}))
runtime = bundle.open({runtime!r})
out.append(("+ the scorer sessions ({runtime}, starter fused bundle)", rss()))
print(json.dumps(out))
"""


def stages(runtime: str) -> list[tuple[str, float]]:
    import json

    code = STAGES.format(root=str(ROOT), bundle=str(STARTER), runtime=runtime)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"stage run failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=15.0, help="scoring time before the reading")
    ap.add_argument("--cameras", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--runtime", nargs="+", default=["tflite", "onnxruntime"], help="scorer runtimes")
    ap.add_argument(
        "--glibc-arenas", default=str(8 * (os.cpu_count() or 1)),
        help="MALLOC_ARENA_MAX of the comparison rows (glibc's default: 8 per core); '' for none",
    )  # fmt: skip
    args = ap.parse_args()
    if not CLIP.is_file():
        raise SystemExit(f"{CLIP} not found (the real data in ../shared/data)")
    print(f"{os.cpu_count()} cores; the daemon on {CLIP.name} (30 fps) per camera; {args.seconds:g} s each\n")
    for runtime in args.runtime:
        print(f"Stages before the first frame, scorer runtime {runtime} (RSS MB, each in one process):\n")
        before = 0.0
        for label, mb in stages(runtime):
            print(f"- {label}: {mb:.0f} (+{mb - before:.0f})")
            before = mb
        print()
    print("| scorer runtime | malloc arenas | cameras | RSS MB | PSS MB | " + " | ".join(ORDER) + " |")
    print("|---" * (5 + len(ORDER)) + "|")
    rows = [(r, None) for r in args.runtime] + (
        [(args.runtime[0], args.glibc_arenas)] if args.glibc_arenas else []
    )
    for runtime, arenas in rows:
        for n in args.cameras:
            roll, parts = running_daemon(n, runtime, args.seconds, arenas)
            print(
                f"| {runtime} | {arenas or '2 (the daemon caps them)'} | {n} | {roll['Rss']:.0f} | "
                f"{roll['Pss']:.0f} | " + " | ".join(f"{parts[c]:.0f}" for c in ORDER) + " |",
                flush=True,
            )
    print("\ncomponents: resident memory of the mappings of each library's files; anonymous: heap and "
          "anonymous mappings (packed model weights, frames, arrays, Python objects)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
