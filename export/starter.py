"""The starter bundles shipped with the appliance: models of people walking, from real footage.

The default (``--model fused``, ``starter-walking-fused``) joins the paper's LSTM-VAE
(``starter-walking-lstm-vae``, ``--model lstm_vae``) and the posture-motion model
(``--model posture_motion``) fitted on the same skeletons, in one bundle (:mod:`appliance.models.fused`).

Built from OpenCV's ``vtest.avi`` sample (real CCTV of a walkway, elevated camera; shippable, unlike
the research sets), frames 0-599, with the appliance's own pose backend and tracker, so the model
sees exactly the skeletons the device will draw. Tracks are split in time: frames 0-499 train,
500-599 validate (the bundle's default threshold and the parity check); the demo clip is frames
600-794, which the model never saw. It is a starting point that makes the product work out of the
box; a site trains on its own normal work (``appliance extract`` + ``appliance-export train``).

    appliance-export starter --video DATA/cctv-walking/vtest.avi
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from appliance.config import BlazePoseConfig
from appliance.features.skeleton_map import MapSpec
from appliance.keypoints.sequence import KeypointSequence
from appliance.keypoints.table import write_keypoints_csv
from appliance.pose.extract import extract_tracks
from appliance.pose.registry import create_backend
from export.bundle import build_bundle
from export.datasets import learning_fps, render_sequences
from export.models import ModelConfig
from export.train import TrainConfig, save_checkpoint, train_model

NAME = "starter-walking-lstm-vae"
POSTURE_MOTION_NAME = "starter-walking-posture-motion"
FUSED_NAME = "starter-walking-fused"
LSTM_VERSION = "1.2.0"  # 1.1: records its learning rate (10 fps); 1.2: a LiteRT int8 variant
POSTURE_MOTION_VERSION = FUSED_VERSION = "2.2.0"  # 2.2: a LiteRT int8 variant (the device's default runtime)
# onnx-fp32 is the reference every variant's parity is checked against; tflite-int8 is what a device runs
# by default (LiteRT is also the pose runtime, so a device needs no second inference runtime)
VARIANTS = ["onnx-fp32", "onnx-int8", "tflite-int8"]
EVALUATION = "validation (frames 500-599: no held-out test footage)"  # what the parity gate scores
LSTM_STARTER = Path(__file__).resolve().parents[1] / "appliance" / "assets" / "starter-walking-lstm-vae.tar"


def split_in_time(seqs: list[KeypointSequence], boundary: int, min_len: int) -> tuple[list, list]:
    """Each track's frames before ``boundary`` train, the rest validate; pieces shorter than a window go."""
    train, val = [], []
    for s in seqs:
        before = np.flatnonzero(s.frames < boundary)
        after = np.flatnonzero(s.frames >= boundary)
        if len(before) >= min_len:
            train.append(s.slice(0, len(before), f"{s.name}/train"))
        if len(after) >= min_len:
            val.append(s.slice(int(after[0]), len(s), f"{s.name}/val"))
    return train, val


