"""Package a posture-motion model as a bundle: ONNX and TFLite, fp32 and int8, the same parity gate, the same
manifest schema as the LSTM-VAE (``model.type: posture_motion``; input contract = the body
features ``posture-motion-v1`` instead of skeleton maps; the reference window is raw features)."""

from __future__ import annotations

import base64
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from appliance.errors import ApplianceError
from appliance.features.motion import FEATURE_DIM, model_input, normalise_window
from appliance.features.window import sliding_windows, window_scores_to_frames
from appliance.models.bundle import SCHEMA_VERSION, InputContract, sha256_file
from appliance.models.metrics import auroc
from appliance.models.runtimes import open_window_runtime
from appliance.pose.layouts import LAYOUTS
from export.bundle import (
    REFERENCE_TOLERANCE,
    THRESHOLD_QUANTILE,
    enforce_parity,
    normal_windows,
    publish_bundle,
    score_section,
)
from export.motion_eval import FeatureSequence, fit_dataset
from export.parity import check_variant
from export.posture_motion import PostureMotionModel, export_onnx

FEATURES = "posture-motion-v1"
VARIANTS = ("onnx-fp32", "onnx-int8", "tflite-fp32", "tflite-int8")
DEFAULT_VARIANTS = ("onnx-fp32", "onnx-int8")
SCORE_DEFINITION = (
    "largest of three z-scored log Mahalanobis distances of the window's body-normalised posture and "
    "motion statistics (speed; motion; posture and motion) to the normal windows' Gaussians; z-scores "
    "from normal validation windows; higher is more anomalous"
)


def _windows(seq: FeatureSequence, window: int) -> np.ndarray:
    return model_input(normalise_window(sliding_windows(seq.raw, window)))


