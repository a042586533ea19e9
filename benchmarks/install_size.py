"""What the edge install weighs: a fresh virtual environment per variant, ``pip install`` of this
project (no extras, then each extra asked for), and the size of its site-packages by distribution.

The project is installed from a clean copy of its files (what git tracks, no build leftovers), then
the BlazePose models are put where ``appliance install-models`` writes them (copied from this
checkout's verified files, to spare the download; counted as "pose models").

    python benchmarks/install_size.py [--extras "" onnx] [--keep DIR]

Each row is one venv: site-packages in all, what pip and setuptools take of it (every venv has
them; a device image built without pip does not), and the largest distributions (each one's files
as its RECORD lists them, its ``.libs`` folder included). Needs the package index (pip downloads).
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MB = 1e6


def site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python3*/site-packages"))


def tree_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def by_distribution(site: Path) -> dict[str, int]:
    """Bytes per installed distribution: the files its RECORD names (vendored ``*.libs`` included)."""
    sizes: dict[str, int] = {}
    for info in site.glob("*.dist-info"):
        name = info.name.split("-")[0].lower().replace("_", "-")
        record = info / "RECORD"
        rows = csv.reader(record.read_text().splitlines()) if record.is_file() else []
        sizes[name] = sum((site / r[0]).stat().st_size for r in rows if r and (site / r[0]).is_file())
    return sizes


def clean_copy(dest: Path) -> Path:
    """The project's files as git knows them (tracked or new, not ignored), without build leftovers."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


def measure(extra: str, keep: Path | None) -> tuple[str, int, int, dict[str, int]]:
    tmp = Path(tempfile.mkdtemp(prefix="install-size-"))
    venv = (keep or tmp) / f"venv-{extra or 'default'}"
    try:
        src = clean_copy(tmp / "src")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        target = f"{src}[{extra}]" if extra else str(src)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-compile", target]
        done = subprocess.run(pip, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"pip install {target} failed:\n{done.stderr[-2000:]}")
        site = site_packages(venv)
        models = site / "appliance" / "pose" / "models"
        models.mkdir(parents=True, exist_ok=True)
        for model in sorted((ROOT / "appliance" / "pose" / "models").glob("*.tflite")):
            shutil.copy2(model, models / model.name)  # as `appliance install-models` writes them
        total = tree_bytes(site)
        parts = by_distribution(site)
        parts["pose models"] = sum(p.stat().st_size for p in models.glob("*.tflite"))
        tooling = sum(parts.get(n, 0) for n in ("pip", "setuptools"))
        return extra or "(none)", total, tooling, parts
    finally:
        if keep is None:
            shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--extras", nargs="+", default=["", "onnx"], help='"" is the default install')
    ap.add_argument("--keep", type=Path, help="keep the venvs under this folder")
    ap.add_argument("--top", type=int, default=8, help="distributions listed per row")
    args = ap.parse_args()
    rows = [measure(e, args.keep) for e in args.extras]
    base = rows[0][1]
    print(
        "| extras | site-packages MB | of which pip + setuptools | without them | vs the first row ", end=""
    )
    print("| largest MB |")
    print("|---|---|---|---|---|---|")
    for extra, total, tooling, parts in rows:
        top = sorted(parts.items(), key=lambda kv: -kv[1])[: args.top]
        largest = ", ".join(f"{n} {b / MB:.0f}" for n, b in top)
        print(
            f"| {extra} | {total / MB:.0f} | {tooling / MB:.0f} | {(total - tooling) / MB:.0f} | "
            f"{total / base:.2f}x | {largest} |"
        )
    print("\nbytes of files (no .pyc: --no-compile; Python writes them at first import, about +10%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
