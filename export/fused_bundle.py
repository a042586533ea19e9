"""Join a map-model bundle (the paper's LSTM-VAE) and a posture-motion bundle into one fused bundle
(:mod:`appliance.models.fused`): each part is copied in whole, the map model's score is calibrated onto the
posture-motion scale on normal validation windows, and the fused score of every variant goes through
the parity gate against fp32 (each part already passed its own gate against PyTorch)."""

from __future__ import annotations

import base64
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from appliance.errors import ApplianceError
from appliance.features.motion import model_input, normalise_window
from appliance.features.window import sliding_windows, window_scores_to_frames
from appliance.models.bundle import (
    MANIFEST,
    SCHEMA_VERSION,
    open_bundle,
    pack_maps,
    safe_copy_dir,
    safe_extract,
    sha256_file,
)
from appliance.models.fused import MAP_PART, MOTION_PART, FusedRuntime, MapCalibration, fit_map_calibration
from appliance.models.lstm_vae import score_map_sequence
from appliance.models.metrics import auroc
from appliance.updates.signing import SIGNATURE_FILE
from export.bundle import (
    REFERENCE_TOLERANCE,
    THRESHOLD_QUANTILE,
    enforce_parity,
    manifest_json,
    normal_windows,
    publish_bundle,
    score_section,
)
from export.parity import check_variant

SCORE_DEFINITION = (
    "larger of the posture-motion score and the map model's score calibrated onto the same scale "
    "(z-score of its log on normal validation windows); higher is more anomalous"
)


@dataclass
class FusedSequence:
    """One sequence as both parts see it: skeleton maps and raw body features, frame-aligned."""

    name: str
    maps: np.ndarray
    raw: np.ndarray
    labels: np.ndarray


