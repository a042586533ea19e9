"""Model bundles: the unit of deployment. Verified before anything in them is run.

A bundle is a directory (or a ``.tar`` of one) holding ``manifest.json`` and the model files it
lists, nothing else. The manifest carries an integer schema version, the model's identity, the input
contract (what the skeleton maps must look like), the score definition, the runtime variants and the
SHA-256 of every file, training and evaluation summaries, a default threshold, and a reference
window with the score each variant must give for it (the smoke test run at every load).

Refusals name what is wrong: a missing or extra file, a hash mismatch, a schema version this
appliance does not read, an input contract that differs from the expected one or from the model
files' own input shapes, an unsafe or truncated tar, a smoke-test score off its expected value.
"""

from __future__ import annotations

import base64
import hashlib
import json
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from appliance.errors import ApplianceError, ModelError
from appliance.fused import MAP_PART, MOTION_PART, FusedRuntime, MapCalibration
from appliance.motion_features import model_input, normalise_window
from appliance.runtimes import RUNTIMES, ScoringRuntime, WindowRuntime, open_runtime, open_window_runtime
from appliance.signing import SIGNATURE_FILE, SignaturePolicy, Signer
from appliance.skeleton_map import MapSpec

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
MAX_BUNDLE_BYTES = 512 * 1024 * 1024
REQUIRED_KEYS = (
    "schema_version",
    "model",
    "input_contract",
    "score",
    "variants",
    "files",
    "reference",
    "threshold",
)


class BundleError(ModelError):
    """A bundle that must not be used; the message says why."""


@dataclass(frozen=True)
class InputContract:
    """What the model expects per window of T frames: skeleton maps of ``map_spec`` (LSTM-VAE, F
    encoder features per frame), or the body features named by ``features`` (F per frame)."""

    window: int
    feature_dim: int
    map_spec: MapSpec | None
    joint_layouts: tuple[str, ...]
    features: str | None = None  # e.g. "posture-motion-v1" (appliance.motion_features)

    def to_dict(self) -> dict:
        d = {
            "window": self.window,
            "feature_dim": self.feature_dim,
            "joint_layouts": list(self.joint_layouts),
        }
        if self.features is not None:
            d["features"] = self.features
        return {**d, **(self.map_spec.to_dict() if self.map_spec is not None else {})}

    @classmethod
    def from_dict(cls, d: dict) -> InputContract:
        try:
            spec = MapSpec(**{k: d[k] for k in MapSpec.__dataclass_fields__}) if "map_size" in d else None
            features = str(d["features"]) if "features" in d else None
            if spec is None and features is None:
                raise KeyError("map_size or features")
            return cls(int(d["window"]), int(d["feature_dim"]), spec, tuple(d["joint_layouts"]), features)
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"input contract is incomplete or malformed ({exc!r})") from None

    def differences(self, other: InputContract) -> list[str]:
        a, b = self.to_dict(), other.to_dict()
        return [f"{k}: bundle has {a[k]!r}, expected {b[k]!r}" for k in a if a[k] != b[k]]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pack_maps(maps: np.ndarray) -> str:
    """Binary maps -> base64 of their packed bits (a reference window is ~4 kB in the manifest)."""
    return base64.b64encode(np.packbits(np.asarray(maps, dtype=np.uint8).reshape(-1))).decode("ascii")


def unpack_maps(text: str, shape: tuple[int, ...]) -> np.ndarray:
    bits = np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8))
    return bits[: int(np.prod(shape))].reshape(shape)


def safe_extract(tar_path: Path, dest: Path, max_bytes: int = MAX_BUNDLE_BYTES) -> Path:
    """Extract a bundle tar, refusing absolute paths, ``..``, links, devices and oversized content.

    Returns the bundle directory (the tar's single top-level folder, or ``dest`` itself).
    """
    try:
        with tarfile.open(tar_path, "r:*") as tar:
            members = tar.getmembers()
            total = 0
            for m in members:
                p = PurePosixPath(m.name)
                if p.is_absolute() or ".." in p.parts:
                    raise BundleError(f"{tar_path}: unsafe path {m.name!r} in the tar (absolute or '..')")
                if not (m.isfile() or m.isdir()):
                    raise BundleError(
                        f"{tar_path}: {m.name!r} is a link or device; bundles hold regular files only"
                    )
                total += m.size
                if total > max_bytes:
                    raise BundleError(f"{tar_path}: more than {max_bytes // 2**20} MiB of content")
            for m in members:
                target = dest / m.name
                if m.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(m)
                if src is None:
                    raise BundleError(f"{tar_path}: cannot read {m.name!r}")
                data = src.read()
                if len(data) != m.size:
                    raise BundleError(f"{tar_path}: {m.name!r} is truncated")
                target.write_bytes(data)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise BundleError(
            f"{tar_path}: not a readable bundle tar ({exc}); the file may be truncated"
        ) from None
    tops = {PurePosixPath(m.name).parts[0] for m in members if PurePosixPath(m.name).parts}
    if len(tops) == 1 and (dest / next(iter(tops))).is_dir():
        return dest / next(iter(tops))
    return dest


