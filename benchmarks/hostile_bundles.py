"""What refusing a hostile bundle costs: peak memory and bytes written, per crafted case (issue #14, 6).

    python benchmarks/hostile_bundles.py [--size-mib 500] [--tree PATH]

Each case is built around the real starter bundle (tests/test_hostile_bundles.py has the builders)
and installed with ``ModelStore.install`` in a fresh child process, which reports its refusal, the
growth of its peak RSS over the install (VmHWM after resetting it through /proc/self/clear_refs) and
the bytes it wrote anywhere (``wchar`` of /proc/self/io: staging, logs, everything). Files left in
the state folder afterwards, other than the update log and its lock, are listed too.

``--tree`` runs the child against another checkout of the project (e.g. the code before the change:
``git archive HEAD | tar -x -C /tmp/before``); the bundles are built by this one.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from appliance.updates.signing import generate_key_pair  # noqa: E402
from tests.test_hostile_bundles import (  # noqa: E402
    CASES,
    MEASURE,
    files_under,
    release,
    swapped_sequence_tar,
)

MIB = 1 << 20


def _legacy_swapped(work: Path, key: Path, big: int) -> Path:
    """A signed manifest without file sizes (every bundle made before them) over a tar whose
    onnx-fp32/sequence.onnx is a `big`-byte member: only its hash, checked while streaming, refuses it."""
    return swapped_sequence_tar(release(work, key, "1.0.1"), work / "legacy-swapped.tar.gz", big)


BENCH_CASES = {
    **{name: build for name, (build, _) in CASES.items()},
    "swapped member, manifest without sizes": _legacy_swapped,
}


def config(d: Path, trusted: Path) -> Path:
    import yaml

    from appliance.service.demo import STARTER_LSTM_BUNDLE

    path = d / "appliance.yaml"
    path.write_text(yaml.safe_dump({
        "schema_version": 1, "appliance_id": "bench", "state_dir": str(d / "state"),
        "model": {"bundle": str(STARTER_LSTM_BUNDLE), "trusted_keys": str(trusted)},
        "pose": {"type": "blazepose"},
        "cameras": [{"id": "c", "source": str(ROOT / "appliance" / "assets" / "demo-dancing.mp4")}],
        "sinks": [{"type": "jsonl", "path": str(d / "events.jsonl")}],
    }))  # fmt: skip
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=500, help="size of the hostile member")
    parser.add_argument("--tree", type=Path, default=ROOT, help="project checkout the installs run in")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        key = generate_key_pair(d / "keys" / "bench")[0]
        (d / "trusted").mkdir()
        shutil.copy(d / "keys" / "bench.pub", d / "trusted")
        for name, build in BENCH_CASES.items():
            work = d / name.replace(" ", "-").replace(",", "")
            work.mkdir()
            bundle = build(work, key, args.size_mib * MIB)
            cfg = config(work, d / "trusted")
            start = time.monotonic()
            out = subprocess.run(
                [sys.executable, "-c", MEASURE, str(cfg), str(bundle)],
                cwd=args.tree, capture_output=True, text=True, timeout=900,
            )  # fmt: skip
            took = time.monotonic() - start
            if out.returncode != 0:
                last = (out.stderr.strip().splitlines() or ["?"])[-1]
                rows.append((name, bundle.stat().st_size, "CRASHED", last, 0.0, 0.0, [], took))
                continue
            r = json.loads(out.stdout.splitlines()[-1])
            left = [
                f for f in files_under(work / "state") if f not in ("models/.lock", "models/updates.jsonl")
            ]
            message = r["message"].removeprefix(f"{bundle}: ")
            rows.append((name, bundle.stat().st_size, "yes" if r["refused"] else "NO", message,
                         r["peak_rss_delta"] / MIB, r["bytes_written"] / MIB, left, took))  # fmt: skip
    print(f"hostile member: {args.size_mib} MiB; installs run in {args.tree}\n")
    print("| case | tar | refused? | lines | message | peak RSS delta MiB | MiB written | left on disk | s |")
    print("|---|---:|---|---:|---|---:|---:|---|---:|")
    for name, size, refused, message, rss, written, left, took in rows:
        lines = message.count("\n") + 1
        short = " ".join(message.split())
        short = short if len(short) <= 90 else short[:87] + "..."
        print(f"| {name} | {size / MIB:.1f} MiB | {refused} | {lines} | {short} | {rss:.1f} | {written:.1f} "
              f"| {len(left)} files | {took:.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