def part_scores(rt: FusedRuntime, seq: FusedSequence, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Window scores of both parts over one sequence: (map model raw score, posture-motion score)."""
    if len(seq.labels) < window:
        return np.zeros(0), np.zeros(0)
    maps = score_map_sequence(rt.maps, seq.maps.astype(np.float32), window)
    motion = rt.motion.score_windows(model_input(normalise_window(sliding_windows(seq.raw, window))))
    return maps, np.asarray(motion, np.float64)


def fused_scores(rt: FusedRuntime, seq: FusedSequence, window: int) -> np.ndarray:
    maps, motion = part_scores(rt, seq, window)
    return np.maximum(motion, rt.calibration(maps)) if len(maps) else np.zeros(0)


def _stage_part(src: Path, dest: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = safe_copy_dir(src, Path(tmp) / "p") if src.is_dir() else safe_extract(src, Path(tmp))
        open_bundle(root)  # hashes checked before the part is joined
        (root / SIGNATURE_FILE).unlink(missing_ok=True)  # the fused bundle's signature covers it
        shutil.copytree(root, dest)


def build_fused_bundle(
    map_bundle: Path,
    motion_bundle: Path,
    val: list[FusedSequence],
    test: list[FusedSequence],
    out: Path,
    name: str,
    version: str,
    dataset: str,
    force: bool = False,
    sign_key: Path | None = None,
    log=print,
    evaluation_split: str = "test",
) -> Path:
    """Write fused bundle directory ``out`` and ``out.tar`` from two part bundles (folders or .tar).

    The map part is calibrated, and the default threshold chosen, on the normal windows of ``val``
    (hold them out of both parts' fitting); ``test`` is the parity and evaluation set, described in
    the manifest by ``evaluation_split``. Raises ParityError if a variant fails the gate."""
    if out.exists() and not force:
        raise ApplianceError(f"{out} exists; pass --force to replace it")
    stage = out.with_name(out.name + ".partial")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    _stage_part(map_bundle, stage / MAP_PART)
    _stage_part(motion_bundle, stage / MOTION_PART)
    maps_part, motion_part = open_bundle(stage / MAP_PART), open_bundle(stage / MOTION_PART)
    window = motion_part.contract.window
    if maps_part.contract.window != window:
        raise ApplianceError("the two parts score windows of different lengths")
    runs_on = {v: d["runtime"] for v, d in motion_part.manifest["variants"].items()}
    variants = [v for v, d in maps_part.manifest["variants"].items() if runs_on.get(v) == d["runtime"]]
    if "onnx-fp32" not in variants:
        raise ApplianceError("both parts need an onnx-fp32 variant (the fused model's reference)")

    def runtime(variant: str, cal: MapCalibration) -> FusedRuntime:
        m, _ = maps_part.open(runs_on[variant], variant)
        p, _ = motion_part.open(runs_on[variant], variant)
        return FusedRuntime(m, p, cal)

    # calibration of the map model on normal validation windows (fp32)
    probe = runtime("onnx-fp32", MapCalibration(0.0, 1.0))
    val_parts = [part_scores(probe, s, window) for s in val]
    normal = normal_windows(val, window)
    if not normal:
        raise ApplianceError("no normal validation window to calibrate the map model on")
    normal_map = np.array([val_parts[i][0][j] for i, j in normal])
    cal = fit_map_calibration(normal_map)
    fp32 = FusedRuntime(probe.maps, probe.motion, cal)
    val_fused = {i: np.maximum(val_parts[i][1], cal(val_parts[i][0])) for i in {i for i, _ in normal}}
    normal_scores = np.array([val_fused[i][j] for i, j in normal])
    threshold = float(np.quantile(normal_scores, THRESHOLD_QUANTILE))
    ref_i, ref_j = normal[int(np.argsort(normal_scores)[len(normal_scores) // 2])]
    ref_maps = val[ref_i].maps[ref_j : ref_j + window]
    ref_raw = val[ref_i].raw[ref_j : ref_j + window]

    scored = [s for s in test if len(s.labels) >= window]
    reference = [fused_scores(fp32, s, window) for s in scored]
    ref_flat = np.concatenate(reference)
    positive = np.concatenate([s.labels for s in scored]) > 0
    frames = lambda ws: np.concatenate(  # noqa: E731
        [window_scores_to_frames(w, len(s.labels), window) for w, s in zip(ws, scored, strict=True)]
    )
    ref_auroc = auroc(frames(reference), positive)
    rows, manifest_variants = [], {}
    for v in variants:
        rt = fp32 if v == "onnx-fp32" else runtime(v, cal)
        scores = reference if v == "onnx-fp32" else [fused_scores(rt, s, window) for s in scored]
        rows.append(check_variant(v, ref_flat, np.concatenate(scores), ref_auroc, frames(scores), positive))
        manifest_variants[v] = {
            "runtime": runs_on[v],
            "parts": {MAP_PART: v, MOTION_PART: v},
            "reference_score": rt.score_window(ref_maps.astype(np.float32), ref_raw),
            "reference_tolerance": REFERENCE_TOLERANCE["int8" if "int8" in v else "fp32"],
            "auroc": rows[-1].auroc,
        }
    heading = f"fused parity on {len(ref_flat)} windows ({dataset}: {evaluation_split}; reference: fp32)"
    enforce_parity(rows, ref_auroc, heading, log)
    contract = {**motion_part.manifest["input_contract"], **maps_part.contract.map_spec.to_dict()}
    files = {p.relative_to(stage).as_posix(): sha256_file(p) for p in sorted(stage.rglob("*")) if p.is_file()}
    parts_info = {k: b.manifest["model"] for k, b in ((MAP_PART, maps_part), (MOTION_PART, motion_part))}
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "model": {
            "name": name,
            "version": version,
            "type": "fused",
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "parts": {
                k: {"name": m["name"], "version": m["version"], "type": m["type"]}
                for k, m in parts_info.items()
            },
        },
        "parts": {MAP_PART: MAP_PART, MOTION_PART: MOTION_PART},
        "input_contract": contract,
        "score": score_section(SCORE_DEFINITION, "z (normal validation windows)"),
        "fusion": {MAP_PART: {"loc": cal.loc, "scale": cal.scale, "windows": len(normal_map)}},
        "variants": manifest_variants,
        "files": files,
        "evaluation": {
            "dataset": dataset,
            "split": evaluation_split,
            "fp32_auroc": ref_auroc,
            "parity": [r.to_dict() for r in rows],
        },
        "threshold": {
            "default": threshold,
            "method": f"{THRESHOLD_QUANTILE:.1%} quantile of fused scores on {len(normal_scores)} normal "
            "validation windows; calibration replaces it",
            "normal_quantiles": {
                f"{q:g}": float(np.quantile(normal_scores, q)) for q in (0.5, 0.9, 0.95, 0.99, 0.995, 1.0)
            },
        },
        "reference": {
            "maps": pack_maps(ref_maps),
            "features": base64.b64encode(np.ascontiguousarray(ref_raw, "<f4").tobytes()).decode("ascii"),
            "source": f"{val[ref_i].name} frames {ref_j}..{ref_j + window - 1}",
        },
    }
    (stage / MANIFEST).write_text(manifest_json(manifest))
    open_bundle(stage).open("onnxruntime")  # the written bundle loads and passes its own smoke test
    return publish_bundle(stage, manifest, out, sign_key, log)
