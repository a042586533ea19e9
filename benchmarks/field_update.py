"""Field-update costs, measured in one run: install time, hot-swap load time, the frame gap at the
switch, and memory with two models loaded.

    python benchmarks/field_update.py [--repeats 5]

A daemon runs in-process on the real dancing clip (looping, as fast as pose allows); a signed
re-release of the starter model is installed with the store and picked up by the daemon's own poll.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the package, not benchmarks/calibration.py

from appliance.config import load_config  # noqa: E402
from appliance.models.bundle import peek_manifest  # noqa: E402
from appliance.service.daemon import Appliance  # noqa: E402
from appliance.service.demo import STARTER_BUNDLE, WORKCELL_CLIP  # noqa: E402
from appliance.updates.signing import generate_key_pair  # noqa: E402
from appliance.updates.store import ModelStore  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        key = generate_key_pair(d / "keys" / "bench")[0]
        (d / "trusted-keys").mkdir()
        shutil.copy(d / "keys" / "bench.pub", d / "trusted-keys")
        releases = [d / f"r{i}.tar" for i in range(args.repeats)]
        # re-releases above the starter's own version: an update, not a refused downgrade
        major = int(str(peek_manifest(STARTER_BUNDLE)["model"]["version"]).split(".")[0]) + 1
        for i, release in enumerate(releases):  # signed in another process: no torch in this one's RSS
            sign = ["sign", str(STARTER_BUNDLE), "--key", str(key), "--out", str(release)]
            cmd = [sys.executable, "-m", "export.cli", *sign, "--model-version", f"{major}.0.{i + 1}"]
            subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
        cfg_path = d / "appliance.yaml"
        cfg_path.write_text(yaml.safe_dump({
            "schema_version": 1, "appliance_id": "bench", "state_dir": str(d / "state"),
            "model": {"bundle": str(STARTER_BUNDLE), "trusted_keys": str(d / "trusted-keys"),
                      "keep_versions": 2},
            "cameras": [{"id": "cam", "source": str(WORKCELL_CLIP), "fps": None, "loop": True}],
            "detector": {"when_uncalibrated": "bundle_default"}, "sinks": [],
        }))  # fmt: skip
        cfg = load_config(cfg_path)
        store = ModelStore(cfg.state_dir)
        app = Appliance(cfg)
        app.start()
        worker = app.workers[0]
        frames: list[tuple[float, str]] = []
        process = worker.process

        def logged(frame):
            process(frame)
            frames.append((time.perf_counter(), worker.pipeline.model.version))

        worker.process = logged
        time.sleep(3.0)
        rss_before = rss_mb()
        installs, loads, gaps = [], [], []
        try:
            for release in releases:
                t0 = time.perf_counter()
                result = store.install(release, cfg)
                installs.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                assert app.switch_model(result.version_id)
                loads.append(time.perf_counter() - t0)
                version = app.model.version
                deadline = time.monotonic() + 30
                while not any(v == version for _, v in frames[-5:]) and time.monotonic() < deadline:
                    time.sleep(0.01)
                time.sleep(1.0)
                times = [t for t, _ in frames]
                first_new = next(i for i, (_, v) in enumerate(frames) if v == version)
                gaps.append((times[first_new] - times[first_new - 1], float(np.median(np.diff(times[-60:])))))
        finally:
            app.stop()
        rss_after = rss_mb()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        ms = lambda xs: f"median {statistics.median(xs) * 1e3:.0f} ms, max {max(xs) * 1e3:.0f} ms"  # noqa: E731
        what = "install (stage, verify, compatibility, smoke test, fsync, switch)"
        print(f"{what}, {args.repeats} runs: {ms(installs)}")
        print(f"daemon load of a new version beside the running one (cameras keep running): {ms(loads)}")
        ratio = [g / m for g, m in gaps]
        print(
            f"frame interval at the switch: median {statistics.median(g for g, _ in gaps) * 1e3:.1f} ms vs "
            f"{statistics.median(m for _, m in gaps) * 1e3:.1f} ms typical "
            f"(ratio median {statistics.median(ratio):.2f}, max {max(ratio):.2f})"
        )
        print(
            f"RSS: {rss_before:.0f} MB before the updates, {rss_after:.0f} MB after {args.repeats} switches "
            f"(+{rss_after - rss_before:.0f} MB), peak {peak:.0f} MB"
        )


if __name__ == "__main__":
    main()
