"""Scorer benchmark: per-window latency on one thread for every runtime variant, MACs, AUROC.

Usage: python benchmarks/scorer.py [--checkpoint runs/paper/urfd/lstm_vae.pt] [--data ../shared/data]

Prints, from one run: latency (p50, mean) and windows/s of PyTorch eager (whole window, and
streaming), ONNX fp32 single graph, ONNX streaming fp32 and int8 (and TFLite where a bundle variant
exists); MACs per window; achieved GMAC/s against this core's measured GEMM peak (the "MAC floor"
is MACs / peak); frame-level AUROC of each variant on the real test split; the target ratios.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def timed(fn, items, warmup: int = 20) -> np.ndarray:
    for item in items[:warmup]:
        fn(item)
    out = np.empty(len(items))
    for i, item in enumerate(items):
        t = time.perf_counter()
        fn(item)
        out[i] = time.perf_counter() - t
    return out


def gemm_peak_gmacs() -> float:
    """Single-thread onnxruntime MatMul throughput on 512x512x512 (this core's practical MAC peak)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    b = numpy_helper.from_array(np.random.default_rng(0).standard_normal((512, 512)).astype(np.float32), "B")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["A", "B"], ["C"])],
        "gemm",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, [512, 512])],
        [helper.make_tensor_value_info("C", TensorProto.FLOAT, [512, 512])],
        [b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    a = np.random.default_rng(1).standard_normal((512, 512)).astype(np.float32)
    t = timed(lambda _: sess.run(None, {"A": a}), list(range(30)), warmup=5)
    return 512**3 / np.median(t) / 1e9


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=Path("runs/paper/urfd/lstm_vae.pt"))
    ap.add_argument("--dataset", default="urfd")
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--windows", type=int, default=300, help="windows timed per variant")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from appliance.features.window import window_scores_to_frames
    from appliance.models.bundle import open_bundle
    from appliance.models.lstm_vae import StreamingScorer, score_map_sequence
    from appliance.models.metrics import auroc
    from export.bundle import build_bundle, buildable_variants
    from export.datasets import load_split, render_sequences
    from export.evaluate import score_frames
    from export.macs import count_macs
    from export.onnx_export import FrameEncoderGraph, SequenceScoreGraph, export_onnx
    from export.train import TrainConfig, load_checkpoint, save_checkpoint, train_model

    split = load_split(args.dataset, args.data)
    train, val, test = (render_sequences(p) for p in (split.train, split.val, split.test))
    if not args.checkpoint.is_file():
        print(f"{args.checkpoint} not found: training one with the paper's settings first")
        from appliance.features.skeleton_map import MapSpec
        from export.models import ModelConfig

        save_checkpoint(args.checkpoint, train_model(ModelConfig(), TrainConfig(), train, val), MapSpec())
    model, ckpt = load_checkpoint(args.checkpoint)
    cfg = model.cfg
    t_, f_, s_ = cfg.window, cfg.frame_features, cfg.map_size

    maps = np.concatenate([s.maps for s in test]).astype(np.float32)
    n = min(args.windows, len(maps) - t_)
    windows = [maps[i : i + t_] for i in range(n)]

    macs_frame = count_macs(FrameEncoderGraph(model).eval(), torch.zeros(1, s_, s_))
    macs_seq = count_macs(
        SequenceScoreGraph(model).eval(), torch.zeros(1, t_, f_), torch.zeros(1, t_, s_, s_)
    )
    macs_stream = macs_frame + macs_seq
    macs_whole = t_ * macs_frame + macs_seq
    peak = gemm_peak_gmacs()

    variants = buildable_variants()
    if "tflite-fp32" not in variants:
        print("litert-torch not installed: no TFLite rows (pip install -e '.[export,tflite-export]')")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        onnx = export_onnx(model, tmp / "onnx")
        build_bundle(
            model,
            ckpt,
            test,
            val,
            train,
            tmp / "b",
            "bench",
            "0",
            variants,
            args.dataset,
            log=lambda *_: None,
        )
        bundle = open_bundle(tmp / "b")

        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        single = ort.InferenceSession(str(onnx["window"]), opts, providers=["CPUExecutionProvider"])

        results = []  # (name, seconds per window array, macs, auroc)
        with torch.no_grad():
            tw = [torch.from_numpy(w)[None] for w in windows]
            lat = timed(lambda w: model.score(w), tw)
        results.append(("pytorch eager, whole window", lat, macs_whole, None))

        def torch_stream(w):  # one new frame encoded, 30 cached features scored
            with torch.no_grad():
                feats = model.encode_frames(w[:, -1:])
                model.sequence(feats.expand(-1, t_, -1))

        results.append(("pytorch eager, streaming", timed(torch_stream, tw), macs_stream, None))
        results.append(
            (
                "onnx fp32, single graph",
                timed(lambda w: single.run(None, {"windows": w[None]}), windows),
                macs_whole,
                None,
            )
        )
        test_frames = [s for s in test]
        y = np.concatenate([s.labels for s in test_frames]) > 0
        torch_auroc = auroc(np.concatenate([score_frames(model, s) for s in test_frames]), y)
        results[0] = (*results[0][:3], torch_auroc)
        for variant in variants:
            rt, _ = bundle.open(bundle.manifest["variants"][variant]["runtime"], variant, threads=1)
            scorer = StreamingScorer(rt, t_, f_, s_)
            for m in maps[: t_ - 1]:
                scorer.push(m)
            lat = timed(scorer.push, list(maps[t_ - 1 : t_ - 1 + n]))
            frames = np.concatenate(
                [window_scores_to_frames(score_map_sequence(rt, s.maps, t_), len(s.maps)) for s in test]
            )
            results.append((f"{variant}, streaming", lat, macs_stream, auroc(frames, y)))
            if rt.name != "onnxruntime":  # TFLite graphs have a fixed batch of one
                continue
            # several tracks (people or cameras) scored in one call per frame: GEMV becomes GEMM
            feats = rt.encode(maps[: n + t_])
            batch = 16
            fw = np.stack([feats[i : i + t_] for i in range(n)])
            mw = np.stack(windows)
            groups = [(fw[i : i + batch], mw[i : i + batch]) for i in range(0, n - batch + 1, batch)]
            lat = timed(lambda g, rt=rt: rt.score(*g), groups, warmup=3) / batch
            results.append((f"{variant}, streaming, {batch} tracks per call", lat, macs_seq, None))

    print(f"\nScorer benchmark: {args.checkpoint} on {args.dataset} test split, {n} windows, 1 thread")
    print(
        f"MACs: frame encoder {macs_frame / 1e6:.2f} M/frame, sequence part {macs_seq / 1e6:.2f} M/window; "
        f"streaming {macs_stream / 1e6:.2f} M/window, whole window {macs_whole / 1e6:.2f} M/window"
    )
    print(
        f"single-thread GEMM peak (onnxruntime MatMul 512^3): {peak:.1f} GMAC/s -> streaming MAC floor "
        f"{macs_stream / peak / 1e6:.3f} ms/window\n"
    )
    print("| variant | p50 ms/window | mean ms | windows/s | GMAC/s | x MAC floor | AUROC |")
    print("|---|---|---|---|---|---|---|")
    by_name = {}
    for name, lat, macs, a in results:
        p50, mean = np.median(lat) * 1e3, lat.mean() * 1e3
        floor = macs / peak / 1e6
        by_name[name] = p50
        a_txt = "-" if a is None else f"{a:.4f}"
        print(
            f"| {name} | {p50:.3f} | {mean:.3f} | {1e3 / mean:.0f} | {macs / (p50 / 1e3) / 1e9:.2f} | "
            f"{p50 / floor:.2f} | {a_txt} |"
        )
    stream = by_name["onnx-fp32, streaming"]
    ratios = {
        "streaming onnx fp32 vs pytorch eager, whole window (target >= 2)": by_name[
            "pytorch eager, whole window"
        ]
        / stream,
        "streaming onnx fp32 vs pytorch eager, streaming": by_name["pytorch eager, streaming"] / stream,
        "streaming onnx fp32 vs onnx single graph": by_name["onnx fp32, single graph"] / stream,
        "streaming onnx int8 vs fp32 (speed-up)": stream / by_name["onnx-int8, streaming"],
        "streaming onnx fp32 latency / MAC floor (target <= 1.5)": stream / (macs_stream / peak / 1e6),
        "same, 16 tracks per call": by_name["onnx-fp32, streaming, 16 tracks per call"]
        / (macs_seq / peak / 1e6),
    }
    print()
    for label, value in ratios.items():
        print(f"{label}: {value:.2f}")
    aurocs = {name: a for name, _, _, a in results if a is not None}
    for fmt in ("onnx", "tflite"):
        if f"{fmt}-int8, streaming" in aurocs:
            diff = aurocs[f"{fmt}-int8, streaming"] - aurocs[f"{fmt}-fp32, streaming"]
            print(f"{fmt} int8 AUROC - fp32 AUROC: {diff:+.4f} (target within 0.01)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
