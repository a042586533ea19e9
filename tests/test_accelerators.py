"""Accelerators: asked for where none is installed, the models run on the CPU, the log says why and
the status says where they run; a configuration that pairs an accelerator with the wrong runtime is
refused with the key named. (This machine has no GPU: the fallback is the path exercised here; the
GPU figures in the README are marked not measured.)"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from appliance.accelerators import Accelerator, litert_interpreter, onnx_device, onnx_session
from appliance.config import ConfigError, parse_config
from appliance.models.bundle import open_bundle
from appliance.service.demo import STARTER_BUNDLE


def test_scorer_asked_to_run_on_cuda_runs_on_the_cpu_with_the_same_scores_and_says_so(caplog):
    pytest.importorskip("onnxruntime")
    bundle = open_bundle(STARTER_BUNDLE)
    with caplog.at_level(logging.WARNING, logger="appliance.accelerators"):
        on_cuda, _ = bundle.open("onnxruntime", "onnx-fp32", 1, Accelerator("cuda"))
    on_cpu, _ = bundle.open("onnxruntime", "onnx-fp32", 1)
    assert on_cuda.device == "cpu" and on_cpu.device == "cpu"
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings and all("running on the CPU" in w and "'cuda'" in w for w in warnings), warnings
    assert bundle.kind.smoke_score(bundle, on_cuda) == bundle.kind.smoke_score(bundle, on_cpu)


def test_tensorrt_falls_back_past_cuda_to_the_cpu_in_one_line_per_session(tmp_path, caplog):
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort

    if "TensorrtExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has TensorRT: the fallback cannot be seen here")
    model = _tiny_onnx(tmp_path / "add.onnx")
    with caplog.at_level(logging.WARNING, logger="appliance.accelerators"):
        session = onnx_session(model, 1, Accelerator("tensorrt"), "test model")
    assert onnx_device(session) == "cpu"
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("test model: accelerator 'tensorrt' asked for") and "CPUExecutionProvider" in line
    out = session.run(None, {"x": np.ones((1, 3), np.float32)})[0]
    assert out.tolist() == [[2.0, 2.0, 2.0]]


@pytest.mark.parametrize(
    "library, why",
    [
        (Path("/nonexistent/libtensorflowlite_gpu_delegate.so"), "no such library"),
        (None, "not a delegate"),  # a real shared library that is not a LiteRT delegate
    ],
)
def test_a_litert_gpu_delegate_that_does_not_load_leaves_the_model_on_the_cpu(library, why, caplog):
    pytest.importorskip("ai_edge_litert")
    from appliance.pose.model_files import DETECTOR, default_model_dir

    if library is None:
        import ctypes.util

        name = ctypes.util.find_library("m")
        if name is None:
            pytest.skip("no libm to offer as a wrong library")
        library = Path(name)
    model = default_model_dir() / DETECTOR.name
    with caplog.at_level(logging.WARNING, logger="appliance.accelerators"):
        interp, device = litert_interpreter(model, 1, Accelerator("litert-gpu", library), "pose detector")
    assert device == "cpu", why
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("pose detector: the LiteRT GPU delegate did not start") and "on the CPU" in line
    interp.invoke()  # the CPU interpreter works


@pytest.mark.parametrize(
    "model, message",
    [
        ({"runtime": "tflite", "accelerator": "cuda"}, "runs onnxruntime graphs: set runtime: onnxruntime"),
        ({"runtime": "onnxruntime", "accelerator": "litert-gpu"}, "runs LiteRT graphs: set runtime: tflite"),
        ({"runtime": "tflite", "accelerator": "litert-gpu"}, "needs gpu_delegate"),
        ({"runtime": "tflite", "accelerator": "npu"}, "'cpu', 'cuda', 'tensorrt' or 'litert-gpu'"),
    ],
)
def test_an_accelerator_the_runtime_cannot_use_is_refused_with_the_key_and_line(model, message):
    text = (
        "schema_version: 1\nappliance_id: a\nmodel:\n  bundle: b.tar\n"
        + "".join(f"  {k}: {v}\n" for k, v in model.items())
        + "cameras:\n  - id: c\n    source: 0\n"
    )
    with pytest.raises(ConfigError) as err:
        parse_config(text, "site.yaml")
    assert str(err.value).startswith("site.yaml:6: model.accelerator: ") and message in str(err.value)


def _tiny_onnx(path: Path) -> Path:
    """y = x + 1, a one-node graph (enough to see which provider a session took)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "one"], ["y"])],
        "add",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        [one],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_auto_takes_the_faster_runtime_for_the_model_kind_among_those_installed():
    """Fused and map models: onnxruntime where the [onnx] extra is installed (it scores a frame's
    tracks in one call); posture-motion models: LiteRT; an accelerator decides by itself."""
    pytest.importorskip("onnxruntime")
    bundle = open_bundle(STARTER_BUNDLE)
    assert bundle.resolve_runtime("auto") == "onnxruntime"
    assert bundle.part("posture_motion").resolve_runtime("auto") == "tflite"
    assert bundle.resolve_runtime("auto", accelerator="litert-gpu") == "tflite"
    assert bundle.resolve_runtime("auto", "tflite-int8") == "tflite"
    runtime, variant = bundle.open("auto")
    assert (runtime.maps.name, variant) == ("onnxruntime", "onnx-int8")


def test_on_the_edge_install_without_onnxruntime_auto_scores_on_litert():
    """The default install has no onnxruntime. Here it is installed, so the child process blocks its
    import the way Python itself marks a module absent (None in sys.modules) instead of uninstalling."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    code = (
        "import sys; sys.modules['onnxruntime'] = None\n"
        "from appliance.models.bundle import open_bundle\n"
        "from appliance.service.demo import STARTER_BUNDLE\n"
        "runtime, variant = open_bundle(STARTER_BUNDLE).open('auto')\n"
        "print(runtime.maps.name, runtime.motion.name, variant, runtime.device)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["tflite", "tflite", "tflite-int8", "cpu"]
