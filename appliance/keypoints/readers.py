"""One entry point for every keypoint source: look at what the path is and call the right reader.

``layout``, ``width``, ``height`` and ``fps`` fill in what a format does not record (our CSV/NPZ,
the image size of OpenPose and AlphaPose JSON). Where the file fixes a value (URFD is 640x480 at
30 fps in URFD13, OpenPose is BODY_25), asking for a different one is an error rather than being
silently ignored.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from appliance.errors import InputFormatError
from appliance.keypoints.alphapose import ALPHAPOSE_SUFFIX, looks_like_tracked_persons, read_alphapose_tracked
from appliance.keypoints.openpose import OPENPOSE_GLOB, load_json, read_openpose_dir
from appliance.keypoints.sequence import KeypointSequence
from appliance.keypoints.table import get_layout_or_error, read_keypoints_csv, read_keypoints_npz
from appliance.keypoints.urfd import read_urfd_csv

ACCEPTED_FORMATS = (
    f"a directory of OpenPose BODY_25 {OPENPOSE_GLOB} files",
    f"an AlphaPose tracked-person file (*{ALPHAPOSE_SUFFIX})",
    "a keypoint CSV (# layout=..., frame,track,label,<joint>_x,...) or the URFD skeleton CSV",
    "a keypoint .npz (keypoints, frames, layout, width, height)",
    "a .bvh motion capture clip (projected through the ceiling camera)",
)
_URFD_HEADER_START = "video,frame,Nose_x"


def _unknown(path: Path, why: str) -> InputFormatError:
    return InputFormatError(path, f"{why}; accepted: " + "; ".join(ACCEPTED_FORMATS))


def _first_line(path: Path) -> str:
    try:
        with path.open(encoding="utf-8-sig") as fh:
            return fh.readline().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFormatError(path, f"cannot read as text ({exc})") from None


def _read_json(path: Path, sizes: dict[str, float]) -> list[KeypointSequence]:
    """An AlphaPose tracked-person file, recognised by its name or its shape."""
    if path.name.endswith(ALPHAPOSE_SUFFIX) or looks_like_tracked_persons(load_json(path)):
        return read_alphapose_tracked(path, **sizes)
    if path.name.endswith("_keypoints.json"):
        raise InputFormatError(path, "one OpenPose frame file; pass the directory that holds the frames")
    raise _unknown(path, "JSON file of unknown shape")


def _read_file(path: Path, layout: str | None, sizes: dict[str, float]) -> list[KeypointSequence]:
    """A single file, by extension (and, for CSV, by its header)."""
    suffix = path.suffix.lower()
    if suffix == ".json":
        return _read_json(path, sizes)
    if suffix == ".npz":
        return [read_keypoints_npz(path, layout=layout, **sizes)]
    if suffix == ".csv":
        if _first_line(path).replace(" ", "").startswith(_URFD_HEADER_START):
            return read_urfd_csv(path)
        return read_keypoints_csv(path, layout=layout, **sizes)
    if suffix == ".bvh":
        from export.mocap.ceiling_camera import project_bvh  # separate module, only needed here

        projected = project_bvh(path)
        return [projected] if isinstance(projected, KeypointSequence) else list(projected)
    raise _unknown(path, f"unknown keypoint file type {suffix or '(no extension)'!r}")


def _check_asked(
    path: Path, sequences: list[KeypointSequence], layout: str | None, sizes: dict[str, float]
) -> None:
    """Refuse a layout, size or rate the caller asked for that the file's own values contradict."""
    for seq in sequences:
        if layout is not None and seq.layout.name != get_layout_or_error(path, layout).name:
            message = f"this file's layout is {seq.layout.name}; layout={layout} does not apply"
            raise InputFormatError(path, message)
        for key, value in sizes.items():
            if not math.isclose(float(getattr(seq, key)), float(value)):
                raise InputFormatError(
                    path, f"this file's {key} is {getattr(seq, key)}; {key}={value} does not apply"
                )


def read_keypoints(
    path: str | Path,
    layout: str | None = None,
    width: int | None = None,
    height: int | None = None,
    fps: float | None = None,
) -> list[KeypointSequence]:
    """Read any accepted keypoint source as a list of sequences (one per person or track)."""
    path = Path(path)
    if not path.exists():
        raise InputFormatError(path, "no such file or directory")
    if layout is not None:
        get_layout_or_error(path, layout)
    sizes = {k: v for k, v in (("width", width), ("height", height), ("fps", fps)) if v is not None}
    if path.is_dir():
        if not any(path.glob(OPENPOSE_GLOB)):
            raise _unknown(path, f"directory without OpenPose {OPENPOSE_GLOB} files")
        sequences = [read_openpose_dir(path, **sizes)]
    else:
        sequences = _read_file(path, layout, sizes)
    _check_asked(path, sequences, layout, sizes)
    _check_some_joint_seen(path, sequences)
    return sequences


def _check_some_joint_seen(path: Path, sequences: list[KeypointSequence]) -> None:
    """Refuse a file in which no joint was ever seen (all coordinates NaN or 0): scoring it would
    silently report every frame as 'no skeleton' instead of saying the file is empty."""
    for seq in sequences:
        xy = seq.keypoints[..., :2]
        if (np.isfinite(xy).all(axis=-1) & (xy != 0).any(axis=-1)).any():
            return
    frames = sum(len(s) for s in sequences)
    raise InputFormatError(
        path, f"no joint coordinates in any of its {frames} frames (every x, y is empty, NaN or 0)"
    )
