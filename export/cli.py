"""``appliance-export``: the server side: train and evaluate models, export them to ONNX and TFLite,
package, quantise and sign model bundles for the appliance, and reproduce the README's figures."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from appliance.errors import ApplianceError
from appliance.features.skeleton_map import MapSpec
from export.datasets import DATASETS, Split
from export.models import MODEL_TYPES
from export.train import TrainConfig

DATA_ENV = "APPLIANCE_DATA"  # where the benchmark sets live, when --data is not given


def _add_train_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=int, default=30, help="training epochs (paper: 30)")
    p.add_argument(
        "--batch-size", type=int, default=None, help="default: the paper's (16 LSTM-VAE, 32 AE/VAE)"
    )
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--max-windows-per-epoch",
        type=int,
        default=4096,
        help="above this, each epoch visits every k-th window from a random phase",
    )


def _train_config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        seed=args.seed,
        max_windows_per_epoch=args.max_windows_per_epoch,
    )


def _add_source_options(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", choices=DATASETS, help="a built-in real benchmark set (needs --data)")
    src.add_argument("--keypoints", type=Path, nargs="+", help="keypoint files in any supported format")
    _add_data_option(p)


def _add_data_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        type=Path,
        default=os.environ.get(DATA_ENV),
        help=f"folder holding the benchmark sets (urfd-falls/, mocap-bandai/); default: ${DATA_ENV}",
    )


def _data_dir(args: argparse.Namespace) -> Path:
    if args.data is None:
        raise ApplianceError(
            f"no benchmark data folder: pass --data FOLDER (holding urfd-falls/ and mocap-bandai/) "
            f"or set {DATA_ENV}"
        )
    return args.data


VAL_HELP = (
    "keypoint files of other normal footage for shrinkage, z-scores and the default threshold (with "
    "--keypoints). Without it, {rule}; use the same files for train and bundle, so that they split alike"
)
USER_EVALUATION = "all given keypoints (fit and validation tracks; no held-out test set)"


def _add_val_option(p: argparse.ArgumentParser) -> None:
    from export.datasets import SPLIT_RULE

    p.add_argument(
        "--val",
        type=Path,
        nargs="+",
        metavar="FILE",
        help=VAL_HELP.format(rule=SPLIT_RULE.replace("%", "%%")),
    )


def _read_labelled(paths: list[Path]) -> list:
    """Sequences of keypoint files; unlabelled ones count as normal (label 0 on every frame)."""
    import numpy as np

    from appliance.keypoints.readers import read_keypoints

    sequences = [seq for path in paths for seq in read_keypoints(path)]
    for seq in sequences:
        if seq.labels is None:
            seq.labels = np.zeros(len(seq), dtype=np.int64)
    return sequences


def _load_source(args: argparse.Namespace, window: int = 30) -> Split:
    """The built-in set's split, or the user's keypoints: with --val those validate; without it, for
    commands that take --val, whole tracks are held out (:func:`export.datasets.split_by_track`)."""
    val_files = getattr(args, "val", None)
    if args.dataset:
        from export.datasets import load_split

        if val_files:
            raise ApplianceError(
                "--val goes with --keypoints; the built-in sets have their own validation split"
            )
        return load_split(args.dataset, _data_dir(args))
    from export.datasets import split_by_track

    classes = {0: "normal", 1: "anomaly"}
    sequences = _read_labelled(args.keypoints)
    if not hasattr(args, "val"):  # evaluate, onnx: every sequence is scored, none fitted
        return Split("keypoints", sequences, [], sequences, classes, "the given keypoints")
    if val_files:
        fit, val = sequences, _read_labelled(val_files)
        how = f"from {', '.join(str(p) for p in val_files)}"
    else:
        fit, val = split_by_track(sequences, window)
        how = f"held out of {len(sequences)} tracks of --keypoints (every fifth with a normal window)"
    _check_validation(val, window)
    shown = ", ".join(s.name for s in val[:6]) + (", ..." if len(val) > 6 else "")
    print(f"validation: {len(val)} tracks {how}: {shown}")
    return Split("keypoints", fit, val, fit + val, classes, USER_EVALUATION)


def _check_validation(val: list, window: int) -> None:
    """Refuse validation data without a single window of normal frames (nothing to choose on)."""
    from export.datasets import has_normal_window

    if not any(has_normal_window(s, window) for s in val):
        raise ApplianceError(f"the validation keypoints hold no {window} consecutive normal frames")


def cmd_train(args: argparse.Namespace) -> int:
    from export.datasets import render_sequences
    from export.models import ModelConfig
    from export.train import save_checkpoint, train_model

    split = _load_source(args)
    spec = MapSpec()
    train = render_sequences(split.train, spec)
    val = render_sequences(split.val, spec)
    result = train_model(ModelConfig(model_type=args.model), _train_config(args), train, val)
    names = {"train_sequences": [s.name for s in split.train], "val_sequences": [s.name for s in split.val]}
    path = save_checkpoint(args.out, result, spec, {"dataset": split.name, **names})
    last = result.history[-1]
    print(
        f"trained {args.model} on {result.data_summary['samples']} {result.data_summary['sample_kind']} "
        f"in {result.seconds:.0f} s; final loss {last['train_loss']:.2f}; checkpoint {path}"
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from export.datasets import render_sequences
    from export.evaluate import (
        evaluate,
        plot_reconstructions,
        plot_roc,
        plot_score_timeline,
        validation_threshold,
        write_json,
    )
    from export.models import LSTMVAE
    from export.train import load_checkpoint

    split = _load_source(args)
    test = render_sequences(split.test, MapSpec())
    val = render_sequences(split.val, MapSpec()) if split.val else []  # the timeline's threshold
    evaluations, report = [], {}
    args.out.mkdir(parents=True, exist_ok=True)
    for ckpt_path in args.checkpoint:
        model, ckpt = load_checkpoint(ckpt_path)
        if MapSpec(**ckpt["map_spec"]) != MapSpec():
            raise ApplianceError(
                f"{ckpt_path}: trained on maps {ckpt['map_spec']}, this evaluation renders {MapSpec()}"
            )
        ev = evaluate(model, ckpt_path.stem, test, split.classes)
        evaluations.append(ev)
        metrics = report[str(ckpt_path)] = ev.metrics()
        plot_score_timeline(
            ev, args.out / f"scores_{ckpt_path.stem}.png", f"{split.name}: {ckpt_path.stem}",
            threshold=validation_threshold(model, val),
        )  # fmt: skip
        if isinstance(model, LSTMVAE):
            title = f"{split.name}: {ckpt_path.stem} input/output"
            plot_reconstructions(model, ev, args.out / f"reconstructions_{ckpt_path.stem}.png", title)
        print(f"{ckpt_path}: AUROC {metrics['auroc']:.3f} on {metrics['frames']} frames")
    plot_roc(evaluations, args.out / "roc.png", f"{split.name}: frame-level ROC")
    write_json(args.out / "report.json", report)
    print(f"report: {args.out / 'report.json'}")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from export.reproduce import reproduce

    data = _data_dir(args)
    if not data.is_dir():
        raise ApplianceError(f"data folder {data} not found (expected urfd-falls/ and mocap-bandai/ inside)")
    reproduce(data, args.out, args.datasets, args.models, _train_config(args), progress=not args.quiet)
    return 0


def _render_split(args: argparse.Namespace, spec: MapSpec, window: int = 30):
    from export.datasets import render_sequences

    split = _load_source(args, window)
    return split, *(render_sequences(part, spec) for part in (split.train, split.val, split.test))


def cmd_onnx(args: argparse.Namespace) -> int:
    from appliance.models.lstm_vae import score_map_sequence
    from appliance.models.runtimes import open_runtime
    from export.onnx_export import export_onnx
    from export.parity import check_variant, format_parity_table
    from export.train import load_checkpoint

    model, ckpt = load_checkpoint(args.checkpoint)
    paths = export_onnx(model, args.out)
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    if args.dataset or args.keypoints:
        import numpy as np

        from export.bundle import frame_level_scores, torch_window_scores

        _, _, _, test = _render_split(args, MapSpec(**ckpt["map_spec"]))
        ref = torch_window_scores(model, test)
        ref_frames, positive = frame_level_scores(ref, test, model.cfg.window)
        scored = np.isfinite(ref_frames)
        ref_frames, positive = ref_frames[scored], positive[scored]
        from appliance.models.metrics import auroc

        rt = open_runtime("onnxruntime", paths["frame_encoder"], paths["sequence"])
        scores = [score_map_sequence(rt, s.maps, model.cfg.window) for s in test]
        frames = frame_level_scores(scores, test, model.cfg.window)[0][scored]
        row = check_variant(
            "onnx-fp32",
            np.concatenate(ref),
            np.concatenate(scores),
            auroc(ref_frames, positive),
            frames,
            positive,
        )
        print(format_parity_table(auroc(ref_frames, positive), [row]))
        return 0 if row.passed else 1
    return 0


def cmd_tflite(args: argparse.Namespace) -> int:
    from export.tflite_export import export_tflite
    from export.train import load_checkpoint

    model, _ = load_checkpoint(args.checkpoint)
    paths = export_tflite(model, args.out, int8=not args.no_int8)
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    print("parity is checked when they go into a bundle: appliance-export bundle --variants tflite-fp32 ...")
    return 0


def cmd_bundle(args: argparse.Namespace) -> int:
    from export.bundle import build_bundle
    from export.datasets import learning_fps
    from export.train import load_checkpoint

    model, ckpt = load_checkpoint(args.checkpoint)
    split, train, val, test = _render_split(args, MapSpec(**ckpt["map_spec"]), model.cfg.window)
    trained_on = set(ckpt.get("extra", {}).get("train_sequences", []))
    if overlap := sorted(trained_on & {s.name for s in split.val}):
        print(
            f"warning: {len(overlap)} validation tracks ({', '.join(overlap[:3])}) were training tracks of "
            f"{args.checkpoint}: pass the --keypoints and --val it was trained with",
            file=sys.stderr,
        )
    name = args.name or args.out.name
    build_bundle(
        model,
        ckpt,
        test,
        val,
        train,
        args.out,
        name,
        args.version,
        args.variants,
        split.name,
        args.force,
        score_scale=args.score_scale,
        sign_key=args.sign,
        evaluation_split=split.test_split,
        fps=learning_fps(split.train),
    )
    return 0


def cmd_posture_motion(args: argparse.Namespace) -> int:
    from export.datasets import learning_fps
    from export.motion_eval import feature_sequences, normal_windows
    from export.posture_motion import fit_posture_motion
    from export.posture_motion_bundle import build_posture_motion_bundle

    split = _load_source(args)
    train, val, test = (feature_sequences(p) for p in (split.train, split.val, split.test))
    model, info = fit_posture_motion(normal_windows(train), normal_windows(val or train))
    print(f"fitted on {info['train_windows']} normal windows; calibrated on {info['val_windows']}")
    build_posture_motion_bundle(
        model, info, train, val, test, args.out, args.name or args.out.name, args.version, split.name,
        force=args.force, sign_key=args.sign, score_scale=args.score_scale, variants=args.variants,
        evaluation_split=split.test_split, fps=learning_fps(split.train),
    )  # fmt: skip
    return 0


def cmd_fused(args: argparse.Namespace) -> int:
    from appliance.models.bundle import open_bundle
    from appliance.models.fused import MAP_PART, MOTION_PART
    from appliance.models.registry import kind_of
    from export.datasets import render_sequences
    from export.fused_bundle import FusedSequence, build_fused_bundle
    from export.motion_eval import feature_sequences

    for flag, path in (("--map-bundle", args.map_bundle), ("--motion-bundle", args.motion_bundle)):
        if not path.exists():
            raise ApplianceError(f"{flag} {path}: no such bundle (.tar or folder)")
    map_part, motion_part = open_bundle(args.map_bundle), open_bundle(args.motion_bundle)
    fused = kind_of("fused")
    for flag, part, bundle in (
        ("--map-bundle", MAP_PART, map_part),
        ("--motion-bundle", MOTION_PART, motion_part),
    ):
        if problem := fused.part_problem(part, bundle):
            raise ApplianceError(f"{flag}: {problem}")
    window = motion_part.contract.window
    if args.dataset or args.keypoints:  # the built-in split, or the same hold-out as the parts'
        split = _load_source(args, window)
        val_seqs, test_seqs, dataset, evaluation = split.val, split.test, split.name, split.test_split
    elif args.val:
        val_seqs = _read_labelled(args.val)
        _check_validation(val_seqs, window)
        test_seqs, dataset, evaluation = val_seqs, "keypoints", "the --val keypoints (no --test given)"
    else:
        raise ApplianceError(
            "no validation footage: pass --val FILE, or the --keypoints both parts were built from "
            "(the same tracks are held out), or --dataset"
        )
    if args.test:
        test_seqs, evaluation = _read_labelled(args.test), "the --test keypoints"
    if not any(len(s) >= window for s in test_seqs):
        raise ApplianceError(f"the evaluation keypoints hold no sequence of {window} frames")
    spec = map_part.contract.map_spec

    def joined(seqs: list) -> list[FusedSequence]:
        rendered, features = render_sequences(seqs, spec), feature_sequences(seqs)
        return [
            FusedSequence(r.name, r.maps, f.raw, f.labels) for r, f in zip(rendered, features, strict=True)
        ]

    build_fused_bundle(
        args.map_bundle, args.motion_bundle, joined(val_seqs), joined(test_seqs), args.out,
        args.name or args.out.name, args.version, dataset, force=args.force, sign_key=args.sign,
        evaluation_split=evaluation,
    )  # fmt: skip
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from export.motion_eval import compare

    compare(_data_dir(args), args.datasets, args.out, args.paper)
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    from appliance.updates.signing import generate_key_pair

    private, public, key_id = generate_key_pair(args.out, args.force)
    print(f"key id {key_id}\nprivate key {private} (keep it on the build server, never on a device)")
    print(f"public key  {public} (copy it to each appliance's trusted-keys folder)")
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    from export.bundle import sign_bundle

    target, key_id = sign_bundle(args.bundle, args.key, args.out, args.model_version)
    print(f"signed {target} with key {key_id}")
    return 0


def cmd_pose_onnx(args: argparse.Namespace) -> int:
    from export.pose_onnx import convert_landmarks

    convert_landmarks(args.python, args.landmark, args.dest)
    return 0


def cmd_starter(args: argparse.Namespace) -> int:
    from export.starter import build_starter

    out = args.out or Path(f"appliance/assets/starter-walking-{args.model.replace('_', '-')}.tar")
    build_starter(
        args.video,
        out,
        args.work,
        epochs=args.epochs,
        seed=args.seed,
        model=args.model,
        skeletons=args.skeletons,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="appliance-export", description=__doc__.replace("``", ""))
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one model on normal data")
    _add_source_options(p)
    _add_val_option(p)
    p.add_argument("--model", choices=MODEL_TYPES, default="lstm_vae")
    p.add_argument("--out", type=Path, required=True, help="checkpoint path (.pt)")
    _add_train_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="frame-level AUROC, ROC and score plots of checkpoints on a test set")
    _add_source_options(p)
    p.add_argument("--checkpoint", type=Path, nargs="+", required=True)
    p.add_argument("--out", type=Path, required=True, help="folder for report.json and plots")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("onnx", help="export an LSTM-VAE checkpoint to ONNX (encoder, sequence, one graph)")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="folder for the .onnx files")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--dataset", choices=DATASETS, help="check fp32 parity on this set's test split")
    src.add_argument("--keypoints", type=Path, nargs="+", help="check fp32 parity on these labelled files")
    _add_data_option(p)
    p.set_defaults(func=cmd_onnx)

    p = sub.add_parser("tflite", help="convert an LSTM-VAE checkpoint to TFLite fp32/int8 (no TensorFlow)")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="folder for fp32/ and int8/ .tflite files")
    p.add_argument("--no-int8", action="store_true", help="fp32 only")
    p.set_defaults(func=cmd_tflite)

    p = sub.add_parser("bundle", help="export, quantise, check parity and package a bundle (dir + .tar)")
    p.add_argument("--checkpoint", type=Path, required=True)
    _add_source_options(p)
    _add_val_option(p)
    p.add_argument("--out", type=Path, required=True, help="bundle directory; a .tar of it is written beside")
    p.add_argument("--name", help="model name (default: the --out folder name)")
    p.add_argument("--version", default="0.1.0", help="model version recorded in the manifest")
    p.add_argument("--variants", nargs="+", default=["onnx-fp32", "onnx-int8"], help="variants to include")
    p.add_argument("--force", action="store_true", help="replace an existing bundle")
    p.add_argument(
        "--score-scale",
        help="declare the scores comparable with earlier bundles of this id (a re-export, or a retrain "
        "checked to score alike), so calibrated thresholds survive the update; omit when unsure",
    )
    p.set_defaults(func=cmd_bundle)

    p.add_argument("--sign", type=Path, metavar="KEY", help="sign the manifest with this Ed25519 private key")
    p.set_defaults(func=cmd_bundle)

    p = sub.add_parser(
        "posture-motion", help="fit the posture-motion model on normal data and package it as a bundle"
    )
    _add_source_options(p)
    _add_val_option(p)
    p.add_argument("--out", type=Path, required=True, help="bundle directory; a .tar of it is written beside")
    p.add_argument("--name", help="model name (default: the --out folder name)")
    p.add_argument("--version", default="0.1.0", help="model version recorded in the manifest")
    p.add_argument("--force", action="store_true", help="replace an existing bundle")
    p.add_argument("--score-scale", help="declare scores comparable with earlier bundles of this id")
    p.add_argument(
        "--variants",
        nargs="+",
        choices=["onnx-fp32", "onnx-int8", "tflite-fp32", "tflite-int8"],
        default=["onnx-fp32", "onnx-int8"],
        help="variants to include (TFLite needs the [tflite-export] extra)",
    )
    p.add_argument("--sign", type=Path, metavar="KEY", help="sign the manifest with this Ed25519 private key")
    p.set_defaults(func=cmd_posture_motion)

    p = sub.add_parser(
        "fused",
        help="join a map-model (LSTM-VAE) bundle and a posture-motion bundle into one fused bundle",
        description="Join your own map-model bundle (appliance-export bundle) and posture-motion bundle "
        "(appliance-export posture-motion) into one fused bundle, the kind the starter is. The map "
        "model's score is calibrated onto the posture-motion scale, and the default threshold chosen, on "
        "the normal windows of the validation footage, which both parts must NOT have been fitted on: "
        "pass the same --val you gave them, or, where they split --keypoints themselves, the same "
        "--keypoints (the same tracks are held out).",
    )
    p.add_argument("--map-bundle", type=Path, required=True, help="LSTM-VAE bundle (.tar or folder)")
    p.add_argument("--motion-bundle", type=Path, required=True, help="posture-motion bundle (.tar or folder)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--dataset", choices=DATASETS, help="a built-in set's validation and test splits")
    src.add_argument(
        "--keypoints", type=Path, nargs="+",
        help="the keypoint files the parts were fitted on without --val: the same tracks are held out",
    )  # fmt: skip
    p.add_argument("--val", type=Path, nargs="+", metavar="FILE", help="normal validation keypoint files")
    p.add_argument(
        "--test", type=Path, nargs="+", metavar="FILE",
        help="labelled keypoint files for the parity gate and the evaluation (default: the --val files)",
    )  # fmt: skip
    _add_data_option(p)
    p.add_argument("--out", type=Path, required=True, help="bundle directory; a .tar of it is written beside")
    p.add_argument("--name", help="model name (default: the --out folder name)")
    p.add_argument("--version", default="0.1.0", help="model version recorded in the manifest")
    p.add_argument("--force", action="store_true", help="replace an existing bundle")
    p.add_argument("--sign", type=Path, metavar="KEY", help="sign the manifest with this Ed25519 private key")
    p.set_defaults(func=cmd_fused)

    p = sub.add_parser(
        "compare", help="posture-motion model vs the speed rule (and the paper model's reports) on both sets"
    )
    _add_data_option(p)
    p.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    p.add_argument("--out", type=Path, default=Path("runs/compare"))
    p.add_argument(
        "--paper", type=Path, nargs="*", default=[], help="reproduce output folders (one per seed)"
    )
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("keygen", help="make an Ed25519 key pair for signing bundles (OUT.key, OUT.pub)")
    p.add_argument("--out", type=Path, required=True, help="path without suffix, e.g. keys/acme-models")
    p.add_argument("--force", action="store_true", help="replace existing key files")
    p.set_defaults(func=cmd_keygen)

    p = sub.add_parser("sign", help="sign an existing bundle (.tar or folder) with an Ed25519 private key")
    p.add_argument("bundle", type=Path)
    p.add_argument("--key", type=Path, required=True, help="private key from appliance-export keygen")
    p.add_argument("--out", type=Path, help="write the signed bundle here (default: in place)")
    p.add_argument(
        "--model-version", help="re-release the same model files under this version (set before signing)"
    )
    p.set_defaults(func=cmd_sign)

    p = sub.add_parser(
        "pose-onnx",
        help="convert the BlazePose landmark models to ONNX for accelerators (CUDA, TensorRT), checked "
        "against LiteRT",
    )
    p.add_argument(
        "--python", default=".venv-pose-onnx/bin/python",
        help="a Python with tf2onnx and TensorFlow (export/pose-onnx-requirements.txt; make pose-onnx)",
    )  # fmt: skip
    p.add_argument("--landmark", nargs="+", choices=["full", "lite"], default=["full", "lite"])
    p.add_argument("--dest", type=Path, help="model folder (default: where the TFLite models are installed)")
    p.set_defaults(func=cmd_pose_onnx)

    p = sub.add_parser("starter", help="build the starter bundle shipped with the appliance")
    p.add_argument("--video", type=Path, required=True, help="walking footage (vtest.avi)")
    p.add_argument("--model", choices=["fused", "posture_motion", "lstm_vae"], default="fused")
    p.add_argument("--out", type=Path, help="default: appliance/assets/starter-walking-<model>.tar")
    p.add_argument("--skeletons", type=Path, help="reuse a vtest-skeletons.csv from an earlier run")
    p.add_argument("--work", type=Path, default=Path("runs/starter"), help="skeletons and checkpoint")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_starter)

    p = sub.add_parser(
        "reproduce", help="train and evaluate LSTM-VAE, AE and VAE on the real sets (the README table)"
    )
    _add_data_option(p)
    p.add_argument("--out", type=Path, default=Path("runs/paper"))
    p.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    p.add_argument("--models", nargs="+", choices=MODEL_TYPES, default=list(MODEL_TYPES))
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_train_options(p)
    p.set_defaults(func=cmd_reproduce)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ApplianceError, FileNotFoundError, ValueError) as exc:
        print(f"appliance-export: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("appliance-export: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
