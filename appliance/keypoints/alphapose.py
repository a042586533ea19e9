"""Reader for the AlphaPose "tracked person" JSON of the public ShanghaiTech / UBnormal pose releases.

These files (one per clip, e.g. ``01_0014_alphapose_tracked_person.json``) come from the GEPC and
STG-NF repositories, whose ``gen_data.py`` regroups AlphaPose's per-detection output by track id::

    {"<person_id>": {"<frame>": {"keypoints": [51 floats], "scores": <float>}, ...}, ...}

``keypoints`` are the 17 COCO joints as (x, y, score) in pixels of the original video (ShanghaiTech
is 856x480 at 24 fps, the defaults here). Assumptions, from those repositories' loaders:

* frame keys are 0-based frame indices, zero-padded strings ("000", "0001"), so they are sorted
  numerically and index the clip's ground-truth frame mask directly;
* a person's value may also be a list of such frame dicts (STG-NF merges them); extra fields per
  frame (``boxes``) are ignored; ``scores`` (the detection score) is optional and kept in ``meta``;
* person ids are numeric strings; any other id is kept as is and sorted after the numeric ones.

Ground truth: the test split ships ``test_frame_mask/<clip>.npy``, one 0/1 value per frame of the
clip, where ``<clip>`` is the file name before ``_alphapose`` (``01_0014``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from appliance.errors import InputFormatError
from appliance.keypoints.openpose import load_json
from appliance.keypoints.sequence import KeypointSequence
from appliance.pose.layouts import COCO17

ALPHAPOSE_SUFFIX = "_alphapose_tracked_person.json"
_NUM_VALUES = COCO17.num_joints * 3


def alphapose_clip_id(path: str | Path) -> str:
    """The clip id of a tracked-person file: its name before ``_alphapose`` (else the file stem)."""
    name = Path(path).name
    cut = name.find("_alphapose")
    return name[:cut] if cut > 0 else Path(path).stem


def _as_int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _id_order(key: str) -> tuple[int, int, str]:
    """Sort key: numeric ids numerically first, then any other id as text."""
    number = _as_int(key)
    return (0, number, "") if number is not None else (1, 0, key)


def looks_like_tracked_persons(data: object) -> bool:
    """Whether parsed JSON has the tracked-person shape (a dict of persons, each a dict of frames)."""
    if not isinstance(data, dict) or not data:
        return False
    first = next(iter(data.values()))
    if isinstance(first, list) and first:
        first = first[0]
    if not isinstance(first, dict) or not first:
        return False
    frame = next(iter(first.values()))
    return isinstance(frame, dict) and "keypoints" in frame


def _frames_of(path: Path, person_id: str, value: object) -> dict[int, dict]:
    """A person's frames as {frame index: frame dict}, accepting the list-of-dicts variant."""
    parts = value if isinstance(value, list) else [value]
    frames: dict[int, dict] = {}
    for part in parts:
        if not isinstance(part, dict):
            raise InputFormatError(path, f"person {person_id}: expected an object of frames")
        for key, frame in part.items():
            index = _as_int(key)
            if index is None or index < 0:
                raise InputFormatError(path, f"person {person_id}: frame key {key!r} is not a frame index")
            if not isinstance(frame, dict):
                raise InputFormatError(path, f"person {person_id}, frame {key}: expected an object")
            frames[index] = frame
    return frames


def _keypoints(path: Path, person_id: str, index: int, frame: dict) -> np.ndarray:
    values = frame.get("keypoints")
    where = f"person {person_id}, frame {index}"
    if not isinstance(values, list):
        raise InputFormatError(path, f'{where}: no "keypoints" list')
    if len(values) != _NUM_VALUES:
        raise InputFormatError(
            path, f"{where}: {len(values)} keypoint values, expected {_NUM_VALUES} (COCO-17 x, y, score)"
        )
    try:
        return np.asarray(values, dtype=np.float32).reshape(COCO17.num_joints, 3)
    except (TypeError, ValueError):
        raise InputFormatError(path, f"{where}: non-numeric keypoint values") from None


def _score(path: Path, person_id: str, index: int, frame: dict) -> float:
    score = frame.get("scores", np.nan)
    if isinstance(score, list) and len(score) == 1:
        score = score[0]
    try:
        return float(score)
    except (TypeError, ValueError):
        where = f"person {person_id}, frame {index}"
        raise InputFormatError(path, f"{where}: non-numeric scores {score!r}") from None


def load_frame_mask(path: Path, frame_mask_dir: str | Path) -> tuple[Path, np.ndarray]:
    """The 0/1 per-frame mask of the clip of ``path``, from ``<frame_mask_dir>/<clip>.npy``."""
    clip = alphapose_clip_id(path)
    mask_path = Path(frame_mask_dir) / f"{clip}.npy"
    if not mask_path.is_file():
        raise InputFormatError(path, f"no frame mask for clip {clip!r}: {mask_path} not found")
    try:
        mask = np.load(mask_path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputFormatError(mask_path, f"not a readable .npy frame mask ({exc})") from None
    if mask.ndim != 1 or not (np.issubdtype(mask.dtype, np.number) or mask.dtype == bool):
        found = f"{mask.dtype} {mask.shape}"
        raise InputFormatError(mask_path, f"frame mask must be a 1-D numeric array, found {found}")
    return mask_path, mask.astype(np.int64)


def read_alphapose_tracked(
    path: str | Path,
    width: int = 856,
    height: int = 480,
    fps: float = 24.0,
    frame_mask_dir: str | Path | None = None,
) -> list[KeypointSequence]:
    """Read a tracked-person JSON as one COCO-17 sequence per person id (ids and frames sorted numerically).

    Gaps in a person's frames are kept as gaps in ``frames``. With ``frame_mask_dir`` (the
    ``test_frame_mask/`` folder) each frame is labelled from the clip's mask. A clip with no
    person gives an empty list; a person with no frames is skipped.
    """
    path = Path(path)
    data = load_json(path)
    if not isinstance(data, dict):
        raise InputFormatError(path, "not an AlphaPose tracked-person file: expected an object of person ids")
    mask_path, mask = load_frame_mask(path, frame_mask_dir) if frame_mask_dir is not None else (None, None)
    clip = alphapose_clip_id(path)
    sequences = []
    for person_id in sorted(data, key=_id_order):
        frames = _frames_of(path, person_id, data[person_id])
        if not frames:
            continue
        order = sorted(frames)
        labels = None
        if mask is not None:
            beyond = [f for f in order if f >= len(mask)]
            if beyond:
                where = f"person {person_id}: frame {beyond[0]}"
                raise InputFormatError(path, f"{where} is beyond the {len(mask)} frames of {mask_path}")
            labels = mask[order]
        sequences.append(
            KeypointSequence(
                name=f"{clip}#{person_id}",
                layout=COCO17,
                keypoints=np.stack([_keypoints(path, person_id, f, frames[f]) for f in order]),
                frames=np.asarray(order),
                width=width,
                height=height,
                fps=fps,
                labels=labels,
                meta={
                    "source": str(path),
                    "clip": clip,
                    "person_id": person_id,
                    "scores": np.asarray([_score(path, person_id, f, frames[f]) for f in order]),
                },
            )
        )
    return sequences
