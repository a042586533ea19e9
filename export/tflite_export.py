"""TFLite variants of the scorer graphs, converted with litert-torch (no TensorFlow), run by LiteRT.

- ``tflite-fp32``: frame encoder and sequence graph in fp32.
- ``tflite-int8``: the sequence graph with int8 weights and dynamically quantised activations (PT2E
  dynamic quantisation, which also quantises the unrolled LSTMs); the frame encoder stays fp32,
  because int8 made that 0.35 M-MAC network slower on LiteRT (measured 0.020 vs 0.009 ms/frame).

litert-torch 0.10 cannot convert a dynamic batch axis, so the graphs take a batch of one; the
appliance's TFLite runtime scores batches item by item. Needs ``pip install '.[export,tflite-export]'``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import torch

from appliance.errors import ApplianceError
from export.models import LSTMVAE
from export.onnx_export import FrameEncoderGraph, SequenceScoreGraph


def _litert():
    try:
        import litert_torch
    except ImportError:
        raise ApplianceError(
            "TFLite variants need litert-torch: pip install -e '.[export,tflite-export]'"
        ) from None
    return litert_torch


@contextlib.contextmanager
def _quiet():
    """The converter prints progress and harmless warnings by the hundred; keep the console readable."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        level = logging.root.level
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(level)


def _sample_inputs(model: LSTMVAE) -> dict[str, tuple[torch.Tensor, ...]]:
    cfg = model.cfg
    s, t, f = cfg.map_size, cfg.window, cfg.frame_features
    return {
        "frame_encoder": (torch.zeros(1, s, s),),
        "sequence": (torch.zeros(1, t, f), torch.zeros(1, t, s, s)),
    }


def convert_fp32(module: torch.nn.Module, sample: tuple[torch.Tensor, ...], path: Path) -> Path:
    litert_torch = _litert()
    with _quiet():
        litert_torch.convert(module.eval(), sample).export(str(path))
    return path


def convert_dynamic_int8(
    module: torch.nn.Module,
    sample: tuple[torch.Tensor, ...],
    path: Path,
    calibration: list[tuple] | None = None,
) -> Path:
    """int8 weights, activations quantised at run time (PT2E, per-channel symmetric)."""
    litert_torch = _litert()
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = PT2EQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True)
    )
    with _quiet():
        graph = torch.export.export(module.eval(), sample).module()
        graph = prepare_pt2e(graph, quantizer)
        for args in calibration or [sample]:
            graph(*args)
        graph = convert_pt2e(graph, fold_quantize=False)
        litert_torch.convert(graph, sample, quant_config=QuantConfig(pt2e_quantizer=quantizer)).export(
            str(path)
        )
    return path


def export_tflite(model: LSTMVAE, out_dir: str | Path, int8: bool = True) -> dict[str, Path]:
    """Write ``fp32/{frame_encoder,sequence}.tflite`` and, with ``int8``, ``int8/sequence.tflite``."""
    out_dir = Path(out_dir)
    (out_dir / "fp32").mkdir(parents=True, exist_ok=True)
    model.eval()
    samples = _sample_inputs(model)
    encoder = FrameEncoderGraph(model).eval()
    sequence = SequenceScoreGraph(model).eval()
    paths = {
        "fp32/frame_encoder": convert_fp32(
            encoder, samples["frame_encoder"], out_dir / "fp32" / "frame_encoder.tflite"
        ),
        "fp32/sequence": convert_fp32(sequence, samples["sequence"], out_dir / "fp32" / "sequence.tflite"),
    }
    if int8:
        (out_dir / "int8").mkdir(exist_ok=True)
        paths["int8/sequence"] = convert_dynamic_int8(
            sequence, samples["sequence"], out_dir / "int8" / "sequence.tflite"
        )
    return paths
