"""The ``onnx`` pose backend's contract: decoding, suppression and letterbox inversion.

No YOLO-pose weights can be obtained offline here, so the model is an ONNX graph built in the test
whose output is a fixed candidate table made from a real URFD skeleton: it checks our side of the
contract (input layout, output decoding, NMS, mapping to frame pixels), not a network's accuracy.
"""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="building the test graph needs the onnx package ([export] extra)")
from onnx import TensorProto, helper  # noqa: E402

from appliance.errors import ModelError  # noqa: E402
from appliance.keypoints.urfd import read_urfd_csv  # noqa: E402
from appliance.pose.layouts import COCO17  # noqa: E402
from appliance.pose.onnx_keypoints import OnnxKeypointBackend  # noqa: E402

from .conftest import DATA  # noqa: E402


def fixed_output_model(path, table: np.ndarray, transposed: bool) -> None:
    """(1, 3, 640, 640) -> the constant (1, 56, N) table (plus 0 x the input, so the input is used)."""
    out = table.T[None] if transposed else table[None]
    const = helper.make_tensor("table", TensorProto.FLOAT, out.shape, out.astype(np.float32).ravel())
    nodes = [
        helper.make_node("Constant", [], ["t"], value=const),
        helper.make_node("ReduceSum", ["images"], ["s"], keepdims=0),
        helper.make_node(
            "Constant", [], ["zero"], value=helper.make_tensor("z", TensorProto.FLOAT, [], [0.0])
        ),
        helper.make_node("Mul", ["s", "zero"], ["s0"]),
        helper.make_node("Add", ["t", "s0"], ["output0"]),
    ]
    graph = helper.make_graph(
        nodes,
        "fixed",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 640, 640])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(out.shape))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


@pytest.fixture(scope="module")
def skeleton() -> np.ndarray:
    """A real URFD skeleton mapped onto COCO-17 (eyes and ears unseen), 640x480 pixels."""
    seq = read_urfd_csv(DATA / "urfd-falls" / "pose_urfd_3classes.csv")[0]
    urfd = seq.keypoints[10]
    coco = np.zeros((17, 3), np.float32)
    for j, name in enumerate(seq.layout.joints):
        coco[COCO17.joints.index(name)] = urfd[j]
    return coco


@pytest.mark.skipif(not (DATA / "urfd-falls").is_dir(), reason="real data not found")
@pytest.mark.parametrize("transposed", [False, True])
def test_candidates_are_suppressed_and_mapped_back_to_frame_pixels(tmp_path, skeleton, transposed):
    # A 640x480 frame letterboxed into 640x640: scale 1, 80 px of padding on top.
    def row(kp, score):
        seen = kp[kp[:, 2] > 0, :2]
        (x0, y0), (x1, y1) = seen.min(0), seen.max(0)
        k = kp.copy()
        k[:, 1] += 80
        return np.concatenate([[(x0 + x1) / 2, (y0 + y1) / 2 + 80, x1 - x0, y1 - y0, score], k.ravel()])

    shifted = skeleton.copy()
    shifted[:, 0] += 200  # a second person 200 px to the right
    nudged = skeleton + np.array([2.0, 1.0, 0.0], np.float32)
    # (56, 4): person 1, a near-duplicate of it (NMS removes it), person 2, a candidate below min_score
    table = np.stack([row(skeleton, 0.9), row(nudged, 0.8), row(shifted, 0.7), row(shifted, 0.1)]).T
    fixed_output_model(tmp_path / "pose.onnx", table, transposed)
    backend = OnnxKeypointBackend(tmp_path / "pose.onnx", min_score=0.4)
    people = backend.infer(np.zeros((480, 640, 3), np.uint8))
    assert len(people) == 2
    assert [round(p.score, 2) for p in people] == [0.9, 0.7]
    np.testing.assert_allclose(people[0].keypoints, skeleton, atol=1e-3)
    np.testing.assert_allclose(people[1].keypoints[:, :2], shifted[:, :2], atol=1e-3)
    assert people[0].layout is COCO17 and people[0].box[1] == pytest.approx(
        skeleton[skeleton[:, 2] > 0, 1].min()
    )


def test_a_model_with_the_wrong_outputs_is_refused_with_the_contract(tmp_path):
    fixed_output_model(tmp_path / "bad.onnx", np.zeros((10, 4)), transposed=False)
    with pytest.raises(ModelError, match=r"expected a \(1, 56, N\)"):
        OnnxKeypointBackend(tmp_path / "bad.onnx")
    with pytest.raises(ModelError, match="no such file"):
        OnnxKeypointBackend(tmp_path / "missing.onnx")