def build_starter(
    video: Path,
    out_tar: Path,
    work: Path,
    frames: int = 600,
    boundary: int = 500,
    epochs: int = 30,
    seed: int = 0,
    model: str = "fused",
    skeletons: Path | None = None,
    map_bundle: Path = LSTM_STARTER,
) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    if skeletons is not None:  # skeletons an earlier run extracted (the pose stage takes minutes)
        from appliance.keypoints.readers import read_keypoints

        seqs = read_keypoints(skeletons)
    else:
        seqs = extract_tracks(video, create_backend(BlazePoseConfig()), frames=frames, name="vtest")
        write_keypoints_csv(work / "vtest-skeletons.csv", seqs)
    train_seqs, val_seqs = split_in_time(seqs, boundary, 30)
    print(
        f"{len(seqs)} tracks from frames 0-{frames - 1}: {sum(map(len, train_seqs))} training frames "
        f"({len(train_seqs)} pieces), {sum(map(len, val_seqs))} validation frames ({len(val_seqs)} pieces)"
    )
    if model == "posture_motion":
        return _posture_motion_starter(train_seqs, val_seqs, out_tar, video, frames)
    if model == "fused":
        return _fused_starter(train_seqs, val_seqs, out_tar, video, frames, map_bundle)
    spec = MapSpec()
    train, val = render_sequences(train_seqs, spec), render_sequences(val_seqs, spec)
    result = train_model(ModelConfig(), TrainConfig(epochs=epochs, seed=seed), train, val, description=NAME)
    extra = {"source": f"{video.name} frames 0-{frames - 1}", "pose": "blazepose", "boundary": boundary}
    ckpt_path = save_checkpoint(work / f"{NAME}.pt", result, spec, extra)
    ckpt = torch.load(ckpt_path, weights_only=True)
    with tempfile.TemporaryDirectory() as tmp:
        bundle_dir = Path(tmp) / NAME
        build_bundle(
            result.model,
            ckpt,
            val,
            val,
            train,
            bundle_dir,
            NAME,
            LSTM_VERSION,
            VARIANTS,
            "vtest-walking",
            evaluation_split=EVALUATION,
            fps=learning_fps(train_seqs),
        )
        out_tar.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(bundle_dir.with_suffix(".tar"), out_tar)
    print(f"starter bundle written to {out_tar} ({out_tar.stat().st_size // 1024} KiB)")
    return out_tar


def _posture_motion_starter(
    train_seqs, val_seqs, out_tar: Path, video: Path, frames: int, name: str = POSTURE_MOTION_NAME
) -> Path:
    from export.motion_eval import feature_sequences, normal_windows
    from export.posture_motion import fit_posture_motion
    from export.posture_motion_bundle import build_posture_motion_bundle

    train, val = feature_sequences(train_seqs), feature_sequences(val_seqs)
    model, info = fit_posture_motion(normal_windows(train), normal_windows(val))
    info["source"] = f"{video.name} frames 0-{frames - 1}, blazepose"
    with tempfile.TemporaryDirectory() as tmp:
        bundle_dir = Path(tmp) / name
        build_posture_motion_bundle(
            model, info, train, val, val, bundle_dir, name, POSTURE_MOTION_VERSION, "vtest-walking",
            evaluation_split=EVALUATION, fps=learning_fps(train_seqs), variants=VARIANTS,
        )  # fmt: skip
        out_tar.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(bundle_dir.with_suffix(".tar"), out_tar)
    print(f"starter bundle written to {out_tar} ({out_tar.stat().st_size // 1024} KiB)")
    return out_tar


def _fused_starter(train_seqs, val_seqs, out_tar: Path, video: Path, frames: int, map_bundle: Path) -> Path:
    from appliance.models.bundle import open_bundle
    from export.fused_bundle import FusedSequence, build_fused_bundle
    from export.motion_eval import feature_sequences

    with tempfile.TemporaryDirectory() as tmp:
        motion_tar = _posture_motion_starter(
            train_seqs, val_seqs, Path(tmp) / f"{POSTURE_MOTION_NAME}.tar", video, frames
        )
        spec = open_bundle(map_bundle).contract.map_spec
        val = [
            FusedSequence(r.name, r.maps, f.raw, f.labels)
            for r, f in zip(render_sequences(val_seqs, spec), feature_sequences(val_seqs), strict=True)
        ]
        bundle_dir = Path(tmp) / FUSED_NAME
        build_fused_bundle(
            map_bundle, motion_tar, val, val, bundle_dir, FUSED_NAME, FUSED_VERSION, "vtest-walking",
            evaluation_split=EVALUATION,
        )  # fmt: skip
        out_tar.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(bundle_dir.with_suffix(".tar"), out_tar)
    print(f"starter bundle written to {out_tar} ({out_tar.stat().st_size // 1024} KiB)")
    return out_tar