def safe_copy_dir(src: Path, dest: Path, max_bytes: int = MAX_BUNDLE_BYTES) -> Path:
    """Copy a bundle directory, refusing links, devices and oversized content (like :func:`safe_extract`)."""
    total = 0
    files: list[Path] = []
    for path in sorted(src.rglob("*")):
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            raise BundleError(
                f"{src}: {path.relative_to(src)} is a link or device; bundles hold regular files only"
            )
        if path.is_file():
            total += path.stat().st_size
            if total > max_bytes:
                raise BundleError(f"{src}: more than {max_bytes // 2**20} MiB of content")
            files.append(path)
    for path in files:
        target = dest / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        with path.open("rb") as fin, target.open("wb") as fout:
            while chunk := fin.read(1 << 20):
                fout.write(chunk)
    return dest


@dataclass
class Bundle:
    """A verified bundle on disk (files checked against the manifest's hashes)."""

    root: Path
    manifest: dict
    contract: InputContract
    signer: Signer | None = None  # verified signer (None: unsigned, or signature not checked)
    _tmp: tempfile.TemporaryDirectory | None = field(default=None, repr=False)
    _parts: dict[str, Bundle] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return f"{self.manifest['model']['name']} {self.manifest['model']['version']}"

    @property
    def default_threshold(self) -> float:
        return float(self.manifest["threshold"]["default"])

    def variants(self, runtime: str | None = None) -> list[str]:
        return [v for v, d in self.manifest["variants"].items() if runtime is None or d["runtime"] == runtime]

    def choose_variant(self, runtime: str, variant: str | None = None) -> str:
        """The named variant, or the preferred one for ``runtime`` (int8 before fp32)."""
        if runtime not in RUNTIMES:
            raise BundleError(f"unknown runtime {runtime!r}; known: {', '.join(RUNTIMES)}")
        available = self.variants(runtime)
        if variant is not None:
            if variant not in self.manifest["variants"]:
                raise BundleError(f"bundle has no variant {variant!r}; it has {', '.join(self.variants())}")
            runs_on = self.manifest["variants"][variant]["runtime"]
            if runs_on != runtime:
                raise BundleError(f"variant {variant!r} runs on {runs_on}, not {runtime}")
            return variant
        if not available:
            raise BundleError(
                f"bundle has no variant for runtime {runtime!r}; it has {', '.join(self.variants())}"
            )
        return sorted(available, key=lambda v: ("int8" not in v, v))[0]

    @property
    def model_type(self) -> str:
        return str(self.manifest["model"].get("type", "lstm_vae"))

    def reference_window(self) -> np.ndarray:
        """The smoke test's input: (T, S, S) maps, or (T, RAW_DIM) raw body features."""
        ref = self.manifest["reference"]
        if self.model_type == "posture_motion":
            return self.reference_features()
        return unpack_maps(
            ref["maps"],
            (self.contract.window, self.contract.map_spec.map_size, self.contract.map_spec.map_size),
        )

    def reference_features(self) -> np.ndarray:
        raw = np.frombuffer(base64.b64decode(self.manifest["reference"]["features"]), dtype="<f4")
        return raw.reshape(self.contract.window, -1).copy()

    def part(self, name: str) -> Bundle:
        """A fused bundle's part (a complete bundle in a sub-folder), verified on its own, once."""
        if name not in self._parts:
            self._parts[name] = open_bundle(self.root / self.manifest["parts"][name])
        return self._parts[name]

    def open(
        self, runtime: str = "onnxruntime", variant: str | None = None, threads: int = 1
    ) -> tuple[ScoringRuntime | WindowRuntime | FusedRuntime, str]:
        """Open a runtime on a variant, check its input shapes against the contract, run the smoke test."""
        variant = self.choose_variant(runtime, variant)
        spec = self.manifest["variants"][variant]
        if self.model_type == "fused":
            maps_rt, _ = self.part(MAP_PART).open(runtime, spec["parts"][MAP_PART], threads)
            motion_rt, _ = self.part(MOTION_PART).open(runtime, spec["parts"][MOTION_PART], threads)
            cal = self.manifest["fusion"][MAP_PART]
            rt = FusedRuntime(maps_rt, motion_rt, MapCalibration(cal["loc"], cal["scale"]))
            self.smoke_test(rt, variant)
            return rt, variant
        if self.model_type == "posture_motion":
            rt = open_window_runtime(runtime, self.root / spec["model"], threads)
        else:
            rt = open_runtime(runtime, self.root / spec["encoder"], self.root / spec["sequence"], threads)
        self._check_shapes(rt, variant)
        self.smoke_test(rt, variant)
        return rt, variant

    def _map_shape(self) -> tuple[int, int]:
        s = self.contract.map_spec.map_size
        return s, s

    def _check_shapes(self, rt: ScoringRuntime | WindowRuntime, variant: str) -> None:
        shapes = getattr(rt, "input_shapes", lambda: {})()
        t, f = self.contract.window, self.contract.feature_dim
        if self.contract.map_spec is None:
            want = {"window": [t, f]}
        else:
            s = self.contract.map_spec.map_size
            want = {"maps": [s, s], "features": [t, f]}
        for name, expected in want.items():
            got = shapes.get(name)
            if got is not None and list(got[-len(expected) :]) != expected:
                raise BundleError(
                    f"variant {variant}: model input {name!r} has shape {got}, but the input contract "
                    f"says {expected} (window={t}, map_size={s}, feature_dim={f})"
                )

    def smoke_test(self, rt: ScoringRuntime, variant: str) -> float:
        """Score the reference window; refuse the bundle if it is off the manifest's expected score."""
        try:
            if self.model_type == "fused":
                maps = unpack_maps(
                    self.manifest["reference"]["maps"], (self.contract.window, *self._map_shape())
                )
                score = rt.score_window(maps.astype(np.float32), self.reference_features())
            elif self.model_type == "posture_motion":
                window = self.reference_window().astype(np.float32)
                score = float(rt.score_windows(model_input(normalise_window(window))[None])[0])
            else:
                window = self.reference_window().astype(np.float32)
                features = rt.encode(window)
                score = float(rt.score(features[None], window[None])[0])
        except ApplianceError:
            raise
        except Exception as exc:  # a runtime failing on its own model is a bundle fault
            raise BundleError(f"variant {variant}: smoke test could not run ({exc})") from None
        spec = self.manifest["variants"][variant]
        expected, tol = float(spec["reference_score"]), float(spec["reference_tolerance"])
        if not np.isfinite(score) or abs(score - expected) > tol * max(1.0, abs(expected)):
            raise BundleError(
                f"variant {variant}: smoke test scored the reference window {score:.4f}, "
                f"expected {expected:.4f} (relative tolerance {tol})"
            )
        return score


