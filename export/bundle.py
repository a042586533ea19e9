"""Build a model bundle from a checkpoint: export, quantise, prove parity, write directory and tar.

Every variant is scored through the appliance's own runtime code (``appliance.models.runtimes``) on the
real evaluation windows and compared with PyTorch; a bundle is written only when every variant
passes the parity gate (``export.parity``). The default threshold is a high quantile of PyTorch
scores on the validation split's normal windows; calibration on site replaces it.
"""

from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from appliance.errors import ApplianceError
from appliance.features.skeleton_map import MapSpec
from appliance.features.window import sliding_windows, window_scores_to_frames
from appliance.models.bundle import (
    FILE_SIZES,
    MANIFEST,
    SCHEMA_VERSION,
    InputContract,
    pack_maps,
    sha256_file,
)
from appliance.models.lstm_vae import score_map_sequence
from appliance.models.metrics import auroc
from appliance.models.runtimes import open_runtime
from appliance.pose.layouts import LAYOUTS
from appliance.updates.signing import sign_manifest
from export.datasets import RenderedSequence
from export.evaluate import score_windows
from export.models import LSTMVAE
from export.onnx_export import export_onnx
from export.parity import VariantParity, check_variant, format_parity_table
from export.quantize import quantize_encoder_static, quantize_sequence_dynamic

THRESHOLD_QUANTILE = 0.995
REFERENCE_TOLERANCE = {"fp32": 1e-3, "int8": 5e-2}  # relative; int8 kernels differ between CPUs
SCORE_DEFINITION = (
    "mean over the window's T frames of the Bernoulli negative log-likelihood of each binary skeleton "
    "map given the decoder's output for z = mu (nats per frame); higher is more anomalous"
)


def score_section(definition: str, units: str, scale: str | None = None) -> dict:
    """The manifest's ``score`` entry, for every kind: what a score means and which frame it belongs to.

    ``scale``: the score scale's id; the same id means scores comparable with earlier bundles, so a
    site's calibrations stay valid.
    """
    return {
        "definition": definition,
        "units": units,
        "higher_is_anomalous": True,
        "assigned_to": "the last frame of the window",
        **({"scale": scale} if scale else {}),
    }


class ParityError(ApplianceError):
    """An exported variant does not score like the PyTorch model; no bundle is written."""


@dataclass
class Variant:
    name: str
    runtime: str
    encoder: Path
    sequence: Path


VariantBuilder = Callable[[LSTMVAE, dict[str, Path], Path, np.ndarray], Variant]


def _onnx_fp32(model, onnx, work, calibration) -> Variant:
    return Variant("onnx-fp32", "onnxruntime", onnx["frame_encoder"], onnx["sequence"])


def _onnx_int8(model, onnx, work, calibration) -> Variant:
    out = work / "onnx-int8"
    out.mkdir(parents=True, exist_ok=True)
    enc = quantize_encoder_static(onnx["frame_encoder"], out / "frame_encoder.onnx", calibration)
    seq = quantize_sequence_dynamic(onnx["sequence"], out / "sequence.onnx")
    return Variant("onnx-int8", "onnxruntime", enc, seq)


def _tflite_sources(model: LSTMVAE, work: Path) -> dict[str, Path]:
    """Convert once per build; both TFLite variants draw on the same conversions."""
    from export.tflite_export import export_tflite

    src = work / "tflite-src"
    if not (src / "int8" / "sequence.tflite").is_file():
        export_tflite(model, src, int8=True)
    return {
        "encoder": src / "fp32" / "frame_encoder.tflite",
        "fp32": src / "fp32" / "sequence.tflite",
        "int8": src / "int8" / "sequence.tflite",
    }


def _tflite_variant(name: str, sequence_key: str):
    def build(model, onnx, work, calibration) -> Variant:
        src = _tflite_sources(model, work)
        out = work / name
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src["encoder"], out / "frame_encoder.tflite")  # int8 slows this small CNN down
        shutil.copyfile(src[sequence_key], out / "sequence.tflite")
        return Variant(name, "tflite", out / "frame_encoder.tflite", out / "sequence.tflite")

    return build