def export_variants(
    model: PostureMotionModel, work: Path, window: int, variants: tuple[str, ...] | list[str]
) -> dict[str, tuple[str, Path]]:
    """Write each variant's graph under ``work``; returns variant -> (runtime, graph path).

    ONNX int8 is dynamically quantised by onnxruntime; TFLite (litert-torch, batch of one) is converted
    from the same module, its int8 with int8 weights and run-time quantised activations."""
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise ApplianceError(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    graphs: dict[str, tuple[str, Path]] = {}
    onnx_fp32 = work / "onnx-fp32" / "posture_motion.onnx"
    if {"onnx-fp32", "onnx-int8"} & set(variants):
        onnx_fp32.parent.mkdir(parents=True)
        export_onnx(model, onnx_fp32, window)
    for variant in variants:
        runtime, suffix = ("onnxruntime", "onnx") if variant.startswith("onnx") else ("tflite", "tflite")
        path = work / variant / f"posture_motion.{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        if variant == "onnx-int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(str(onnx_fp32), str(path), weight_type=QuantType.QInt8)
        elif variant.startswith("tflite"):
            from export.tflite_export import convert_dynamic_int8, convert_fp32

            convert = convert_dynamic_int8 if variant.endswith("int8") else convert_fp32
            convert(model, (torch.zeros(1, window, FEATURE_DIM),), path)
        graphs[variant] = (runtime, path)
    if "onnx-fp32" not in variants:
        shutil.rmtree(onnx_fp32.parent, ignore_errors=True)
    return graphs


def build_posture_motion_bundle(
    model: PostureMotionModel,
    fit_info: dict,
    train: list[FeatureSequence],
    val: list[FeatureSequence],
    test: list[FeatureSequence],
    out: Path,
    name: str,
    version: str,
    dataset: str,
    window: int = 30,
    force: bool = False,
    sign_key: Path | None = None,
    score_scale: str | None = None,
    variants: tuple[str, ...] | list[str] = DEFAULT_VARIANTS,
    log=print,
    evaluation_split: str = "test",
    fps: float | None = None,
) -> Path:
    """Write bundle directory ``out`` and ``out.tar``; raises ParityError if a variant fails the gate.

    ``test`` is the parity and evaluation set; ``evaluation_split`` says what it is in the manifest;
    ``fps`` the frame rate the model was learned at (its time base, in the input contract)."""
    if out.exists() and not force:
        raise ApplianceError(f"{out} exists; pass --force to replace it")
    scored = [s for s in test if len(s.labels) >= window]
    ref = [model.score(_windows(s, window)) for s in scored]
    ref_flat = np.concatenate(ref)
    frames = np.concatenate(
        [window_scores_to_frames(r, len(s.labels), window) for r, s in zip(ref, scored, strict=True)]
    )
    positive = np.concatenate([s.labels for s in scored]) > 0
    ref_auroc = auroc(frames, positive)

    pool = val if any(len(s.labels) >= window for s in val) else train
    normal = normal_windows(pool, window)
    if not normal:
        raise ApplianceError("no normal window in the validation or training data for the threshold")
    pool_scores = {i: model.score(_windows(pool[i], window)) for i in {i for i, _ in normal}}
    normal_scores = np.array([pool_scores[i][j] for i, j in normal])
    threshold = float(np.quantile(normal_scores, THRESHOLD_QUANTILE))
    ref_i, ref_j = normal[int(np.argsort(normal_scores)[len(normal_scores) // 2])]  # a median normal window
    reference_raw = np.ascontiguousarray(pool[ref_i].raw[ref_j : ref_j + window], dtype="<f4")

    with tempfile.TemporaryDirectory(prefix="bundle-build-") as tmp:
        work = Path(tmp)
        graphs = export_variants(model, work, window, variants)
        rows, manifest_variants = [], {}
        for variant, (runtime, path) in graphs.items():
            rt = open_window_runtime(runtime, path, threads=1)
            scores = [rt.score_windows(_windows(s, window)).astype(np.float64) for s in scored]
            vframes = np.concatenate(
                [
                    window_scores_to_frames(r, len(s.labels), window)
                    for r, s in zip(scores, scored, strict=True)
                ]
            )
            rows.append(
                check_variant(variant, ref_flat, np.concatenate(scores), ref_auroc, vframes, positive)
            )
            ref_score = float(rt.score_windows(model_input(normalise_window(reference_raw))[None])[0])
            manifest_variants[variant] = {
                "runtime": runtime,
                "model": path.relative_to(work).as_posix(),
                "reference_score": ref_score,
                "reference_tolerance": REFERENCE_TOLERANCE["int8" if "int8" in variant else "fp32"],
                "auroc": rows[-1].auroc,
            }
        enforce_parity(
            rows,
            ref_auroc,
            f"parity on {len(ref_flat)} real evaluation windows ({dataset}: {evaluation_split})",
            log,
        )
        files = {p.relative_to(work).as_posix(): sha256_file(p) for _, p in graphs.values()}
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "model": {
                "name": name,
                "version": version,
                "type": "posture_motion",
                "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "architecture": {"model_type": "posture_motion", "window": window, **fit_info},
            },
            "input_contract": InputContract(
                window, FEATURE_DIM, None, tuple(LAYOUTS), FEATURES, fps
            ).to_dict(),
            "score": score_section(SCORE_DEFINITION, "z (normal validation windows)", score_scale),
            "variants": manifest_variants,
            "files": files,
            "training": {
                "dataset": dataset,
                "sequences": [s.name for s in train],
                "validation_sequences": [s.name for s in val],
                **fit_info,
            },
            "evaluation": {
                "dataset": dataset,
                "split": evaluation_split,
                "frames": len(frames),
                "pytorch_auroc": ref_auroc,
                "parity": [r.to_dict() for r in rows],
            },
            "threshold": {
                "default": threshold,
                "method": f"{THRESHOLD_QUANTILE:.1%} quantile of scores on {len(normal_scores)} normal "
                f"{'validation' if pool is val else 'training'} windows; calibration replaces it",
                "normal_quantiles": {
                    f"{q:g}": float(np.quantile(normal_scores, q)) for q in (0.5, 0.9, 0.95, 0.99, 0.995, 1.0)
                },
            },
            "reference": {
                "features": base64.b64encode(reference_raw.tobytes()).decode("ascii"),
                "source": f"{pool[ref_i].name} frames {ref_j}..{ref_j + window - 1}",
            },
        }
        stage = out.with_name(out.name + ".partial")
        shutil.rmtree(stage, ignore_errors=True)
        for rel in files:
            (stage / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(work / rel, stage / rel)
        return publish_bundle(stage, manifest, out, sign_key, log)


def bundle_dataset(
    dataset: str,
    data_dir: Path,
    out: Path,
    name: str,
    version: str,
    variants: tuple[str, ...] | list[str] = DEFAULT_VARIANTS,
    log=print,
) -> tuple[Path, PostureMotionModel, dict]:
    """Fit on one benchmark set (normal train windows, validation calibration) and write its bundle;
    returns the bundle folder, the model and the set's feature splits."""
    model, info, d = fit_dataset(dataset, data_dir)
    parts = d["parts"]
    build_posture_motion_bundle(
        model, info, parts["train"], parts["val"], parts["test"], out, name, version, dataset,
        variants=variants, log=log, fps=d["fps"],
    )  # fmt: skip
    return out, model, parts
