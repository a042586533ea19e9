"""``onnx`` pose backend: a COCO-17 keypoint model the user supplies (e.g. an exported YOLO-pose).

Contract (what an Ultralytics ``yolo export format=onnx`` of a ``*-pose`` model produces):

- one input, float32 (1, 3, H, W): RGB scaled to [0, 1], the frame letterboxed into W x H (aspect
  kept, centred, padding grey 114);
- one output, float32 (1, 56, N) or (1, N, 56): per candidate ``cx, cy, w, h`` (input pixels),
  the person score, then 17 x ``(x, y, confidence)`` in COCO-17 order (input pixels; a
  confidence outside [0, 1] is taken as a logit).

Candidates above ``min_score`` go through non-maximum suppression (IoU 0.45); keypoints are mapped
back to frame pixels. Nothing is downloaded: the file is the user's.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from appliance.errors import ModelError
from appliance.pose.base import Person
from appliance.pose.layouts import COCO17

NMS_IOU = 0.45
ROW = 5 + 17 * 3


class OnnxKeypointBackend:
    layout = COCO17

    def __init__(
        self,
        model: Path,
        input_size: tuple[int, int] = (640, 640),
        min_score: float = 0.4,
        threads: int = 1,
        max_people: int = 16,
    ) -> None:
        import onnxruntime as ort

        model = Path(model)
        if not model.is_file():
            raise ModelError(f"onnx pose model {model}: no such file")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's own exception types
            raise ModelError(f"onnx pose model {model}: onnxruntime cannot load it ({exc})") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        shape = inputs[0].shape
        if len(inputs) != 1 or len(shape) != 4 or shape[1] != 3:
            raise ModelError(
                f"onnx pose model {model}: expected one (1, 3, H, W) input, found "
                f"{[(i.name, i.shape) for i in inputs]}"
            )
        out_shape = outputs[0].shape
        if len(out_shape) != 3 or ROW not in out_shape[1:]:
            raise ModelError(
                f"onnx pose model {model}: expected a (1, {ROW}, N) or (1, N, {ROW}) output "
                f"(box, score, 17 COCO keypoints), found {out_shape}"
            )
        fixed_w, fixed_h = shape[3], shape[2]
        self.width = fixed_w if isinstance(fixed_w, int) else input_size[0]
        self.height = fixed_h if isinstance(fixed_h, int) else input_size[1]
        self.input_name = inputs[0].name
        self.min_score, self.max_people = min_score, max_people

    def infer(self, frame: np.ndarray) -> list[Person]:
        h, w = frame.shape[:2]
        scale = min(self.width / w, self.height / h)
        nw, nh = round(w * scale), round(h * scale)
        px, py = (self.width - nw) // 2, (self.height - nh) // 2
        canvas = np.full((self.height, self.width, 3), 114, np.uint8)
        canvas[py : py + nh, px : px + nw] = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_LINEAR)
        blob = cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB).transpose(2, 0, 1)[None].astype(np.float32) / 255.0
        out = np.asarray(self.session.run(None, {self.input_name: blob})[0])[0]
        rows = out.T if out.shape[0] == ROW and out.shape[1] != ROW else out
        rows = rows[rows[:, 4] >= self.min_score]
        if len(rows) == 0:
            return []
        boxes = np.stack(
            [rows[:, 0] - rows[:, 2] / 2, rows[:, 1] - rows[:, 3] / 2, rows[:, 2], rows[:, 3]], 1
        )
        keep = cv2.dnn.NMSBoxes(boxes.tolist(), rows[:, 4].tolist(), self.min_score, NMS_IOU)
        people = []
        for i in np.asarray(keep, dtype=int).reshape(-1)[: self.max_people]:
            kp = rows[i, 5:].reshape(17, 3).astype(np.float32).copy()
            if kp[:, 2].min() < 0 or kp[:, 2].max() > 1:
                kp[:, 2] = 1.0 / (1.0 + np.exp(-kp[:, 2]))
            kp[:, 0] = (kp[:, 0] - px) / scale
            kp[:, 1] = (kp[:, 1] - py) / scale
            x0, y0, bw, bh = boxes[i]
            box = ((x0 - px) / scale, (y0 - py) / scale, (x0 + bw - px) / scale, (y0 + bh - py) / scale)
            people.append(Person(kp, COCO17, tuple(float(v) for v in box), float(rows[i, 4])))
        return people

    def reset(self) -> None:
        pass

    def close(self) -> None:
        pass
