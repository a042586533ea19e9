"""Reader for OpenPose per-frame JSON output (``--write_json``), BODY_25 model only.

OpenPose writes one file per frame, ``<prefix>_<12-digit frame>_keypoints.json``, holding
``{"version": ..., "people": [{"person_id": [-1], "pose_keypoints_2d": [75 floats], ...}]}`` with
x, y in pixels and a confidence per joint (undetected joints are 0, 0, 0). The files carry neither
the image size nor the frame rate, so the caller supplies them (640x480 at 30 fps by default).

OpenPose does not track people across frames. This reader returns ONE sequence, taking in each
frame the person with the largest bounding box of confident joints (the one nearest the camera,
usually the worker of interest); following several people over time is the daemon's tracker's job.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import numpy as np

from appliance.errors import InputFormatError
from appliance.keypoints.sequence import KeypointSequence
from appliance.pose.layouts import BODY25

OPENPOSE_GLOB = "*_keypoints.json"
# OpenPose's own default rendering threshold for body joints.
MIN_CONFIDENCE = 0.05
_NUM_VALUES = BODY25.num_joints * 3
_FRAME_FILE = re.compile(r"^(?P<prefix>.*?)_?(?P<frame>\d+)_keypoints\.json$")


def load_json(path: Path) -> object:
    """Parse a JSON file; syntax errors become an InputFormatError with the line number."""
    try:
        with path.open(encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        message = f"invalid JSON: {exc.msg} (column {exc.colno})"
        raise InputFormatError(path, message, line=exc.lineno) from None
    except UnicodeDecodeError:
        raise InputFormatError(path, "not a UTF-8 text file") from None
    except OSError as exc:
        raise InputFormatError(path, f"cannot read: {exc.strerror}") from None


def list_frame_files(directory: Path) -> tuple[str, list[tuple[int, Path]]]:
    """The directory's frame files as (frame number, path), sorted numerically, and their common prefix."""
    found: list[tuple[int, Path]] = []
    prefixes: set[str] = set()
    for file in directory.glob(OPENPOSE_GLOB):
        match = _FRAME_FILE.match(file.name)
        if match is None:
            raise InputFormatError(file, "file name lacks a frame number (<prefix>_<frame>_keypoints.json)")
        prefixes.add(match["prefix"])
        found.append((int(match["frame"]), file))
    if not found:
        raise InputFormatError(directory, f"no OpenPose {OPENPOSE_GLOB} files in this directory")
    if len(prefixes) > 1:
        shown = ", ".join(repr(p) for p in sorted(prefixes)[:3])
        raise InputFormatError(directory, f"frame files of several videos ({shown}); one video per directory")
    found.sort(key=lambda item: item[0])
    for (frame_a, file_a), (frame_b, file_b) in itertools.pairwise(found):
        if frame_a == frame_b:
            raise InputFormatError(file_b, f"frame {frame_b} already read from {file_a.name}")
    return prefixes.pop(), found


def _people(path: Path) -> list[np.ndarray]:
    """The BODY_25 keypoints (25, 3) of every person in one frame file."""
    data = load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("people"), list):
        raise InputFormatError(path, 'not an OpenPose frame: expected an object with a "people" list')
    people = []
    for i, person in enumerate(data["people"]):
        values = person.get("pose_keypoints_2d") if isinstance(person, dict) else None
        if not isinstance(values, list):
            raise InputFormatError(path, f'person {i} has no "pose_keypoints_2d" list')
        if len(values) != _NUM_VALUES:
            raise InputFormatError(
                path,
                f"person {i} has {len(values)} pose_keypoints_2d values, expected {_NUM_VALUES} "
                f"(BODY_25: 25 joints x, y, confidence); only the BODY_25 model is supported",
            )
        try:
            people.append(np.asarray(values, dtype=np.float32).reshape(BODY25.num_joints, 3))
        except (TypeError, ValueError):
            raise InputFormatError(path, f"person {i} has non-numeric pose_keypoints_2d values") from None
    return people


def box_area(keypoints: np.ndarray, min_confidence: float = MIN_CONFIDENCE) -> float:
    """Area of the bounding box of the joints seen with at least ``min_confidence`` (0 if fewer than 2)."""
    seen = keypoints[(keypoints[:, 2] >= min_confidence) & np.isfinite(keypoints[:, :2]).all(axis=1)]
    if len(seen) < 2:
        return 0.0
    extent = seen[:, :2].max(axis=0) - seen[:, :2].min(axis=0)
    return float(extent[0] * extent[1])


def pick_largest(people: list[np.ndarray], min_confidence: float = MIN_CONFIDENCE) -> int:
    """Index of the person with the largest confident-joint box (ties: more joints seen, then first)."""

    def size(i: int) -> tuple[float, int]:
        return box_area(people[i], min_confidence), int((people[i][:, 2] >= min_confidence).sum())

    return max(range(len(people)), key=lambda i: (*size(i), -i))


def read_openpose_dir(
    path: str | Path,
    width: int = 640,
    height: int = 480,
    fps: float = 30.0,
    person: str = "largest",
    min_confidence: float = MIN_CONFIDENCE,
) -> KeypointSequence:
    """Read a directory of OpenPose BODY_25 frame files as one sequence.

    ``width``/``height`` must be the video's size: OpenPose JSON does not record it. ``person`` is
    ``"largest"`` (per frame, the person with the largest box of joints at ``min_confidence`` or
    more) or ``"first"`` (OpenPose's first detection). A frame with nobody in it gets all-zero
    keypoints (confidence 0). ``meta["people"]`` counts the people in each frame and
    ``meta["person_index"]`` is the index chosen (-1 for an empty frame).
    """
    if person not in ("largest", "first"):
        raise ValueError(f"person must be 'largest' or 'first', not {person!r}")
    path = Path(path)
    if not path.is_dir():
        raise InputFormatError(path, "expected a directory of OpenPose *_keypoints.json files")
    prefix, files = list_frame_files(path)
    keypoints = np.zeros((len(files), BODY25.num_joints, 3), dtype=np.float32)
    counts = np.zeros(len(files), dtype=np.int64)
    chosen = np.full(len(files), -1, dtype=np.int64)
    for n, (_, file) in enumerate(files):
        people = _people(file)
        counts[n] = len(people)
        if people:
            chosen[n] = pick_largest(people, min_confidence) if person == "largest" else 0
            keypoints[n] = people[chosen[n]]
    return KeypointSequence(
        name=prefix or path.name,
        layout=BODY25,
        keypoints=keypoints,
        frames=np.asarray([frame for frame, _ in files]),
        width=width,
        height=height,
        fps=fps,
        meta={"source": str(path), "people": counts, "person_index": chosen},
    )
