"""Posture-motion model against the paper's LSTM-VAE and the speed rule, on both real sets.

    appliance-export compare --data DATA --paper runs/seeds/s0 runs/seeds/s1 runs/seeds/s2

Same protocol as ``appliance-export reproduce`` (:mod:`export.evaluate`): stride-1 windows of 30
frames, a window's score on its last frame (the first 29 frames take the first window's score),
frame-level AUROC on the test split, pooled and per anomaly type. The posture-motion model fits on
the normal windows of the training split; its shrinkage and score calibration use the normal
windows of the validation split (carved from training clips), never the test split. The paper model's
figures are read from ``reproduce`` reports (one per seed).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from appliance.features.motion import normalise_window, sequence_features
from appliance.features.window import sliding_windows, window_scores_to_frames
from appliance.keypoints.sequence import KeypointSequence
from appliance.pose.layouts import to_body_graph
from export.datasets import RenderedSequence, learning_fps, load_split
from export.evaluate import Evaluation, write_json
from export.posture_motion import PostureMotionModel, fit_posture_motion, speed_rule

WINDOW = 30


@dataclass
class FeatureSequence:
    """One sequence's raw per-frame posture-motion features (:mod:`appliance.features.motion`)."""

    name: str
    raw: np.ndarray  # (N, RAW_DIM)
    labels: np.ndarray


def feature_sequences(seqs: list[KeypointSequence]) -> list[FeatureSequence]:
    return [
        FeatureSequence(
            s.name,
            sequence_features(to_body_graph(s.keypoints, s.layout)),
            np.asarray(s.labels if s.labels is not None else np.zeros(len(s)), np.int64),
        )
        for s in seqs
    ]


def normal_windows(seqs: list[FeatureSequence], window: int = WINDOW) -> np.ndarray:
    """(W, T, FEATURE_DIM) normalised windows whose frames are all normal."""
    out = []
    for s in seqs:
        if len(s.labels) >= window:
            ok = sliding_windows(s.labels == 0, window).all(axis=1)
            if ok.any():
                out.append(normalise_window(sliding_windows(s.raw, window)[ok]))
    return np.concatenate(out) if out else np.zeros((0, window, 78), np.float32)


def frame_scores(seqs: list[FeatureSequence], score_windows, window: int = WINDOW) -> list[np.ndarray]:
    out = []
    for s in seqs:
        w = sliding_windows(s.raw, window)
        ws = score_windows(normalise_window(w)) if len(w) else np.zeros(0)
        out.append(window_scores_to_frames(np.asarray(ws, np.float64), len(s.labels), window))
    return out


def metrics(
    name: str, seqs: list[FeatureSequence], scores: list[np.ndarray], classes: dict[int, str]
) -> dict:
    shells = [RenderedSequence(s.name, np.zeros(0), s.labels) for s in seqs]
    return Evaluation(name, shells, scores, classes).metrics()


def fit_dataset(name: str, data_dir: Path) -> tuple[PostureMotionModel, dict, dict]:
    """Fit on one set; returns the model, the fit summary and the loaded feature splits."""
    split = load_split(name, data_dir)
    parts = {p: feature_sequences(getattr(split, p)) for p in ("train", "val", "test")}
    t0 = time.perf_counter()
    model, info = fit_posture_motion(normal_windows(parts["train"]), normal_windows(parts["val"]))
    info["fit_seconds"] = round(time.perf_counter() - t0, 2)
    return model, info, {"parts": parts, "classes": split.classes, "fps": learning_fps(split.train)}


def evaluate_dataset(name: str, data_dir: Path, map_checkpoints: list[Path] = ()) -> dict:
    """Posture-motion model and speed rule on one set; with LSTM-VAE checkpoints (one per seed), also
    their fusion with the posture-motion model as the fused bundle computes it."""
    model, info, d = fit_dataset(name, data_dir)
    parts, classes = d["parts"], d["classes"]
    out: dict = {"fit": info}
    for label, fn in (("posture_motion", model.score), ("speed_rule", speed_rule)):
        out[label] = {
            p: metrics(label, parts[p], frame_scores(parts[p], fn), classes) for p in ("val", "test")
        }
    if map_checkpoints:
        motion = {p: frame_scores(parts[p], model.score) for p in ("val", "test")}
        out["fused"] = [_fused_metrics(name, data_dir, ck, parts, motion, classes) for ck in map_checkpoints]
    return out


def _z(window_scores: np.ndarray, loc: float, scale: float) -> np.ndarray:
    return (np.log(np.maximum(window_scores, 1e-9)) - loc) / scale


