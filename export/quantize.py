"""int8 variants of the exported graphs with onnxruntime's quantisation tools.

- Sequence graph: dynamic int8 (weights int8, activations quantised on the fly). This covers the LSTMs
  (DynamicQuantizeLSTM) and the fully connected layers; ConvTranspose has no dynamic kernel and
  stays fp32.
- Frame encoder: static int8 in QDQ format, activation ranges calibrated on real normal maps, so the
  convolutions run as int8 (static QDQ would leave the LSTMs fp32, hence the split).
fp16 is not produced: CPU execution providers compute fp16 by upcasting, so it only saves disk.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np


def _preprocessed(src: Path, tmp: Path) -> Path:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = tmp / f"{src.stem}.pre.onnx"
    quant_pre_process(str(src), str(out), skip_symbolic_shape=True)
    return out


def quantize_sequence_dynamic(src: Path, dst: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        quantize_dynamic(str(_preprocessed(src, Path(tmp))), str(dst), weight_type=QuantType.QInt8)
    return dst


class _MapsReader:
    """Calibration data for the frame encoder: batches of real normal skeleton maps."""

    def __init__(self, maps: np.ndarray, batch: int = 64) -> None:
        self._batches = iter([maps[i : i + batch].astype(np.float32) for i in range(0, len(maps), batch)])

    def get_next(self) -> dict | None:
        batch = next(self._batches, None)
        return None if batch is None else {"maps": batch}

    def rewind(self) -> None:  # pragma: no cover - required by older onnxruntime readers
        pass


def quantize_encoder_static(src: Path, dst: Path, calibration_maps: np.ndarray) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    reader = type("MapsReader", (_MapsReader, CalibrationDataReader), {})(calibration_maps)
    with tempfile.TemporaryDirectory() as tmp:
        quantize_static(
            str(_preprocessed(src, Path(tmp))),
            str(dst),
            reader,
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
        )
    return dst
