"""Inference runtimes for the exported scorer graphs (no torch): onnxruntime and LiteRT (TFLite).

Each LSTM-VAE runtime runs the two graphs of a bundle variant: ``encode`` (maps -> per-frame
features) and ``score`` (a window's features and maps -> anomaly score). A window runtime runs the
one graph of a posture-motion variant (a window of body features -> score), on either runtime.
Both import lazily; :mod:`appliance.accelerators` decides where each graph runs (CPU, or an
accelerator where installed) and every runtime says where it ended up (``device``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from appliance.accelerators import CPU, Accelerator, litert_interpreter, onnx_device, onnx_session
from appliance.errors import ApplianceError

RUNTIMES = ("onnxruntime", "tflite")
_MODULES = {"onnxruntime": ("onnxruntime",), "tflite": ("ai_edge_litert", "tflite_runtime")}


def runtime_installed(runtime: str) -> bool:
    """Whether this device has ``runtime`` (found, not imported: importing costs memory). A module
    set to None in ``sys.modules`` counts as absent, as ``import`` treats it."""
    import importlib.util
    import sys

    for module in _MODULES.get(runtime, ()):
        if module in sys.modules:
            if sys.modules[module] is not None:
                return True
        elif importlib.util.find_spec(module) is not None:
            return True
    return False


class RuntimeUnavailable(ApplianceError):
    """The configured runtime is not installed on this device."""


class ScoringRuntime(Protocol):
    name: str
    device: str  # where the graphs run: cpu, cuda, tensorrt or litert-gpu

    def encode(self, maps: np.ndarray) -> np.ndarray:
        """(B, S, S) float32 maps -> (B, F) features."""

    def score(self, features: np.ndarray, maps: np.ndarray) -> np.ndarray:
        """(B, T, F) features and (B, T, S, S) maps -> (B,) scores."""


class OnnxScoringRuntime:
    """onnxruntime sessions; ``threads`` bounds intra-op threads (the appliance shares its cores)."""

    name = "onnxruntime"

    def __init__(
        self, encoder: Path, sequence: Path, threads: int = 1, accelerator: Accelerator = CPU
    ) -> None:
        self._encoder = onnx_session(encoder, threads, accelerator, "scorer")
        self._sequence = onnx_session(sequence, threads, accelerator, "scorer")
        self.device = onnx_device(self._sequence)

    def input_shapes(self) -> dict[str, list]:
        return {i.name: i.shape for s in (self._encoder, self._sequence) for i in s.get_inputs()}

    def encode(self, maps: np.ndarray) -> np.ndarray:
        return self._encoder.run(None, {"maps": maps})[0]

    def score(self, features: np.ndarray, maps: np.ndarray) -> np.ndarray:
        return self._sequence.run(None, {"features": features, "maps": maps})[0]


class TfliteScoringRuntime:
    """LiteRT interpreters (ai-edge-litert, or tflite-runtime where only it exists).

    TFLite graphs have a fixed batch of 1, so batches are scored one item at a time.
    """

    name = "tflite"

    def __init__(
        self, encoder: Path, sequence: Path, threads: int = 1, accelerator: Accelerator = CPU
    ) -> None:
        self._encoder, _ = litert_interpreter(encoder, threads, accelerator, "scorer")
        self._sequence, self.device = litert_interpreter(sequence, threads, accelerator, "scorer")
        self._enc_in = self._encoder.get_input_details()[0]["index"]
        self._enc_out = self._encoder.get_output_details()[0]["index"]
        inputs = self._sequence.get_input_details()
        by_rank = {len(d["shape"]): d["index"] for d in inputs}  # features are rank 3, maps rank 4
        self._seq_features, self._seq_maps = by_rank[3], by_rank[4]
        self._seq_out = self._sequence.get_output_details()[0]["index"]

    def input_shapes(self) -> dict[str, list]:
        seq = {len(d["shape"]): list(d["shape"]) for d in self._sequence.get_input_details()}
        return {"maps": list(self._encoder.get_input_details()[0]["shape"]), "features": seq[3]}

    def encode(self, maps: np.ndarray) -> np.ndarray:
        out = []
        for m in maps:
            self._encoder.set_tensor(self._enc_in, np.ascontiguousarray(m[None], dtype=np.float32))
            self._encoder.invoke()
            out.append(self._encoder.get_tensor(self._enc_out)[0].copy())
        return np.stack(out)

    def score(self, features: np.ndarray, maps: np.ndarray) -> np.ndarray:
        out = np.empty(len(features), dtype=np.float32)
        for i in range(len(features)):
            self._sequence.set_tensor(
                self._seq_features, np.ascontiguousarray(features[i : i + 1], dtype=np.float32)
            )
            self._sequence.set_tensor(self._seq_maps, np.ascontiguousarray(maps[i : i + 1], dtype=np.float32))
            self._sequence.invoke()
            out[i] = self._sequence.get_tensor(self._seq_out).reshape(-1)[0]
        return out


class WindowRuntime(Protocol):
    name: str
    device: str

    def score_windows(self, windows: np.ndarray) -> np.ndarray:
        """(B, T, F) float32 feature windows -> (B,) scores."""


class OnnxWindowRuntime:
    """One onnxruntime session scoring whole windows; one window per run, as measured for parity
    (dynamically quantised graphs quantise activations per call, so a batch would change scores)."""

    name = "onnxruntime"

    def __init__(self, model: Path, threads: int = 1, accelerator: Accelerator = CPU) -> None:
        self._session = onnx_session(model, threads, accelerator, "scorer")
        self.device = onnx_device(self._session)
        self._input = self._session.get_inputs()[0].name

    def input_shapes(self) -> dict[str, list]:
        return {"window": self._session.get_inputs()[0].shape}

    def score_windows(self, windows: np.ndarray) -> np.ndarray:
        windows = np.ascontiguousarray(windows, dtype=np.float32)
        return np.array(
            [self._session.run(None, {self._input: windows[i : i + 1]})[0][0] for i in range(len(windows))],
            dtype=np.float32,
        )


class TfliteWindowRuntime:
    """One LiteRT interpreter scoring whole windows (a TFLite graph takes one window per call)."""

    name = "tflite"

    def __init__(self, model: Path, threads: int = 1, accelerator: Accelerator = CPU) -> None:
        self._interpreter, self.device = litert_interpreter(model, threads, accelerator, "scorer")
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]["index"]

    def input_shapes(self) -> dict[str, list]:
        return {"window": list(self._input["shape"])}

    def score_windows(self, windows: np.ndarray) -> np.ndarray:
        out = np.empty(len(windows), dtype=np.float32)
        for i in range(len(windows)):
            self._interpreter.set_tensor(
                self._input["index"], np.ascontiguousarray(windows[i : i + 1], dtype=np.float32)
            )
            self._interpreter.invoke()
            out[i] = self._interpreter.get_tensor(self._output).reshape(-1)[0]
        return out


def open_window_runtime(
    kind: str, model: Path, threads: int = 1, accelerator: Accelerator = CPU
) -> WindowRuntime:
    if kind == "onnxruntime":
        return OnnxWindowRuntime(model, threads, accelerator)
    if kind == "tflite":
        return TfliteWindowRuntime(model, threads, accelerator)
    raise RuntimeUnavailable(f"unknown runtime {kind!r}; known: {', '.join(RUNTIMES)}")


def open_runtime(
    kind: str, encoder: Path, sequence: Path, threads: int = 1, accelerator: Accelerator = CPU
) -> ScoringRuntime:
    if kind == "onnxruntime":
        return OnnxScoringRuntime(encoder, sequence, threads, accelerator)
    if kind == "tflite":
        return TfliteScoringRuntime(encoder, sequence, threads, accelerator)
    raise RuntimeUnavailable(f"unknown runtime {kind!r}; known: {', '.join(RUNTIMES)}")
