"""Reproduce the paper's comparison (LSTM-VAE vs AE vs VAE) on the real benchmark sets in one run."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

from appliance.features.skeleton_map import MapSpec
from export.datasets import load_split, render_sequences
from export.evaluate import (
    evaluate,
    plot_reconstructions,
    plot_roc,
    plot_score_timeline,
    validation_threshold,
    write_json,
)
from export.models import LSTMVAE, ModelConfig
from export.train import TrainConfig, save_checkpoint, train_model

MODEL_LABELS = {"lstm_vae": "LSTM-VAE", "ae": "AE", "vae": "VAE"}
PAPER_AUROC = {"lstm_vae": 0.74, "ae": 0.67, "vae": 0.63}


def run_dataset(
    name: str,
    data_dir: Path,
    out: Path,
    models: list[str],
    train_cfg: TrainConfig,
    spec: MapSpec,
    progress: bool,
    log=print,
) -> dict:
    """Train every model on one set's normal training data and evaluate on its test split."""
    started = time.perf_counter()
    split = load_split(name, data_dir)
    train, val, test = (render_sequences(part, spec) for part in (split.train, split.val, split.test))
    frames = sum(len(s.maps) for s in train + val + test)
    log(f"[{name}] rendered {frames} frames in {time.perf_counter() - started:.1f} s")
    write_json(out / name / "split.json", split.summary())
    results, evaluations = {}, []
    for model_type in models:
        cfg = ModelConfig(model_type=model_type, map_size=spec.map_size)
        result = train_model(
            cfg, train_cfg, train, val, progress=progress, description=f"{name}/{model_type}"
        )
        save_checkpoint(out / name / f"{model_type}.pt", result, spec, {"dataset": name})
        ev = evaluate(result.model, MODEL_LABELS[model_type], test, split.classes)
        metrics = ev.metrics()
        metrics.update(
            train_seconds=round(result.seconds, 1),
            train_samples=result.data_summary["samples"],
            final_train_loss=result.history[-1]["train_loss"],
            final_val_loss=result.history[-1].get("val_loss"),
        )
        results[model_type] = metrics
        evaluations.append(ev)
        log(
            f"[{name}] {MODEL_LABELS[model_type]:8s} AUROC {metrics['auroc']:.3f}  "
            f"({result.data_summary['samples']} {result.data_summary['sample_kind']}, {result.seconds:.0f} s)"
        )
        plot_score_timeline(
            ev, out / name / f"scores_{model_type}.png", f"{name}: {MODEL_LABELS[model_type]} anomaly score",
            threshold=validation_threshold(result.model, val),
        )  # fmt: skip
        if isinstance(result.model, LSTMVAE):
            plot_reconstructions(
                result.model,
                ev,
                out / name / "reconstructions_lstm_vae.png",
                f"{name}: LSTM-VAE input/output",
            )
    plot_roc(evaluations, out / name / "roc.png", f"{name}: frame-level ROC")
    return results


def format_table(report: dict, datasets: list[str], models: list[str]) -> str:
    header = "| model | " + " | ".join(datasets) + " | paper (its own data) |"
    lines = [header, "|---" * (len(datasets) + 2) + "|"]
    for m in models:
        cells = [f"{report['results'][d][m]['auroc']:.3f}" for d in datasets]
        lines.append(f"| {MODEL_LABELS[m]} | " + " | ".join(cells) + f" | {PAPER_AUROC[m]:.2f} |")
    return "\n".join(lines)


def reproduce(
    data_dir: Path,
    out: Path,
    datasets: list[str],
    models: list[str],
    train_cfg: TrainConfig,
    spec: MapSpec = MapSpec(),
    progress: bool = True,
    log=print,
) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    report = {"train_config": asdict(train_cfg), "map_spec": spec.to_dict(), "results": {}}
    for name in datasets:
        report["results"][name] = run_dataset(name, data_dir, out, models, train_cfg, spec, progress, log)
    table = format_table(report, datasets, models)
    (out / "table.md").write_text(table + "\n")
    write_json(out / "report.json", report)
    log("\nFrame-level AUROC (test split; window score on its last frame):\n" + table)
    log(f"\nreport: {out / 'report.json'}; plots under {out}/<dataset>/")
    return report
