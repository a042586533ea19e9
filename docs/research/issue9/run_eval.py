"""Issue #9: posture + motion anomaly scoring. Reproduces every number of REPORT.md in one command:

    .venv/bin/python docs/research/issue9/run_eval.py            # full run (about 5 min on 1 core)
    .venv/bin/python docs/research/issue9/run_eval.py --quick    # 1 seed, no ONNX

Protocol (as export/evaluate.py): stride-1 windows of T=30 frames, a window's score on its last
frame, the first T-1 frames take the first window's score, sequences shorter than T excluded;
frame-level AUROC on the test split, pooled and per anomaly type. Training uses normal windows of
the training split only; shrinkage and score calibration use normal windows of the validation split.

Runs against the product's code: features (appliance.features.motion), Gaussians and fusion
(export.posture_motion), protocol (export.motion_eval), ONNX export and int8 (export.posture_motion,
export.quantize), window runtime (appliance.models.runtimes); model.py adds only the research candidates.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path[:0] = [str(HERE), str(ROOT)]

import numpy as np  # noqa: E402
import torch  # noqa: E402

from appliance.features.motion import RAW_DIM, FeatureStream, model_input, normalise_window, sequence_features  # noqa: E402
from appliance.models.runtimes import OnnxWindowRuntime  # noqa: E402
from appliance.features.window import WindowBuffer, sliding_windows  # noqa: E402
from common import frame_scores, load_features, metrics, normal_windows  # noqa: E402
from export.posture_motion import export_onnx, speed_rule  # noqa: E402
from model import AEConfig, ConvAE, fit_fusion, score, train_ae  # noqa: E402

WINDOW = 30
# (label, components, mode); "AE" components are seeded, the Gaussians are closed-form.
CANDIDATES = [
    ("Gauss(all stats)", ("GA",), "max"),
    ("ConvAE", ("AE",), "max"),
    ("Gauss(posture)+Gauss(speed), sum", ("GP", "GS"), "sum"),
    ("Gauss(speed)+Gauss(motion)+Gauss(all), max", ("GS", "GM", "GA"), "max"),
    ("Gauss(speed)+Gauss(motion)+ConvAE, max", ("GS", "GM", "AE"), "max"),
]


def evaluate(d: dict, part: str, fn) -> dict:
    return metrics(d[part], frame_scores(d[part], fn), d["classes"])


def torch_fn(model):
    return lambda w: score(model, model_input(w))


def summarise(runs: list[dict]) -> dict:
    """mean, std, min, max of pooled and per-type AUROC over runs."""
    def agg(values):
        v = np.asarray(values, dtype=float)
        return {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()), "max": float(v.max()), "n": len(v)}

    out = {"auroc": agg([r["auroc"] for r in runs]), "per_class": {}}
    for c in runs[0]["per_class"]:
        out["per_class"][c] = agg([r["per_class"][c] for r in runs])
    return out


def cell(a: dict) -> str:
    return f"{a['mean']:.3f}" if a["n"] == 1 or a["max"] - a["min"] < 5e-4 else f"{a['mean']:.3f} ± {a['std']:.3f}"


def export_graph(model: torch.nn.Module, path: Path) -> Path:
    """The product's ONNX export (one graph: (batch, 30, FEATURE_DIM) window -> (batch,) score)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    export_onnx(model, path, WINDOW)
    return path


def ort_fn(runtime: OnnxWindowRuntime):
    """The appliance's onnxruntime window runtime: one window per run, as deployed (dynamic int8
    quantises activations per run, so a batch would change the int8 scores)."""
    def fn(w):
        return runtime.score_windows(model_input(w)).astype(np.float64)
    return fn


def streaming_latency(runtime: OnnxWindowRuntime, bodies: list[np.ndarray], frames: int = 2000) -> dict:
    """Per new frame: FeatureStream.push + window normalisation + one ONNX run on the 30-frame window."""
    stream, buf = FeatureStream(), WindowBuffer(WINDOW, (RAW_DIM,), np.float32)
    seq = np.concatenate(bodies)[:frames]
    feat_t, model_t, live = [], [], []
    for body in seq:
        t0 = time.perf_counter()
        window = buf.push(stream.push(body))
        t1 = time.perf_counter()
        if window is None:
            continue
        x = model_input(normalise_window(window))[None]
        live.append(float(runtime.score_windows(x)[0]))
        t2 = time.perf_counter()
        feat_t.append(t1 - t0)
        model_t.append(t2 - t1)
    offline = ort_fn(runtime)(normalise_window(sliding_windows(sequence_features(seq), WINDOW)))
    f, m = np.asarray(feat_t) * 1e3, np.asarray(model_t) * 1e3
    tot = f + m
    return {
        "windows": len(tot), "feature_ms_median": float(np.median(f)), "model_ms_median": float(np.median(m)),
        "total_ms_median": float(np.median(tot)), "total_ms_p99": float(np.percentile(tot, 99)),
        "stream_vs_offline_max_abs_diff": float(np.max(np.abs(np.asarray(live) - offline))),
    }


