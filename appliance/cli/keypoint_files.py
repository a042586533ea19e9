"""``appliance maps | score | extract``: keypoint files in and out (maps, anomaly scores, extraction)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from appliance.errors import ApplianceError
from appliance.models.runtimes import RUNTIMES


def _pick_sequence(path: Path, sequences: list, which: str):
    """A sequence by name (as ``score --only`` takes it), else by 0-based position."""
    by_name = {s.name: s for s in sequences}
    if which in by_name:
        return by_name[which]
    if which.isdigit() and int(which) < len(sequences):
        return sequences[int(which)]
    names = ", ".join(list(by_name)[:10]) + (", ..." if len(by_name) > 10 else "")
    raise ApplianceError(
        f"{path} has no sequence {which!r}; it holds {len(sequences)}: {names} "
        f"(give a name or a position from 0 to {len(sequences) - 1})"
    )


def _make_parent(out: Path) -> None:
    """Create the folder an output file goes into, or say clearly why it cannot be."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ApplianceError(f"cannot create the folder for {out}: {exc.strerror or exc}") from None
    if out.is_dir():
        raise ApplianceError(f"{out} is a folder; give a file name")


def cmd_maps(args: argparse.Namespace) -> int:
    """Draw a keypoint file's skeleton maps as a contact sheet PNG (what the model will see), each
    tile titled with its frame number (matplotlib: the [render] extra)."""
    from appliance.cli.render import draw_map_sheet
    from appliance.features.skeleton_map import MapSpec, render_keypoints
    from appliance.keypoints.readers import read_keypoints

    spec = MapSpec()
    sequences = read_keypoints(args.keypoints)
    seq = _pick_sequence(args.keypoints, sequences, args.sequence)
    maps = render_keypoints(seq.keypoints, seq.layout, (seq.width, seq.height), spec)
    picks = np.linspace(0, len(maps) - 1, min(args.frames, len(maps))).astype(int)
    size = f"{spec.map_size}x{spec.map_size}"
    title = f"{seq.name}: skeleton maps ({size}, neck-centred), {len(picks)} of {len(maps)} frames"
    fig = draw_map_sheet(maps, picks, title, args.zoom)
    _make_parent(args.out)
    try:
        fig.savefig(args.out)
    except (OSError, ValueError) as exc:
        raise ApplianceError(f"could not write {args.out}: {exc}") from None
    print(
        f"{seq.name}: {len(maps)} frames ({seq.layout.name}, {seq.width}x{seq.height}); "
        f"{len(picks)} maps written to {args.out}"
    )
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    """Per-frame anomaly scores of a keypoint file with a model bundle (no torch)."""
    import csv

    from appliance.features.window import window_scores_to_frames
    from appliance.keypoints.readers import read_keypoints
    from appliance.models.bundle import open_bundle
    from appliance.models.metrics import auroc
    from appliance.models.sequence import at_model_rate, sequence_window_scores

    if args.out:
        _make_parent(args.out)  # before the scoring, not after it
    bundle = open_bundle(args.bundle)
    runtime, variant = bundle.open(args.runtime, args.variant, args.threads)
    window = bundle.contract.window
    sequences = read_keypoints(args.keypoints)
    if args.only:
        unknown = sorted(set(args.only) - {s.name for s in sequences})
        if unknown:
            raise ApplianceError(f"{args.keypoints} has no sequence(s) {', '.join(unknown)}")
        sequences = [s for s in sequences if s.name in set(args.only)]
    model_fps = bundle.contract.fps
    thinned = [at_model_rate(s, model_fps) for s in sequences]  # the daemon's time base
    resampled = {s.fps for s, t in zip(sequences, thinned, strict=True) if t is not s}
    sequences = thinned
    if resampled:
        rates = ", ".join(f"{r:g}" for r in sorted(resampled))
        print(
            f"scored at the model's {model_fps:g} fps (the file's {rates} fps thinned as a camera's would be)"
        )
    if args.by_label and all(seq.labels is None for seq in sequences):
        raise ApplianceError(
            f"--by-label needs per-frame labels, and {args.keypoints} has none "
            "(a label column: 0 normal, 1, 2, ... anomaly classes)"
        )
    rows, all_scores, all_labels = [], [], []
    for seq in sequences:
        scores = window_scores_to_frames(sequence_window_scores(bundle, runtime, seq), len(seq), window)
        labels = seq.labels if seq.labels is not None else np.full(len(seq), -1)
        rows += [
            (seq.name, int(f), s, int(lab)) for f, s, lab in zip(seq.frames, scores, labels, strict=True)
        ]
        if seq.labels is not None:
            all_scores.append(scores)
            all_labels.append(seq.labels)
    short = sum(1 for seq in sequences if len(seq) < window)
    note = f"; {short} shorter than the {window}-frame window have no score" if short else ""
    where = f"{bundle.name} ({variant} on {runtime.name})"
    print(f"{where}: {len(rows)} frames of {len(sequences)} sequences scored{note}")
    if all_scores:
        s, y = np.concatenate(all_scores), np.concatenate(all_labels)
        keep = np.isfinite(s)
        print(f"frame-level AUROC against the file's labels: {auroc(s[keep], y[keep] > 0):.4f}")
        if args.by_label:  # each anomaly label's frames against the normal (label 0) frames alone
            s, y = s[keep], y[keep]
            print(f"AUROC per label (its frames against the {int((y == 0).sum())} normal frames):")
            for label in sorted(set(y.tolist()) - {0}):
                pick = (y == label) | (y == 0)
                value = auroc(s[pick], y[pick] == label)
                shown = f"{value:.4f}" if np.isfinite(value) else "n/a (no normal frames)"
                print(f"  label {label}: {shown} ({int((y == label).sum())} frames)")
    if args.out:
        try:
            with args.out.open("w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(["sequence", "frame", "score", "label"])
                for name, frame, score, label in rows:
                    w.writerow(
                        [
                            name,
                            frame,
                            "" if not np.isfinite(score) else f"{score:.6g}",
                            "" if label < 0 else label,
                        ]
                    )
        except OSError as exc:
            raise ApplianceError(f"cannot write {args.out}: {exc.strerror or exc}") from None
        print(f"scores written to {args.out}")
    return 0


def cmd_extract(args: argparse.Namespace) -> int:
    """Skeletons of a video, tracked per person, to a keypoint CSV (training or calibration data)."""
    from appliance.config import BlazePoseConfig
    from appliance.keypoints.table import write_keypoints_csv
    from appliance.pose.extract import extract_tracks
    from appliance.pose.registry import create_backend

    if args.min_track_frames < 1:
        raise ApplianceError(f"--min-track-frames must be at least 1, not {args.min_track_frames}")
    backend = create_backend(BlazePoseConfig())
    sequences = extract_tracks(
        args.video, backend, start=args.start, frames=args.frames, min_length=args.min_track_frames
    )
    if not sequences:
        raise ApplianceError(f"{args.video}: no person was tracked for {args.min_track_frames} frames")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_keypoints_csv(args.out, sequences)
    frames = sum(len(s) for s in sequences)
    print(
        f"{len(sequences)} tracks of at least {args.min_track_frames} frames, {frames} skeleton frames "
        f"written to {args.out}"
    )
    if args.min_track_frames < 30:
        print("note: tracks shorter than a model's window (30 frames in the shipped bundles) go unscored")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register this module's subcommands."""
    p = sub.add_parser("maps", help="render a keypoint file's skeleton maps to a PNG contact sheet")
    p.add_argument("--keypoints", type=Path, required=True, help="keypoint file or OpenPose JSON folder")
    p.add_argument("--out", type=Path, required=True, help="PNG to write")
    p.add_argument(
        "--sequence",
        default="0",
        metavar="NAME|N",
        help="which sequence (video/track) of the file: its name, as `score --only` takes it, or its "
        "0-based position (default: the first)",
    )
    p.add_argument("--frames", type=int, default=30, help="how many frames, evenly spaced")
    p.add_argument("--zoom", type=int, default=4)
    p.set_defaults(func=cmd_maps)

    p = sub.add_parser("score", help="per-frame anomaly scores of a keypoint file with a model bundle")
    p.add_argument("--bundle", type=Path, required=True, help="bundle directory or .tar")
    p.add_argument("--keypoints", type=Path, required=True, help="keypoint file or OpenPose JSON folder")
    p.add_argument("--out", type=Path, help="CSV of sequence, frame, score, label")
    p.add_argument(
        "--runtime", choices=("auto", *RUNTIMES), default="auto", help="default: as the daemon chooses"
    )
    p.add_argument("--variant", help="bundle variant (default: int8 if the bundle has it for the runtime)")
    p.add_argument("--threads", type=int, default=1, help="inference threads")
    p.add_argument("--only", nargs="+", metavar="NAME", help="score only these sequences (videos/tracks)")
    p.add_argument(
        "--by-label", action="store_true",
        help="also print the AUROC of each anomaly label (its frames against the normal frames)",
    )  # fmt: skip
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("extract", help="skeletons of a video file, tracked per person, to a keypoint CSV")
    p.add_argument("--video", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="keypoint CSV to write")
    p.add_argument("--start", type=int, default=0, help="first frame")
    p.add_argument("--frames", type=int, help="how many frames (default: to the end)")
    p.add_argument(
        "--min-track-frames", type=int, default=30, metavar="N",
        help="drop tracks seen in fewer than N frames (default 30, a model's window: shorter ones are "
        "never scored)",
    )  # fmt: skip
    p.set_defaults(func=cmd_extract)
