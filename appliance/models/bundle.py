"""Model bundles: the unit of deployment. Verified before anything in them is run.

A bundle is a directory (or a ``.tar`` of one) holding ``manifest.json`` and the model files it
lists, nothing else. The manifest carries an integer schema version, the model's identity, the input
contract (what the skeleton maps must look like), the score definition, the runtime variants and the
SHA-256 of every file, training and evaluation summaries, a default threshold, and a reference
window with the score each variant must give for it (the smoke test run at every load).

Refusals name what is wrong: a missing or extra file, a hash mismatch, a schema version this
appliance does not read, an input contract that differs from the expected one or from the model
files' own input shapes, an unsafe or truncated tar, a smoke-test score off its expected value.

Reading the files safely (tar archives, hashes, sizes) is :mod:`appliance.models.bundle_files`.
"""

from __future__ import annotations

import base64
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from appliance.accelerators import CPU, Accelerator
from appliance.errors import ApplianceError
from appliance.features.skeleton_map import MapSpec
from appliance.models.bundle_files import (
    FILE_SIZES,
    MANIFEST,
    SCHEMA_VERSION,
    BundleError,
    extract_verified,
    peek_manifest,
    read_manifest,
    safe_copy_dir,
    safe_extract,
    sha256_file,
    verify_files,
)
from appliance.models.kind import ModelKind
from appliance.models.registry import kind_of, type_of
from appliance.models.runtimes import RUNTIMES, ScoringRuntime, WindowRuntime, runtime_installed
from appliance.updates.signing import SignaturePolicy, Signer

__all__ = [  # the names other modules use from here (some live in bundle_files)
    "FILE_SIZES", "MANIFEST", "SCHEMA_VERSION", "Bundle", "BundleError", "InputContract", "open_bundle",
    "pack_maps", "peek_manifest", "safe_copy_dir", "safe_extract", "sha256_file", "unpack_maps",
]  # fmt: skip


@dataclass(frozen=True)
class InputContract:
    """What the model expects per window of T frames: skeleton maps of ``map_spec`` (LSTM-VAE, F
    encoder features per frame), or the body features named by ``features`` (F per frame)."""

    window: int
    feature_dim: int
    map_spec: MapSpec | None
    joint_layouts: tuple[str, ...]
    features: str | None = None  # e.g. "posture-motion-v1" (appliance.features.motion)
    # the frame rate the model was learned at (its time base: a window is T frames at this rate);
    # None for bundles that do not record it (every frame the camera delivers is scored)
    fps: float | None = None

    def to_dict(self) -> dict:
        d = {
            "window": self.window,
            "feature_dim": self.feature_dim,
            "joint_layouts": list(self.joint_layouts),
        }
        if self.features is not None:
            d["features"] = self.features
        if self.fps is not None:
            d["fps"] = self.fps
        return {**d, **(self.map_spec.to_dict() if self.map_spec is not None else {})}

    @classmethod
    def from_dict(cls, d: dict) -> InputContract:
        try:
            spec = MapSpec(**{k: d[k] for k in MapSpec.__dataclass_fields__}) if "map_size" in d else None
            features = str(d["features"]) if "features" in d else None
            if spec is None and features is None:
                raise KeyError("map_size or features")
            fps = float(d["fps"]) if d.get("fps") is not None else None
            if fps is not None and not 1.0 <= fps <= 120.0:
                raise ValueError(f"fps {fps} outside 1-120")
            window, dim, layouts = int(d["window"]), int(d["feature_dim"]), tuple(d["joint_layouts"])
            return cls(window, dim, spec, layouts, features, fps)
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"input contract is incomplete or malformed ({exc!r})") from None

    def differences(self, other: InputContract) -> list[str]:
        a, b = self.to_dict(), other.to_dict()
        return [f"{k}: bundle has {a[k]!r}, expected {b[k]!r}" for k in a if a[k] != b[k]]


def pack_maps(maps: np.ndarray) -> str:
    """Binary maps -> base64 of their packed bits (a reference window is ~4 kB in the manifest)."""
    return base64.b64encode(np.packbits(np.asarray(maps, dtype=np.uint8).reshape(-1))).decode("ascii")


