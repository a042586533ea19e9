"""What a hostile or broken configuration costs before it is refused: CPU seconds and peak memory.

Usage: python benchmarks/config_bounds.py [--levels 5 7 9]

Each case runs ``appliance check-config`` in a fresh process (``resource`` counts its CPU time and
peak RSS): the classic YAML alias bomb with N levels of nine aliases (9^N values from N lines), a
self-referencing alias, 50,000 levels of nesting, and for scale the shipped example configuration.
The loader refuses past 10,000 values after alias expansion and 1 MiB of text; before that bound the
9-level bomb took 52 s and 1.2 GB (issue #14 item 10).
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def bomb(levels: int) -> str:
    names = [chr(ord("a") + i) for i in range(levels)]
    lines = [f"{names[0]}: &{names[0]} [{', '.join(['lol'] * 9)}]"]
    for prev, name in itertools.pairwise(names):
        lines.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]")
    return "\n".join(lines) + "\n"


def measure(path: Path) -> tuple[float, float, float, str]:
    """(wall s, CPU s, peak RSS MiB, the first line of the message) of check-config on ``path``."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance.cli", "check-config", str(path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own CPU time and peak RSS
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    cpu = usage.ru_utime + usage.ru_stime
    lines = [line for line in output.strip().splitlines() if "note:" not in line]
    message = lines[0] if lines else ""
    return wall, cpu, usage.ru_maxrss / 1024, message.replace(str(path.parent) + "/", "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--levels", type=int, nargs="+", default=[5, 7, 9])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cases: list[tuple[str, Path]] = []
        for n in args.levels:
            p = Path(tmp) / f"bomb{n}.yaml"
            p.write_text(bomb(n))
            cases.append((f"alias bomb, {n} lines (9^{n} = {9**n:,} values)", p))
        cycle = Path(tmp) / "cycle.yaml"
        cycle.write_text("a: &a [1, *a]\n")
        cases.append(("alias that contains itself", cycle))
        deep = Path(tmp) / "deep.yaml"
        deep.write_text("a: " + "[" * 50_000 + "]" * 50_000 + "\n")
        cases.append(("50,000 levels of nesting", deep))
        cases.append(("shipped example (for scale)", ROOT / "config" / "appliance.example.yaml"))
        print("| case | wall s | CPU s | peak RSS MiB | message |")
        print("|---|---:|---:|---:|---|")
        for label, path in cases:
            wall, cpu, rss, message = measure(path)
            print(f"| {label} | {wall:.2f} | {cpu:.2f} | {rss:.0f} | {message[:90]} |")


if __name__ == "__main__":
    main()
