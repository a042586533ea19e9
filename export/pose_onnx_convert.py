"""Convert a BlazePose landmark TFLite model to ONNX with tf2onnx, byte for byte reproducibly.

Runs in the converter's own environment (``export/pose-onnx-requirements.txt``: tf2onnx with
TensorFlow, which the appliance and the export extra never install), called by
``appliance-export pose-onnx``; it needs only the standard library, ``onnx`` and ``tf2onnx``.

tf2onnx names the constants it folds with a global counter whose order changes from run to run, and
writes the input path into the graph's doc string, so two conversions of one file differ. After the
conversion every internal tensor, initializer and node is renamed in graph order (the graph's inputs
and outputs keep their names), initializers are ordered by first use and the doc string is cleared:
the same TFLite file and pinned converter then give the same bytes.

    python export/pose_onnx_convert.py IN.tflite OUT.onnx [--opset 13]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def canonical(model):
    """``model`` (an onnx ModelProto) with names and order that do not depend on the run."""
    graph = model.graph
    keep = {i.name for i in graph.input} | {o.name for o in graph.output}
    initializers = {t.name: t for t in graph.initializer}
    renamed: dict[str, str] = {}
    used: list[str] = []

    def new_name(old: str, prefix: str) -> str:
        if not old or old in keep:
            return old
        if old not in renamed:
            renamed[old] = f"{prefix}{len(renamed)}"
            if old in initializers:
                used.append(old)
        return renamed[old]

    for k, node in enumerate(graph.node):
        for j, name in enumerate(node.input):
            node.input[j] = new_name(name, "c" if name in initializers else "t")
        for j, name in enumerate(node.output):
            node.output[j] = new_name(name, "t")
        node.name = f"n{k}_{node.op_type}"
    ordered = []
    for old in used:
        tensor = initializers[old]
        tensor.name = renamed[old]
        ordered.append(tensor)
    del graph.initializer[:]
    graph.initializer.extend(ordered)  # initializers no node reads are dropped
    for info in graph.value_info:
        info.name = renamed.get(info.name, info.name)
    graph.doc_string = ""
    return model


def convert(tflite: Path, out: Path, opset: int = 13) -> None:
    import onnx

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "", "PYTHONHASHSEED": "0"}
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.onnx"
        cmd = [sys.executable, "-m", "tf2onnx.convert", "--tflite", str(tflite), "--output", str(raw)]
        cmd += ["--opset", str(opset)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0 or not raw.is_file():
            raise SystemExit(f"tf2onnx failed on {tflite.name}:\n{done.stderr[-3000:]}")
        model = canonical(onnx.load(str(raw)))
    onnx.checker.check_model(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tflite", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--opset", type=int, default=13)
    args = ap.parse_args()
    convert(args.tflite, args.out, args.opset)
    return 0


if __name__ == "__main__":
    sys.exit(main())