def open_bundle(
    path: str | Path,
    expected_contract: InputContract | None = None,
    signatures: SignaturePolicy | None = None,
) -> Bundle:
    """Verify a bundle directory or tar (signature when a policy is given, schema, files, hashes,
    contract) and return it."""
    path = Path(path)
    tmp = None
    if not path.exists():
        raise BundleError(f"{path}: no such bundle")
    if path.is_file():
        tmp = tempfile.TemporaryDirectory(prefix="bundle-")
        root = safe_extract(path, Path(tmp.name))
    else:
        root = path
    if not (root / MANIFEST).is_file():
        raise BundleError(f"{path}: no {MANIFEST}; not a model bundle")
    signer = signatures.verify(root) if signatures is not None else None  # before trusting any content
    manifest = _read_manifest(root)
    _verify_files(root, manifest)
    contract = InputContract.from_dict(manifest["input_contract"])
    if expected_contract is not None and (diff := contract.differences(expected_contract)):
        raise BundleError(f"{path}: input contract mismatch: " + "; ".join(diff))
    return Bundle(root, manifest, contract, signer, tmp)


def _read_manifest(root: Path) -> dict:
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise BundleError(f"{root}: no {MANIFEST}; not a model bundle")
    try:
        manifest = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{mpath}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{mpath}: expected a JSON object")
    version = manifest.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise BundleError(f"{mpath}: schema_version must be an integer, found {version!r}")
    if version != SCHEMA_VERSION:
        raise BundleError(
            f"{mpath}: schema version {version} is not supported (this appliance reads {SCHEMA_VERSION})"
        )
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise BundleError(f"{mpath}: missing keys {', '.join(missing)}")
    return manifest


def _verify_files(root: Path, manifest: dict) -> None:
    listed: dict[str, str] = manifest["files"]
    for rel, digest in listed.items():
        p = PurePosixPath(rel)
        if p.is_absolute() or ".." in p.parts:
            raise BundleError(f"{root}: manifest lists an unsafe path {rel!r}")
        f = root / rel
        if f.is_symlink():
            raise BundleError(f"{root}: {rel} is a symbolic link; bundles hold regular files only")
        if not f.is_file():
            raise BundleError(f"{root}: missing file {rel} listed in the manifest")
        if sha256_file(f) != digest:
            raise BundleError(
                f"{root}: {rel} does not match its SHA-256 in the manifest (corrupt or altered)"
            )
    present = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink()}
    extra = sorted(present - set(listed) - {MANIFEST, SIGNATURE_FILE})
    if extra:
        raise BundleError(f"{root}: files not listed in the manifest: {', '.join(extra[:5])}")
    graphs = {"posture_motion": ("model",), "fused": ()}.get(
        manifest["model"].get("type"), ("encoder", "sequence")
    )
    for variant, spec in manifest["variants"].items():
        for key in graphs:
            if spec.get(key) not in listed:
                raise BundleError(f"{root}: variant {variant}: {key} {spec.get(key)!r} is not in the bundle")
