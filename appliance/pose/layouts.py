"""Joint layouts of the pose sources we accept, and the common body graph every map is drawn from.

Every layout is mapped onto one body graph (the first 15 joints of OpenPose BODY_25, the paper's
skeleton) so that the same body gives the same skeleton map whichever pose model produced it.
Joints a layout lacks are derived: the neck is BODY_25 joint 1 where present, otherwise the midpoint
of the shoulders; the mid-hip is BODY_25 joint 8, otherwise the midpoint of the hips. A derived
joint's confidence is the lower of its two parents'.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The common body graph: BODY_25 joints 0-14, in BODY_25 order.
BODY_JOINTS: tuple[str, ...] = (
    "nose",
    "neck",
    "right_shoulder",
    "right_elbow",
    "right_wrist",
    "left_shoulder",
    "left_elbow",
    "left_wrist",
    "mid_hip",
    "right_hip",
    "right_knee",
    "right_ankle",
    "left_hip",
    "left_knee",
    "left_ankle",
)
NECK = BODY_JOINTS.index("neck")
MID_HIP = BODY_JOINTS.index("mid_hip")

# Limbs of the common graph (the BODY_25 pairs among its first 15 joints).
BODY_LIMBS: tuple[tuple[int, int], ...] = (
    (1, 0),
    (1, 2),
    (2, 3),
    (3, 4),
    (1, 5),
    (5, 6),
    (6, 7),
    (1, 8),
    (8, 9),
    (9, 10),
    (10, 11),
    (8, 12),
    (12, 13),
    (13, 14),
)


@dataclass(frozen=True)
class JointLayout:
    """A source's joint order and how it maps to the common body graph."""

    name: str
    joints: tuple[str, ...]
    # For each body-graph joint: the source index, or a pair of indices to average, in BODY_JOINTS order.
    to_body: tuple[int | tuple[int, int], ...]

    @property
    def num_joints(self) -> int:
        return len(self.joints)


def _layout(name: str, joints: tuple[str, ...], aliases: dict[str, str] | None = None) -> JointLayout:
    """Build a layout whose joint names follow BODY_JOINTS naming (with optional aliases)."""
    index = {j: i for i, j in enumerate(joints)}
    for body_name, source_name in (aliases or {}).items():
        index[body_name] = index[source_name]
    to_body: list[int | tuple[int, int]] = []
    for body_joint in BODY_JOINTS:
        if body_joint in index:
            to_body.append(index[body_joint])
        elif body_joint == "neck":
            to_body.append((index["left_shoulder"], index["right_shoulder"]))
        elif body_joint == "mid_hip":
            to_body.append((index["left_hip"], index["right_hip"]))
        else:  # pragma: no cover - a layout table error, caught by the layout tests
            raise KeyError(f"layout {name} lacks joint {body_joint}")
    return JointLayout(name=name, joints=joints, to_body=tuple(to_body))


COCO17 = _layout(
    "coco17",
    (
        "nose",
        "left_eye",
        "right_eye",
        "left_ear",
        "right_ear",
        "left_shoulder",
        "right_shoulder",
        "left_elbow",
        "right_elbow",
        "left_wrist",
        "right_wrist",
        "left_hip",
        "right_hip",
        "left_knee",
        "right_knee",
        "left_ankle",
        "right_ankle",
    ),
)

# The 13-joint COCO subset of the URFD skeleton file (no eyes or ears), in its column order.
URFD13 = _layout(
    "urfd13",
    (
        "nose",
        "left_shoulder",
        "right_shoulder",
        "left_elbow",
        "right_elbow",
        "left_wrist",
        "right_wrist",
        "left_hip",
        "right_hip",
        "left_knee",
        "right_knee",
        "left_ankle",
        "right_ankle",
    ),
)

BLAZEPOSE33 = _layout(
    "blazepose33",
    (
        "nose",
        "left_eye_inner",
        "left_eye",
        "left_eye_outer",
        "right_eye_inner",
        "right_eye",
        "right_eye_outer",
        "left_ear",
        "right_ear",
        "mouth_left",
        "mouth_right",
        "left_shoulder",
        "right_shoulder",
        "left_elbow",
        "right_elbow",
        "left_wrist",
        "right_wrist",
        "left_pinky",
        "right_pinky",
        "left_index",
        "right_index",
        "left_thumb",
        "right_thumb",
        "left_hip",
        "right_hip",
        "left_knee",
        "right_knee",
        "left_ankle",
        "right_ankle",
        "left_heel",
        "right_heel",
        "left_foot_index",
        "right_foot_index",
    ),
)

BODY25 = _layout(
    "body25",
    (
        *BODY_JOINTS,
        "right_eye",
        "left_eye",
        "right_ear",
        "left_ear",
        "left_big_toe",
        "left_small_toe",
        "left_heel",
        "right_big_toe",
        "right_small_toe",
        "right_heel",
    ),
)

LAYOUTS: dict[str, JointLayout] = {lay.name: lay for lay in (COCO17, URFD13, BLAZEPOSE33, BODY25)}


def get_layout(name: str) -> JointLayout:
    """Look a layout up by name, with a message listing the known ones."""
    try:
        return LAYOUTS[name]
    except KeyError:
        raise KeyError(f"unknown joint layout {name!r}; known: {', '.join(sorted(LAYOUTS))}") from None


def to_body_graph(keypoints: np.ndarray, layout: JointLayout) -> np.ndarray:
    """Map (..., K, 3) keypoints [x, y, confidence] of ``layout`` to (..., 15, 3) body-graph joints.

    NaN coordinates count as missing (confidence 0). Derived joints (neck, mid-hip) take the
    midpoint of their parents and the lower of their confidences.
    """
    kp = np.asarray(keypoints, dtype=np.float32)
    if kp.shape[-2:] != (layout.num_joints, 3):
        raise ValueError(
            f"keypoints of shape {kp.shape} do not fit layout {layout.name} ({layout.num_joints} joints x 3)"
        )
    out = np.empty((*kp.shape[:-2], len(BODY_JOINTS), 3), dtype=np.float32)
    for j, src in enumerate(layout.to_body):
        if isinstance(src, tuple):
            a, b = kp[..., src[0], :], kp[..., src[1], :]
            out[..., j, :2] = (a[..., :2] + b[..., :2]) / 2.0
            out[..., j, 2] = np.minimum(a[..., 2], b[..., 2])
        else:
            out[..., j, :] = kp[..., src, :]
    missing = ~np.isfinite(out).all(axis=-1)
    out[missing] = 0.0
    return out