VARIANT_BUILDERS: dict[str, VariantBuilder] = {
    "onnx-fp32": _onnx_fp32,
    "onnx-int8": _onnx_int8,
    "tflite-fp32": _tflite_variant("tflite-fp32", "fp32"),
    "tflite-int8": _tflite_variant("tflite-int8", "int8"),
}


def buildable_variants() -> list[str]:
    """The variants this installation can build (TFLite needs the [tflite-export] extra)."""
    try:
        import litert_torch  # noqa: F401
    except ImportError:
        return ["onnx-fp32", "onnx-int8"]
    return list(VARIANT_BUILDERS)


def torch_window_scores(model: LSTMVAE, seqs: list[RenderedSequence]) -> list[np.ndarray]:
    return [score_windows(model, s.maps) if len(s.maps) >= model.cfg.window else np.empty(0) for s in seqs]


def frame_level_scores(
    window_scores: list[np.ndarray], seqs: list[RenderedSequence], window: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame scores of all frames (NaN in sequences shorter than a window) and anomaly flags."""
    scores = np.concatenate(
        [window_scores_to_frames(w, len(s.maps), window) for w, s in zip(window_scores, seqs, strict=True)]
    )
    return scores, np.concatenate([s.labels for s in seqs]) > 0


def normal_windows(seqs: list[RenderedSequence], window: int) -> list[tuple[int, int]]:
    """(sequence, start) of every window whose frames are all normal."""
    out = []
    for i, s in enumerate(seqs):
        if len(s.labels) >= window:
            out += [(i, int(j)) for j in np.flatnonzero(sliding_windows(s.labels == 0, window).all(axis=1))]
    return out


def build_bundle(
    model: LSTMVAE,
    checkpoint: dict,
    test: list[RenderedSequence],
    val: list[RenderedSequence],
    train: list[RenderedSequence],
    out: Path,
    name: str,
    version: str,
    variants: list[str],
    dataset: str,
    force: bool = False,
    log=print,
    score_scale: str | None = None,
    sign_key: Path | None = None,
    evaluation_split: str = "test",
    fps: float | None = None,
) -> Path:
    """Write bundle directory ``out`` and ``out.tar``; raises ParityError if a variant fails the gate.

    ``fps``: the frame rate the model was learned at, recorded as its time base in the contract.

    ``test`` is the parity and evaluation set; ``evaluation_split`` says what it is in the manifest."""
    if not isinstance(model, LSTMVAE):
        raise ApplianceError("bundles hold the LSTM-VAE; the AE/VAE baselines are evaluation-only")
    unknown = [v for v in variants if v not in VARIANT_BUILDERS]
    if unknown:
        raise ApplianceError(f"unknown variant(s) {unknown}; known: {', '.join(VARIANT_BUILDERS)}")
    if out.exists() and not force:
        raise ApplianceError(f"{out} exists; pass --force to replace it")
    cfg = model.cfg
    spec = MapSpec(**checkpoint["map_spec"])
    window = cfg.window

    # PyTorch reference on the evaluation windows
    ref_windows = torch_window_scores(model, test)
    ref_frames, positive = frame_level_scores(ref_windows, test, window)
    scored = np.isfinite(ref_frames)  # frames of sequences shorter than a window have no score
    ref_frames, positive = ref_frames[scored], positive[scored]
    ref_auroc = auroc(ref_frames, positive)
    ref_flat = np.concatenate(ref_windows)

    # threshold and reference window from validation normal windows (training ones if no validation)
    pool = val if normal_windows(val, window) else train
    candidates = normal_windows(pool, window)
    if not candidates:
        raise ApplianceError("no normal window in the validation or training data for the threshold")
    pool_scores = torch_window_scores(model, pool)
    normal_scores = np.array([pool_scores[i][j] for i, j in candidates])
    threshold = float(np.quantile(normal_scores, THRESHOLD_QUANTILE))
    ref_i, ref_j = candidates[
        int(np.argsort(normal_scores)[len(normal_scores) // 2])
    ]  # a median normal window
    reference_maps = pool[ref_i].maps[ref_j : ref_j + window]
    calibration = np.concatenate([s.maps[s.labels == 0] for s in train])

    with tempfile.TemporaryDirectory(prefix="bundle-build-") as tmp:
        work = Path(tmp)
        onnx = export_onnx(model, work / "onnx-fp32")
        (work / "onnx-fp32" / "window.onnx").unlink()  # reference graph: not needed on the device
        built = [VARIANT_BUILDERS[v](model, onnx, work, calibration) for v in variants]

        rows: list[VariantParity] = []
        manifest_variants = {}
        for v in built:
            rt = open_runtime(v.runtime, v.encoder, v.sequence, threads=1)
            scores = [score_map_sequence(rt, s.maps, window) for s in test]
            frame_scores = frame_level_scores(scores, test, window)[0][scored]
            rows.append(
                check_variant(v.name, ref_flat, np.concatenate(scores), ref_auroc, frame_scores, positive)
            )
            ref_score = float(score_map_sequence(rt, reference_maps, window)[0])
            manifest_variants[v.name] = {
                "runtime": v.runtime,
                "encoder": v.encoder.relative_to(work).as_posix(),
                "sequence": v.sequence.relative_to(work).as_posix(),
                "reference_score": ref_score,
                "reference_tolerance": REFERENCE_TOLERANCE["int8" if "int8" in v.name else "fp32"],
                "auroc": rows[-1].auroc,
            }
        enforce_parity(
            rows,
            ref_auroc,
            f"parity on {len(ref_flat)} real evaluation windows ({dataset}: {evaluation_split})",
            log,
        )

        files = {
            p.relative_to(work).as_posix(): sha256_file(p) for v in built for p in (v.encoder, v.sequence)
        }
        for rel in list(files):  # keep only the files the variants use
            if not any(rel == d["encoder"] or rel == d["sequence"] for d in manifest_variants.values()):
                del files[rel]
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "model": {
                "name": name,
                "version": version,
                "type": cfg.model_type,
                "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "architecture": cfg.to_dict(),
            },
            "input_contract": InputContract(
                window, cfg.frame_features, spec, tuple(LAYOUTS), fps=fps
            ).to_dict(),
            "score": score_section(SCORE_DEFINITION, "nats per frame", score_scale),
            "variants": manifest_variants,
            "files": files,
            "training": {
                "dataset": dataset,
                "data": checkpoint["data_summary"],
                "config": checkpoint["train_config"],
                "final_loss": checkpoint["history"][-1],
            },
            "evaluation": {
                "dataset": dataset,
                "split": evaluation_split,
                "frames": len(ref_frames),
                "pytorch_auroc": ref_auroc,
                "parity": [r.to_dict() for r in rows],
            },
            "threshold": {
                "default": threshold,
                "method": f"{THRESHOLD_QUANTILE:.1%} quantile of PyTorch scores on {len(normal_scores)} "
                f"normal {'validation' if pool is val else 'training'} windows; calibration replaces it",
                # the normal score distribution, kept beside the model for calibration and the demo
                "normal_quantiles": {
                    f"{q:g}": float(np.quantile(normal_scores, q)) for q in (0.5, 0.9, 0.95, 0.99, 0.995, 1.0)
                },
            },
            "reference": {
                "maps": pack_maps(reference_maps),
                "source": f"{pool[ref_i].name} frames {ref_j}..{ref_j + window - 1}",
            },
        }
        stage = out.with_name(out.name + ".partial")
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir(parents=True)
        for rel in files:
            (stage / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(work / rel, stage / rel)
        return publish_bundle(stage, manifest, out, sign_key, log)


def enforce_parity(rows: list[VariantParity], reference_auroc: float, heading: str, log=print) -> None:
    """Log the parity table; refuse (ParityError) when any variant failed the gate."""
    log(f"{heading}:\n{format_parity_table(reference_auroc, rows)}")
    if failed := [r.variant for r in rows if not r.passed]:
        raise ParityError(f"refusing to write a bundle: {', '.join(failed)} failed the parity gate")


def publish_bundle(stage: Path, manifest: dict, out: Path, sign_key: Path | None, log=print) -> Path:
    """Write the manifest into a staged bundle folder, sign it, move it to ``out`` and tar it.

    The one path every kind's writer ends in (LSTM-VAE here, :mod:`export.posture_motion_bundle`,
    :mod:`export.fused_bundle`): before anything is written for the field, the staged folder is read
    back with the appliance's own loader (hashes, sizes, input contract, the files each of its kind's
    variants names), so a bundle the appliance would refuse never leaves the build server."""
    from appliance.models.bundle import open_bundle
    from appliance.models.registry import kind_of

    kind_of(manifest)  # a kind the appliance software does not run is refused here, by name
    declare_file_sizes(stage, manifest)
    (stage / MANIFEST).write_text(manifest_json(manifest))
    open_bundle(stage)
    if sign_key is not None:
        log(f"signed with key {sign_manifest(stage, sign_key)}")
    if out.exists():
        shutil.rmtree(out)
    stage.rename(out)
    tar_path = write_tar(out)
    model = manifest["model"]
    size_kib, threshold = tar_path.stat().st_size / 1024, manifest["threshold"]["default"]
    log(
        f"bundle {model['name']} {model['version']}: {out}/ and {tar_path} ({size_kib:.0f} KiB); "
        f"default threshold {threshold:.2f}"
    )
    return out


# Metrics that have no value when the evaluation data lack a class (a site's footage without
# anomalies has no AUROC): written as null. Any other NaN or infinity is a defect, refused.
ABSENT_WHEN_NAN = frozenset({"auroc", "auroc_diff", "pytorch_auroc", "fp32_auroc"})


def _strict(value: object, where: str) -> object:
    """``value`` with honestly absent metrics as None; ApplianceError naming any other non-finite."""
    if isinstance(value, dict):
        return {k: _strict(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, float | np.floating) and not np.isfinite(value):
        if where.rsplit(".", 1)[-1] in ABSENT_WHEN_NAN and np.isnan(value):
            return None
        raise ApplianceError(f"refusing to write a manifest with {where} = {value} (not a finite number)")
    if isinstance(value, np.generic):
        return value.item()
    return value


def manifest_json(manifest: dict) -> str:
    """The manifest as strict JSON (RFC 8259: no NaN or Infinity, which many parsers refuse).

    An AUROC without both classes in the evaluation data becomes null; any other non-finite value
    is an ApplianceError naming the field (``threshold.default``, ``evaluation.parity[1].spearman``)."""
    return json.dumps(_strict(manifest, ""), indent=2, allow_nan=False) + "\n"


def declare_file_sizes(bundle_dir: Path, manifest: dict) -> dict:
    """Add the byte count of every listed file to ``manifest`` (``file_sizes``): the appliance holds
    each file to it while unpacking, so an oversized member is refused before it is read."""
    manifest[FILE_SIZES] = {rel: (bundle_dir / rel).stat().st_size for rel in manifest["files"]}
    return manifest


def write_tar(bundle_dir: Path, tar_path: Path | None = None) -> Path:
    """``bundle_dir`` as ``<bundle_dir>.tar`` (one top-level folder, regular files only)."""
    tar_path = tar_path or bundle_dir.with_name(bundle_dir.name + ".tar")
    tmp = tar_path.with_name(tar_path.name + ".partial")
    with tarfile.open(tmp, "w") as tar:
        tar.add(bundle_dir, arcname=bundle_dir.name)
    tmp.replace(tar_path)
    return tar_path


def sign_bundle(
    source: Path, key: Path, out: Path | None = None, model_version: str | None = None
) -> tuple[Path, str]:
    """Sign a bundle (folder or .tar) in place or into ``out``, optionally as ``model_version``.

    Hashes are checked first: a signature vouches for the files the manifest lists.
    """
    from appliance.models.bundle import open_bundle, safe_copy_dir, safe_extract

    with tempfile.TemporaryDirectory(prefix="sign-") as tmp:
        work = Path(tmp) / "in"
        work.mkdir()
        root = safe_copy_dir(source, work / source.name) if source.is_dir() else safe_extract(source, work)
        open_bundle(root)  # refuse to sign a bundle whose files do not match its manifest
        if model_version is not None:
            manifest = json.loads((root / MANIFEST).read_text())
            manifest["model"]["version"] = model_version
            (root / MANIFEST).write_text(manifest_json(manifest))
        key_id = sign_manifest(root, key)
        target = out or source
        if target.suffix == ".tar":
            named = Path(tmp) / target.stem
            if root != named:
                root.rename(named)
            write_tar(named, target)
        else:
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(root, target)
    return target, key_id