def unpack_maps(text: str, shape: tuple[int, ...]) -> np.ndarray:
    bits = np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8))
    return bits[: int(np.prod(shape))].reshape(shape)


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

    def resolve_runtime(self, runtime: str, variant: str | None = None, accelerator: str = "cpu") -> str:
        """``runtime``, or for ``auto`` the one to use: a named variant's own; for an accelerator the
        runtime it runs (cuda, tensorrt: onnxruntime; litert-gpu: tflite); otherwise the first of the
        model kind's ``runtime_preference`` (the faster first, as measured) that is installed here and
        that the bundle has a variant for."""
        if runtime != "auto":
            return runtime
        if variant is not None and variant in self.manifest["variants"]:
            return str(self.manifest["variants"][variant]["runtime"])
        preference = {"cuda": ("onnxruntime",), "tensorrt": ("onnxruntime",), "litert-gpu": ("tflite",)}.get(
            accelerator, self.kind.runtime_preference
        )
        for candidate in preference:
            if self.variants(candidate) and runtime_installed(candidate):
                return candidate
        installed = [r for r in RUNTIMES if runtime_installed(r)]
        raise BundleError(
            f"bundle has no variant this device can run: it has {', '.join(self.variants())}; "
            f"installed runtimes: {', '.join(installed) or 'none'}"
        )

    def choose_variant(self, runtime: str, variant: str | None = None) -> str:
        """The named variant, or the preferred one for ``runtime`` (int8 before fp32)."""
        runtime = self.resolve_runtime(runtime, variant)
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
        return type_of(self.manifest)

    @property
    def kind(self) -> ModelKind:
        """What this bundle's kind of model needs and does (:mod:`appliance.models.registry`)."""
        return kind_of(self.manifest)

    def reference_maps(self) -> np.ndarray:
        """The smoke test's (T, S, S) skeleton maps (kinds that read maps)."""
        s = self.contract.map_spec.map_size
        return unpack_maps(self.manifest["reference"]["maps"], (self.contract.window, s, s))

    def reference_features(self) -> np.ndarray:
        """The smoke test's (T, RAW_DIM) raw body features (kinds that read body keypoints)."""
        raw = np.frombuffer(base64.b64decode(self.manifest["reference"]["features"]), dtype="<f4")
        return raw.reshape(self.contract.window, -1).copy()

    def part(self, name: str) -> Bundle:
        """A fused bundle's part (a complete bundle in a sub-folder), verified on its own, once."""
        if name not in self._parts:
            self._parts[name] = open_bundle(self.root / self.manifest["parts"][name])
        return self._parts[name]

    def open(
        self,
        runtime: str = "auto",
        variant: str | None = None,
        threads: int = 1,
        accelerator: Accelerator = CPU,
    ) -> tuple[Any, str]:
        """Open a runtime on a variant, check its input shapes against the contract, run the smoke test."""
        runtime = self.resolve_runtime(runtime, variant, accelerator.kind)
        variant = self.choose_variant(runtime, variant)
        rt = self.kind.open(self, runtime, variant, threads, accelerator)
        self.smoke_test(rt, variant)
        return rt, variant

    def check_shapes(self, rt: ScoringRuntime | WindowRuntime, variant: str) -> None:
        """Refuse a variant whose model inputs do not have the shapes the input contract declares."""
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

    def smoke_test(self, rt: Any, variant: str) -> float:
        """Score the reference window; refuse the bundle if it is off the manifest's expected score."""
        try:
            score = self.kind.smoke_score(self, rt)
        except ApplianceError:
            raise
        except Exception as exc:  # a runtime failing on its own model is a bundle fault
            raise BundleError(f"variant {variant}: smoke test could not run ({exc})") from None
        spec = self.manifest["variants"][variant]
        try:
            expected, tol = float(spec["reference_score"]), float(spec["reference_tolerance"])
        except (KeyError, TypeError, ValueError):
            expected = tol = float("nan")
        if not (np.isfinite(expected) and np.isfinite(tol) and tol >= 0):  # NaN would pass any comparison
            raise BundleError(
                f"variant {variant}: the manifest's reference score {spec.get('reference_score')!r} "
                f"(tolerance {spec.get('reference_tolerance')!r}) is not a finite number; no smoke test "
                "can pass"
            )
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
        try:  # the signature is checked before anything but the manifest is read
            root, signer = extract_verified(path, Path(tmp.name), signatures=signatures)
        except BaseException:
            tmp.cleanup()
            raise
    else:
        root = path
        if not (root / MANIFEST).is_file():
            raise BundleError(f"{path}: no {MANIFEST}; not a model bundle")
        signer = signatures.verify(root) if signatures is not None else None  # before trusting content
    manifest = read_manifest(root)
    verify_files(root, manifest)
    contract = InputContract.from_dict(manifest["input_contract"])
    if expected_contract is not None and (diff := contract.differences(expected_contract)):
        raise BundleError(f"{path}: input contract mismatch: " + "; ".join(diff))
    return Bundle(root, manifest, contract, signer, tmp)
