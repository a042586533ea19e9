"""``appliance-export pose-onnx``: the BlazePose landmark models in ONNX, for accelerators.

onnxruntime's CUDA and TensorRT execution providers run ONNX, and the landmark model is a TFLite
graph. This converts the installed, SHA-256-checked TFLite landmark models with tf2onnx (in the
converter's own environment, :mod:`export.pose_onnx_convert`), checks every converted model
against LiteRT on frames of the bundled demo clip, and writes the ONNX file with a record beside it
(``pose_landmark_<model>.onnx.json``: the source model's SHA-256, the ONNX file's, the converter's
versions and the parity measured). The appliance loads the ONNX model only when that record names
the TFLite model it pins and the file's SHA-256 matches (:func:`appliance.pose.model_files.find_model_files`).

The detector is not converted: its sparse weights do not convert (tf2onnx fails on them); it stays
on LiteRT, where it runs once every ``detect_interval`` frames.

    make pose-onnx        # the converter's environment (.venv-pose-onnx) and this command
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import cv2
import numpy as np

from appliance.capture.sources import read_video_frames
from appliance.errors import ApplianceError
from appliance.models.bundle import sha256_file
from appliance.pose.blazepose_landmarks import (
    CROP_SIZE,
    NUM_JOINTS,
    NUM_POINTS,
    LiteRTLandmarkGraph,
    OnnxLandmarkGraph,
)
from appliance.pose.model_files import LANDMARK_MODELS, default_model_dir, find_model_files, onnx_record_path
from appliance.service.demo import WORKCELL_CLIP
from appliance.storage import write_atomic

CONVERTER = Path(__file__).with_name("pose_onnx_convert.py")
OPSET = 13
PARITY_FRAMES = 12
MAX_XY_PX = 0.01  # joints, in 256-pixel crop coordinates (measured 0.0005 px)
MAX_FLAG = 1e-4  # the pose-present probability (measured 3e-7)


def parity_crops(clip: Path = WORKCELL_CLIP, n: int = PARITY_FRAMES) -> list[np.ndarray]:
    """``n`` frames of a real clip of one person filling the frame, as landmark model inputs."""
    frames = read_video_frames(clip)
    if not frames:
        raise ApplianceError(f"{clip}: no frames to check the conversion on")
    picks = np.linspace(0, len(frames) - 1, n).astype(int)
    return [
        (cv2.cvtColor(cv2.resize(frames[i], (CROP_SIZE, CROP_SIZE)), cv2.COLOR_BGR2RGB) / 255.0).astype(
            np.float32
        )[None]
        for i in picks
    ]


def parity(tflite: Path, onnx: Path, crops: list[np.ndarray]) -> dict[str, float]:
    """Largest joint (x, y) and pose-flag differences between LiteRT and onnxruntime on ``crops``."""
    from appliance.accelerators import CPU

    lite, ort = LiteRTLandmarkGraph(tflite, 1, CPU), OnnxLandmarkGraph(onnx, 1, CPU)
    xy = flag = 0.0
    for crop in crops:
        (a, fa, _), (b, fb, _) = lite.run(crop), ort.run(crop)
        a, b = a.reshape(NUM_POINTS, 5)[:NUM_JOINTS, :2], b.reshape(NUM_POINTS, 5)[:NUM_JOINTS, :2]
        xy = max(xy, float(np.abs(a - b).max()))
        flag = max(flag, float(np.abs(fa - fb).max()))
    return {"max_xy_px": xy, "max_flag": flag, "crops": len(crops)}


def converter_versions(python: str) -> dict[str, str]:
    code = "import json, tf2onnx, tensorflow, onnx; print(json.dumps({'tf2onnx': tf2onnx.__version__, "
    code += "'tensorflow': tensorflow.__version__, 'onnx': onnx.__version__}))"
    out = subprocess.run(
        [python, "-c", code], capture_output=True, text=True, env={"TF_CPP_MIN_LOG_LEVEL": "3"}
    )
    if out.returncode != 0:
        raise ApplianceError(
            f"{python} cannot run the converter (tf2onnx and TensorFlow): create its environment with "
            "`make pose-onnx` or pip install -r export/pose-onnx-requirements.txt"
        )
    return json.loads(out.stdout.strip().splitlines()[-1])


def convert_landmarks(
    python: str, landmarks: list[str], model_dir: Path | None = None, log=print
) -> list[Path]:
    """Convert, check and install each of ``landmarks`` (``full``, ``lite``); returns the ONNX paths."""
    model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
    versions = converter_versions(python)
    crops = parity_crops()
    written = []
    for landmark in landmarks:
        _, tflite = find_model_files(model_dir, landmark)
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "landmark.onnx"
            done = subprocess.run(
                [python, str(CONVERTER), str(tflite), str(raw), "--opset", str(OPSET)],
                capture_output=True, text=True,
            )  # fmt: skip
            if done.returncode != 0:
                raise ApplianceError(f"converting {tflite.name} failed: {done.stderr.strip()[-2000:]}")
            checked = parity(tflite, raw, crops)
            if checked["max_xy_px"] > MAX_XY_PX or checked["max_flag"] > MAX_FLAG:
                raise ApplianceError(
                    f"{tflite.name}: the ONNX conversion differs from LiteRT by "
                    f"{checked['max_xy_px']:.4f} px (flag {checked['max_flag']:.2g}); the limits are "
                    f"{MAX_XY_PX} px and {MAX_FLAG}: not installed"
                )
            out = model_dir / tflite.with_suffix(".onnx").name
            write_atomic(out, raw.read_bytes())
        record = {
            "source": tflite.name,
            "source_sha256": LANDMARK_MODELS[landmark].sha256,
            "sha256": sha256_file(out),
            "size": out.stat().st_size,
            "converter": {**versions, "opset": OPSET},
            "parity_vs_litert": checked,
        }
        write_atomic(onnx_record_path(out), (json.dumps(record, indent=2) + "\n").encode())
        log(
            f"{out.name}: {record['size'] / 1e6:.1f} MB, SHA-256 {record['sha256'][:16]}..., "
            f"within {checked['max_xy_px']:.4f} px of LiteRT on {checked['crops']} frames"
        )
        written.append(out)
    return written
