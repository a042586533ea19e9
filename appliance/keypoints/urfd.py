"""Reader for the URFD fall skeleton CSV (13 COCO joints, coordinates normalised to 640x480).

Columns: ``video, frame``, then ``<Joint>_x, <Joint>_y, <Joint>_s`` for the 13 joints of
:data:`~appliance.pose.layouts.URFD13`, then ``label`` (0 upright, 1 falling, 2 lying).

Rows that repeat a frame number of the same video (fall-13 and fall-14 in the public file carry
each frame twice, with identical keypoints and sometimes different labels) are merged into one
frame; when the labels disagree the frame takes the higher one, i.e. a frame that any annotation
marks as falling or lying counts as anomalous. The number of merged rows is kept in ``meta``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from appliance.errors import InputFormatError
from appliance.keypoints.sequence import KeypointSequence
from appliance.pose.layouts import URFD13

URFD_WIDTH, URFD_HEIGHT, URFD_FPS = 640, 480, 30.0
_CSV_JOINTS = (
    "Nose",
    "LShoulder",
    "RShoulder",
    "LElbow",
    "RElbow",
    "LWrist",
    "RWrist",
    "LHip",
    "RHip",
    "LKnee",
    "RKnee",
    "LAnkle",
    "RAnkle",
)
_COLUMNS = ["video", "frame", *(f"{j}_{c}" for j in _CSV_JOINTS for c in "xys"), "label"]


def read_urfd_csv(path: str | Path) -> list[KeypointSequence]:
    """Read every video of a URFD skeleton CSV, in file order, as one sequence per video."""
    path = Path(path)
    per_video: dict[str, dict[int, tuple[np.ndarray, int]]] = {}
    merged: dict[str, int] = {}
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise InputFormatError(path, "empty file, expected a URFD skeleton CSV header", line=1)
        header = [h.strip() for h in header]
        if header != _COLUMNS:
            missing = [c for c in _COLUMNS if c not in header]
            detail = f"missing columns {missing[:5]}" if missing else "columns out of order"
            raise InputFormatError(path, f"not a URFD skeleton CSV header ({detail})", line=1)
        for line_no, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(_COLUMNS):
                raise InputFormatError(
                    path, f"expected {len(_COLUMNS)} fields, found {len(row)}", line=line_no
                )
            try:
                frame = int(row[1])
                values = np.asarray([float(v) for v in row[2:-1]], dtype=np.float32).reshape(13, 3)
                label = int(row[-1])
            except ValueError as exc:
                raise InputFormatError(path, f"non-numeric field ({exc})", line=line_no) from None
            if label not in (0, 1, 2):
                raise InputFormatError(path, f"label {label} is not 0, 1 or 2", line=line_no)
            values[:, 0] *= URFD_WIDTH
            values[:, 1] *= URFD_HEIGHT
            frames = per_video.setdefault(row[0], {})
            if frame in frames:
                merged[row[0]] = merged.get(row[0], 0) + 1
                label = max(label, frames[frame][1])
            frames[frame] = (values, label)

    sequences = []
    for video, frames in per_video.items():
        order = sorted(frames)
        sequences.append(
            KeypointSequence(
                name=video,
                layout=URFD13,
                keypoints=np.stack([frames[f][0] for f in order]),
                frames=np.asarray(order),
                labels=np.asarray([frames[f][1] for f in order]),
                width=URFD_WIDTH,
                height=URFD_HEIGHT,
                fps=URFD_FPS,
                meta={"source": str(path), "merged_duplicate_rows": merged.get(video, 0)},
            )
        )
    if not sequences:
        raise InputFormatError(path, "no skeleton rows")
    return sequences