def select(report: dict, tolerance: float = 0.005) -> list[str]:
    """Candidates ranked by the validation rule (the test split plays no part).

    Score: mean over the data sets of the seed-mean pooled *validation* AUROC. Candidates within
    ``tolerance`` of the best count as tied; among them the one with fewer seeded (learned)
    components wins (deterministic, cheaper), then the higher score.
    """
    names = [c[0] for c in CANDIDATES]
    learned = {c[0]: sum(k == "AE" for k in c[1]) for c in CANDIDATES}
    val = {
        n: float(np.mean([r["candidates"][n]["val"]["auroc"]["mean"] for r in report["datasets"].values()]))
        for n in names
    }
    best = max(val.values())
    tied = sorted((n for n in names if val[n] >= best - tolerance), key=lambda n: (learned[n], -val[n]))
    rest = sorted((n for n in names if n not in tied), key=lambda n: -val[n])
    report["selection"] = {"val_score": val, "tolerance": tolerance, "ranking": tied + rest}
    return tied + rest


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="+", default=["urfd", "mocap"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--export", type=int, default=2, help="export + time the top N candidates by validation")
    ap.add_argument("--quick", action="store_true", help="seed 0 only, no ONNX")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args()
    torch.set_num_threads(1)
    seeds = args.seeds[:1] if args.quick else args.seeds
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict = {"seeds": seeds, "epochs": args.epochs, "datasets": {}}
    data, fitted = {}, {}
    for name in args.datasets:
        d = data[name] = load_features(name)
        W, V = normal_windows(d["train"]), normal_windows(d["val"])
        res: dict = {"train_windows": len(W), "val_normal_windows": len(V), "candidates": {}}
        print(f"[{name}] {len(W)} normal train windows, {len(V)} normal val windows", flush=True)
        rule = {p: evaluate(d, p, speed_rule) for p in ("val", "test")}
        res["speed_rule"] = {p: summarise([rule[p]]) for p in rule}
        print(f"[{name}] speed rule: val {rule['val']['auroc']:.3f} test {rule['test']['auroc']:.3f}", flush=True)
        aes: dict[int, ConvAE] = {}
        ae_seconds = []
        for seed in seeds:
            t = time.perf_counter()
            aes[seed] = train_ae(np.nan_to_num(W, nan=0.0), AEConfig(epochs=args.epochs), seed)
            ae_seconds.append(time.perf_counter() - t)
        res["ae_train_seconds"] = ae_seconds
        for label, comps, mode in CANDIDATES:
            runs = {"val": [], "test": []}
            infos = []
            for seed in seeds if "AE" in comps else seeds[:1]:
                t = time.perf_counter()
                fusion, info = fit_fusion(W, V, comps, mode, seed, ae=aes[seed])
                info["fit_seconds"] = time.perf_counter() - t + (ae_seconds[seeds.index(seed)] if "AE" in comps else 0.0)
                infos.append(info)
                for p in runs:
                    runs[p].append(evaluate(d, p, torch_fn(fusion)))
                fitted.setdefault((name, label), fusion)  # first seed's model, for export
            res["candidates"][label] = {p: summarise(runs[p]) for p in runs}
            res["candidates"][label]["runs"] = runs
            res["candidates"][label]["fit"] = infos
            s = res["candidates"][label]
            print(f"[{name}] {label}: val {cell(s['val']['auroc'])} test {cell(s['test']['auroc'])}", flush=True)
        report["datasets"][name] = res
    ranking = select(report)
    print("selection by validation:", json.dumps(report["selection"], indent=1), flush=True)
    if not args.quick:
        from export.quantize import quantize_sequence_dynamic

        for label in ranking[: args.export]:
            slug = "".join(ch if ch.isalnum() else "_" for ch in label).strip("_")
            for name, d in data.items():
                model = fitted[(name, label)]
                fp32 = export_graph(model, args.out / f"{name}__{slug}.onnx")
                int8 = quantize_sequence_dynamic(fp32, args.out / f"{name}__{slug}.int8.onnx")
                onnx_res = {"torch_test_auroc": report["datasets"][name]["candidates"][label]["runs"]["test"][0]["auroc"]}
                for tag, path in (("fp32", fp32), ("int8", int8)):
                    runtime = OnnxWindowRuntime(path, threads=1)
                    m = evaluate(d, "test", ort_fn(runtime))
                    lat = streaming_latency(runtime, [q["body"] for q in d["test"]])
                    onnx_res[tag] = {"test": m, "latency": lat, "bytes": path.stat().st_size}
                    print(f"[{name}] {label} ONNX {tag}: test AUROC {m['auroc']:.4f}, "
                          f"{lat['total_ms_median']:.3f} ms/window median (p99 {lat['total_ms_p99']:.3f}; "
                          f"features {lat['feature_ms_median']:.3f}), {path.stat().st_size / 1024:.0f} KiB, "
                          f"stream-vs-offline max diff {lat['stream_vs_offline_max_abs_diff']:.2e}", flush=True)
                report["datasets"][name]["candidates"][label]["onnx"] = onnx_res
    (args.out / "report.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    table = format_tables(report)
    (args.out / "tables.md").write_text(table)
    print("\n" + table)


def format_tables(report: dict) -> str:
    lines = []
    for name, res in report["datasets"].items():
        classes = list(res["speed_rule"]["test"]["per_class"])
        lines.append(f"### {name} (test split; val = pooled AUROC on the validation split)\n")
        lines.append("| method | val | test pooled | " + " | ".join(classes) + " |")
        lines.append("|---" * (3 + len(classes)) + "|")
        rows = [("speed rule (baseline)", res["speed_rule"])] + list(res["candidates"].items())
        for label, s in rows:
            per = " | ".join(cell(s["test"]["per_class"][c]) for c in classes)
            lines.append(f"| {label} | {cell(s['val']['auroc'])} | {cell(s['test']['auroc'])} | {per} |")
        lines.append("")
    if "selection" in report:
        sel = report["selection"]
        lines.append("Selection score (mean over sets of the seed-mean validation AUROC): " + ", ".join(
            f"{n}: {v:.4f}" for n, v in sorted(sel["val_score"].items(), key=lambda kv: -kv[1])))
        lines.append(f"\nRanking (ties within {sel['tolerance']} go to fewer learned parts): " + " > ".join(sel["ranking"]))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