def _fused_metrics(name, data_dir, checkpoint: Path, parts, motion, classes) -> dict:
    from appliance.features.skeleton_map import MapSpec
    from export.datasets import render_sequences
    from export.evaluate import score_windows
    from export.train import load_checkpoint

    lstm, ckpt = load_checkpoint(checkpoint)
    split = load_split(name, data_dir)
    rendered = {p: render_sequences(getattr(split, p), MapSpec(**ckpt["map_spec"])) for p in ("val", "test")}
    window_scores = {
        p: [score_windows(lstm, r.maps) if len(r.maps) >= WINDOW else np.zeros(0) for r in rendered[p]]
        for p in rendered
    }
    normal = np.concatenate([
        w[sliding_windows(r.labels == 0, WINDOW).all(axis=1)]
        for w, r in zip(window_scores["val"], rendered["val"], strict=True) if len(w)
    ])  # fmt: skip
    logs = np.log(np.maximum(normal, 1e-9))
    loc, scale = logs.mean(), logs.std() + 1e-6
    out = {"checkpoint": str(checkpoint)}
    for p in ("val", "test"):
        fused = [
            np.maximum(m, window_scores_to_frames(_z(w, loc, scale), len(r.labels), WINDOW))
            if len(w) else m
            for m, w, r in zip(motion[p], window_scores[p], rendered[p], strict=True)
        ]  # fmt: skip
        out[p] = metrics("fused", parts[p], fused, classes)
    return out


def paper_results(reports: list[Path]) -> dict:
    """{dataset: {"auroc": [...], "per_class": {type: [...]}}} from reproduce report.json files."""
    out: dict = {}
    for path in reports:
        path = path / "report.json" if path.is_dir() else path
        if not path.is_file():
            continue
        for dataset, models in json.loads(path.read_text())["results"].items():
            if "lstm_vae" not in models:
                continue
            m = models["lstm_vae"]
            d = out.setdefault(dataset, {"auroc": [], "per_class": {}})
            d["auroc"].append(m["auroc"])
            for c, v in m["auroc_per_class"].items():
                d["per_class"].setdefault(c, []).append(v)
    return out


def _cell(values: list[float] | float | None) -> str:
    if values is None or (isinstance(values, list) and not values):
        return "-"
    v = np.atleast_1d(np.asarray(values, float))
    return f"{v.mean():.3f}" if len(v) == 1 or v.std() < 5e-4 else f"{v.mean():.3f} ± {v.std():.3f}"


def format_tables(report: dict) -> str:
    lines = []
    for dataset, r in report["datasets"].items():
        types = list(r["posture_motion"]["test"]["auroc_per_class"])
        lines += [f"**{dataset}** (test split; frame AUROC)", ""]
        lines.append("| method | pooled | " + " | ".join(types) + " |")
        lines.append("|---" * (len(types) + 2) + "|")
        paper = report.get("paper", {}).get(dataset)
        if paper:
            n = len(paper["auroc"])
            cells = [_cell(paper["per_class"].get(t)) for t in types]
            lines.append(
                f"| paper LSTM-VAE ({n} seed{'s' * (n > 1)}) | {_cell(paper['auroc'])} | "
                + " | ".join(cells)
                + " |"
            )
        for label, key in (("speed rule", "speed_rule"), ("**posture-motion (ours)**", "posture_motion")):
            m = r[key]["test"]
            cells = [f"{m['auroc_per_class'][t]:.3f}" for t in types]
            lines.append(f"| {label} | {m['auroc']:.3f} | " + " | ".join(cells) + " |")
        if r.get("fused"):
            fused = [f["test"] for f in r["fused"]]
            n = len(fused)
            cells = [_cell([f["auroc_per_class"][t] for f in fused]) for t in types]
            label = f"posture-motion + LSTM-VAE, fused ({n} seed{'s' * (n > 1)})"
            lines.append(f"| {label} | {_cell([f['auroc'] for f in fused])} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def compare(data_dir: Path, datasets: list[str], out: Path, paper_reports: list[Path], log=print) -> dict:
    report = {"datasets": {}, "paper": paper_results(paper_reports)}
    for name in datasets:
        checkpoints = [
            p / name / "lstm_vae.pt" for p in paper_reports if (p / name / "lstm_vae.pt").is_file()
        ]
        report["datasets"][name] = evaluate_dataset(name, data_dir, checkpoints)
        r = report["datasets"][name]
        pm, rule = r["posture_motion"], r["speed_rule"]
        log(
            f"[{name}] posture-motion test AUROC {pm['test']['auroc']:.3f} (val {pm['val']['auroc']:.3f}); "
            f"speed rule {rule['test']['auroc']:.3f}"
        )
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "report.json", report)
    tables = format_tables(report)
    (out / "table.md").write_text(tables + "\n")
    log("\n" + tables)
    return report
