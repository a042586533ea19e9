"""Where inference runs: the CPU, or an accelerator where one is installed, with a CPU fallback that
says so in the log.

- ``cuda`` and ``tensorrt``: onnxruntime's CUDA and TensorRT execution providers (the
  ``onnxruntime-gpu`` wheel on a discrete GPU, NVIDIA's onnxruntime build on a Jetson);
- ``litert-gpu``: a LiteRT GPU delegate library (``libtensorflowlite_gpu_delegate.so``, built for
  the device; the PyPI wheel of LiteRT has none);
- ``cpu``: onnxruntime's CPU provider, LiteRT's XNNPACK.

An accelerator that is asked for but not there never stops the appliance: the model runs on the CPU
and one warning names what was missing. :func:`onnx_device` and :func:`litert_interpreter` say where a
model really runs (onnxruntime falls back by itself when the CUDA libraries do not load).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.errors import ApplianceError

log = logging.getLogger("appliance.accelerators")

ACCELERATORS = ("cpu", "cuda", "tensorrt", "litert-gpu")
CPU_PROVIDER = "CPUExecutionProvider"
ONNX_PROVIDERS = {
    "cpu": [CPU_PROVIDER],
    "cuda": ["CUDAExecutionProvider", CPU_PROVIDER],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", CPU_PROVIDER],
}
_DEVICE_OF_PROVIDER = {"CUDAExecutionProvider": "cuda", "TensorrtExecutionProvider": "tensorrt"}


@dataclass(frozen=True)
class Accelerator:
    """Where a stage's models should run: ``kind`` is one of :data:`ACCELERATORS`; ``gpu_delegate`` is
    the LiteRT GPU delegate library ``litert-gpu`` loads."""

    kind: str = "cpu"
    gpu_delegate: Path | None = None


CPU = Accelerator()


def onnx_session(path: Path, threads: int = 1, accelerator: Accelerator = CPU, what: str = "model") -> Any:
    """An onnxruntime session on ``accelerator``'s providers where this onnxruntime has them, else on
    the CPU (logged once per session). ``what`` names the model in the log line."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ApplianceError(
            f"{what}: this model needs onnxruntime, which this install lacks "
            "(pip install 'ceiling-appliance[onnx]', or use LiteRT: runtime 'tflite')"
        ) from None

    kind = accelerator.kind
    if kind not in ONNX_PROVIDERS:
        raise ApplianceError(f"{what}: accelerator {kind!r} is not one onnxruntime runs on")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # onnxruntime's own fallback warnings: our one line below says it
    available = ort.get_available_providers()
    providers = [p for p in ONNX_PROVIDERS[kind] if p in available]
    if kind != "cpu" and providers == [CPU_PROVIDER]:
        log.warning(
            "%s: accelerator %r asked for, but this onnxruntime has only %s (install onnxruntime-gpu "
            "with the CUDA libraries); running on the CPU",
            what, kind, ", ".join(available),
        )  # fmt: skip
    try:
        session = ort.InferenceSession(str(path), opts, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types for bad models
        raise ApplianceError(f"{what}: onnxruntime cannot load {Path(path).name}: {exc}") from None
    if kind != "cpu" and providers != [CPU_PROVIDER] and onnx_device(session) == "cpu":
        log.warning(
            "%s: onnxruntime could not start %s (driver or CUDA libraries missing); running on the CPU",
            what, providers[0],
        )  # fmt: skip
    return session


def onnx_device(session: Any) -> str:
    """Where an onnxruntime session runs: ``cpu``, ``cuda`` or ``tensorrt``."""
    return _DEVICE_OF_PROVIDER.get(session.get_providers()[0], "cpu")


def litert_interpreter_class() -> Any:
    """LiteRT's interpreter class (ai-edge-litert, or tflite-runtime where only it exists)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            raise ApplianceError(
                "LiteRT is not installed: pip install ai-edge-litert (it comes with the appliance; "
                "a broken install lacks it)"
            ) from None
    return Interpreter


def _load_delegate(library: Path) -> Any:
    import ctypes

    # a library that is not a LiteRT delegate is refused here: LiteRT's own loader leaves a half-made
    # delegate behind whose clean-up prints a traceback
    if not hasattr(ctypes.CDLL(str(library)), "tflite_plugin_create_delegate"):
        raise ValueError(f"{library} is not a LiteRT delegate library (no tflite_plugin_create_delegate)")
    try:
        from ai_edge_litert.interpreter import load_delegate
    except ImportError:
        from tflite_runtime.interpreter import load_delegate
    return load_delegate(str(library))


def litert_interpreter(
    path: Path, threads: int = 1, accelerator: Accelerator = CPU, what: str = "model"
) -> tuple[Any, str]:
    """A LiteRT interpreter with tensors allocated, and where it runs (``litert-gpu`` or ``cpu``): on
    the GPU delegate ``accelerator.gpu_delegate`` when its kind is ``litert-gpu`` and the delegate loads
    and takes the graph, else on the CPU (logged). Raises ApplianceError for a model LiteRT cannot
    read."""
    interpreter_cls = litert_interpreter_class()
    kind, gpu_delegate = accelerator.kind, accelerator.gpu_delegate
    if kind not in ("cpu", "litert-gpu"):
        raise ApplianceError(f"{what}: accelerator {kind!r} is not one LiteRT runs on")
    if kind == "litert-gpu":
        try:
            if gpu_delegate is None:
                raise ValueError("no delegate library configured (gpu_delegate)")
            interp = interpreter_cls(
                model_path=str(path),
                num_threads=threads,
                experimental_delegates=[_load_delegate(gpu_delegate)],
            )
            interp.allocate_tensors()
            return interp, "litert-gpu"
        except (ValueError, RuntimeError, OSError) as exc:
            log.warning("%s: the LiteRT GPU delegate did not start (%s); running on the CPU", what, exc)
    try:
        interp = interpreter_cls(model_path=str(path), num_threads=threads)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ApplianceError(f"{what}: LiteRT cannot load {Path(path).name}: {exc}") from None
    return interp, "cpu"
