"""Our own plain keypoint formats: a CSV a person can read and edit, and an NPZ for bulk data.

CSV: optional ``# key=value`` lines at the top (``layout``, ``width``, ``height``, ``fps``, ``name``),
then a header ``frame,track,label,<joint>_x,<joint>_y,<joint>_c,...`` with the joint names of the
layout (:attr:`JointLayout.joints`), one row per frame and track::

    # layout=coco17
    # width=640
    # height=480
    # fps=30
    frame,track,label,nose_x,nose_y,nose_c,left_eye_x,...
    0,1,0,312.5,88.0,0.93,318.2,84.1,0.88,...

``track`` and ``label`` are optional columns (no track column = one track). An empty label means
unknown; a track must be labelled on all its rows or on none. ``nan`` (or an empty cell) marks a
coordinate that was not seen. Settings may also be passed as arguments, which fill in what the file
lacks; an argument that contradicts the file is an error. Width and height are required (they scale
the pixels), fps defaults to 30.

NPZ: one sequence per file, arrays ``keypoints`` (N, K, 3), ``frames`` (N,), optional ``labels`` (N,)
and 0-d arrays ``layout``, ``width``, ``height``, ``fps`` (optional) and ``name`` (optional).
"""

from __future__ import annotations

import csv
import math
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from appliance.errors import InputFormatError
from appliance.keypoints.sequence import KeypointSequence
from appliance.pose.layouts import LAYOUTS, JointLayout

DEFAULT_FPS = 30.0
_SETTINGS = ("layout", "width", "height", "fps", "name")


def get_layout_or_error(path: Path, name: str, line: int | None = None) -> JointLayout:
    """Look a layout up by name; an unknown name is an input error listing the known ones."""
    try:
        return LAYOUTS[name.strip().lower()]
    except KeyError:
        known = ", ".join(sorted(LAYOUTS))
        raise InputFormatError(path, f"unknown joint layout {name!r}; known: {known}", line=line) from None


def joint_columns(layout: JointLayout) -> list[str]:
    """The CSV columns of a layout's joints, in order: ``<joint>_x, <joint>_y, <joint>_c``."""
    return [f"{joint}_{axis}" for joint in layout.joints for axis in "xyc"]


def _setting(path: Path, key: str, text: str, line: int | None) -> object:
    """Parse one setting's text to its type (layout, int size, float fps, text name)."""
    if key == "layout":
        return get_layout_or_error(path, text, line)
    if key == "name":
        return text
    try:
        number = float(text)
    except ValueError:
        raise InputFormatError(path, f"{key} {text!r} is not a number", line=line) from None
    if not number > 0 or (key != "fps" and not number.is_integer()):
        kind = "a positive number" if key == "fps" else "a positive whole number"
        raise InputFormatError(path, f"{key} must be {kind}, found {text!r}", line=line)
    return number if key == "fps" else int(number)


class _Settings(NamedTuple):
    layout: JointLayout
    width: int
    height: int
    fps: float
    name: str | None


def _merge(path: Path, found: dict[str, tuple[object, int | None]], args: dict[str, object]) -> _Settings:
    """Combine the file's settings with the caller's; conflicts and missing required ones are errors."""
    merged: dict[str, object] = {}
    for key in _SETTINGS:
        arg = None if args.get(key) is None else _setting(path, key, str(args[key]), None)
        if key in found:
            value, line = found[key]
            if arg is not None and not _same(value, arg):
                message = f"file says {key}={_show(value)} but {_show(arg)} was asked"
                raise InputFormatError(path, message, line=line)
            merged[key] = value
        else:
            merged[key] = arg
    for key in ("layout", "width", "height"):
        if merged[key] is None:
            raise InputFormatError(path, f"{key} not given: add '# {key}=...' to the file or pass {key}=")
    if merged["fps"] is None:
        merged["fps"] = DEFAULT_FPS
    return _Settings(**merged)  # type: ignore[arg-type]


def _same(a: object, b: object) -> bool:
    if isinstance(a, float | int) and isinstance(b, float | int):
        return math.isclose(float(a), float(b))
    return a == b


def _show(value: object) -> str:
    return value.name if isinstance(value, JointLayout) else str(value)


# --------------------------------------------------------------------------------------------- CSV


def _read_settings(path: Path, lines: list[str]) -> tuple[dict[str, tuple[object, int]], int]:
    """Parse the ``# key=value`` lines at the top; returns them and the index of the header line."""
    found: dict[str, tuple[object, int]] = {}
    index = 0
    while index < len(lines) and (not lines[index].strip() or lines[index].lstrip().startswith("#")):
        text = lines[index].strip().lstrip("#").strip()
        key, sep, value = text.partition("=")
        key = key.strip().lower()
        if sep and key in _SETTINGS:
            found[key] = (_setting(path, key, value.strip(), index + 1), index + 1)
        index += 1
    return found, index


def _integer(path: Path, line: int, column: str, cell: str) -> int:
    try:
        return int(cell)
    except ValueError:
        raise InputFormatError(path, f"column {column!r}: {cell!r} is not an integer", line=line) from None


def _parse_row(
    path: Path, line: int, row: list[str], header: list[str], columns: list[int]
) -> tuple[int, str, int | None, np.ndarray]:
    """One data row as (frame, track, label or None, flat joint values)."""
    col = {name: header.index(name) for name in ("frame", "track", "label") if name in header}
    frame = _integer(path, line, "frame", row[col["frame"]])
    track = row[col["track"]].strip() if "track" in col else "0"
    label = None
    if "label" in col and row[col["label"]].strip():
        label = _integer(path, line, "label", row[col["label"]])
        if label < 0:
            raise InputFormatError(path, f"column 'label': {label} is negative", line=line)
    values = np.empty(len(columns), dtype=np.float32)
    for n, i in enumerate(columns):
        cell = row[i].strip()
        try:
            values[n] = float(cell) if cell else np.nan
        except ValueError:
            message = f"column {header[i]!r}: {cell!r} is not a number"
            raise InputFormatError(path, message, line=line) from None
    return frame, track, label, values


def _check_header(path: Path, line: int, header: list[str], layout: JointLayout) -> list[int]:
    """Indices of the joint columns; names the missing or repeated ones."""
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        raise InputFormatError(path, f"repeated column {repeated[0]!r}", line=line)
    if "frame" not in header:
        raise InputFormatError(path, "no 'frame' column", line=line)
    wanted = joint_columns(layout)
    missing = [c for c in wanted if c not in header]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise InputFormatError(
            path, f"missing joint column {missing[0]!r}{more} for layout {layout.name}", line=line
        )
    return [header.index(c) for c in wanted]


def read_keypoints_csv(
    path: str | Path,
    layout: str | None = None,
    width: int | None = None,
    height: int | None = None,
    fps: float | None = None,
) -> list[KeypointSequence]:
    """Read our keypoint CSV as one sequence per track, in order of first appearance, frames sorted.

    A single track is named after ``# name=`` (else the file stem); several are ``<name>#<track>``.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFormatError(path, f"cannot read as text ({exc})") from None
    found, start = _read_settings(path, lines)
    if start >= len(lines):
        raise InputFormatError(path, "no header line (frame,track,label,<joint>_x,...)", line=start + 1)
    settings = _merge(path, found, {"layout": layout, "width": width, "height": height, "fps": fps})
    reader = csv.reader(lines[start:])
    header = [h.strip() for h in next(reader)]
    columns = _check_header(path, start + 1, header, settings.layout)

    tracks: dict[str, dict[int, tuple[np.ndarray, int | None, int]]] = {}
    for row in reader:
        line = start + reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise InputFormatError(path, f"expected {len(header)} fields, found {len(row)}", line=line)
        frame, track, label, values = _parse_row(path, line, row, header, columns)
        rows = tracks.setdefault(track, {})
        if frame in rows:
            message = f"frame {frame} of track {track!r} repeated (first on line {rows[frame][2]})"
            raise InputFormatError(path, message, line=line)
        rows[frame] = (values.reshape(settings.layout.num_joints, 3), label, line)
    if not tracks:
        raise InputFormatError(path, "no keypoint rows")

    base = settings.name or path.stem
    return [
        _track_sequence(path, base if len(tracks) == 1 else f"{base}#{track}", track, rows, settings)
        for track, rows in tracks.items()
    ]


def _track_sequence(
    path: Path,
    name: str,
    track: str,
    rows: dict[int, tuple[np.ndarray, int | None, int]],
    settings: _Settings,
) -> KeypointSequence:
    """One track's rows as a sequence sorted by frame; labels all present or all absent."""
    order = sorted(rows)
    labels = [rows[f][1] for f in order]
    known = [label is not None for label in labels]
    if any(known) and not all(known):
        unlabelled = rows[order[known.index(False)]][2]
        message = f"track {track!r} is labelled on other rows but not this one (label all rows or none)"
        raise InputFormatError(path, message, line=unlabelled)
    return KeypointSequence(
        name=name,
        layout=settings.layout,
        keypoints=np.stack([rows[f][0] for f in order]),
        frames=np.asarray(order),
        width=settings.width,
        height=settings.height,
        fps=settings.fps,
        labels=np.asarray(labels) if all(known) else None,
        meta={"source": str(path), "track": track},
    )


def _common(sequences: Sequence[KeypointSequence]) -> KeypointSequence:
    """The first sequence, after checking all share layout, image size and frame rate."""
    if not sequences:
        raise ValueError("no sequences to write")
    first = sequences[0]
    for seq in sequences[1:]:
        if (seq.layout.name, seq.width, seq.height) != (first.layout.name, first.width, first.height) or not (
            math.isclose(seq.fps, first.fps)
        ):
            raise ValueError(f"{seq.name}: layout, size or fps differ from {first.name}; use separate files")
    return first


def _track_ids(sequences: Sequence[KeypointSequence]) -> list[str]:
    """A track id per sequence: meta["track"], else the name's ``#`` suffix, else the position."""
    ids = []
    for i, seq in enumerate(sequences):
        track = seq.meta.get("track")
        if track is None and "#" in seq.name:
            track = seq.name.rsplit("#", 1)[1]
        ids.append(str(i) if track is None else str(track))
    return ids if len(set(ids)) == len(ids) else [str(i) for i in range(len(sequences))]


def _number(value: float) -> str:
    """Nine significant digits: enough to read a float32 back exactly."""
    return f"{float(value):.9g}"


def write_keypoints_csv(path: str | Path, sequences: Sequence[KeypointSequence] | KeypointSequence) -> None:
    """Write sequences (same layout, size and fps) to one CSV that :func:`read_keypoints_csv` reads back."""
    if isinstance(sequences, KeypointSequence):
        sequences = [sequences]
    first = _common(sequences)
    name = first.name if len(sequences) == 1 else first.name.rsplit("#", 1)[0]
    with Path(path).open("w", newline="", encoding="utf-8") as fh:
        for key, value in (
            ("layout", first.layout.name),
            ("width", first.width),
            ("height", first.height),
            ("fps", _number(first.fps)),
            ("name", name),
        ):
            fh.write(f"# {key}={value}\n")
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["frame", "track", "label", *joint_columns(first.layout)])
        for seq, track in zip(sequences, _track_ids(sequences), strict=True):
            for n in range(len(seq)):
                label = "" if seq.labels is None else str(int(seq.labels[n]))
                values = [_number(v) for v in seq.keypoints[n].reshape(-1)]
                writer.writerow([int(seq.frames[n]), track, label, *values])


# --------------------------------------------------------------------------------------------- NPZ


def _load(path: Path, data: np.lib.npyio.NpzFile, key: str) -> np.ndarray:
    """One array of the archive; pickled object arrays are refused, never unpickled."""
    try:
        return data[key]
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise InputFormatError(path, f"array '{key}' cannot be read ({exc})") from None


def _scalar(path: Path, data: np.lib.npyio.NpzFile, key: str) -> tuple[object, None] | None:
    """A 0-d setting array of the archive, parsed like the CSV settings (None when absent)."""
    if key not in data.files:
        return None
    array = _load(path, data, key)
    if array.shape != ():
        raise InputFormatError(path, f"array '{key}' must be 0-d, found shape {array.shape}")
    value = array[()]
    text = value.decode() if isinstance(value, bytes) else str(value)
    return _setting(path, key, text, None), None


def _array(path: Path, data: np.lib.npyio.NpzFile, key: str, shape: tuple[int | None, ...]) -> np.ndarray:
    """A numeric array of the archive with the expected shape (None = any length)."""
    if key not in data.files:
        raise InputFormatError(path, f"array '{key}' missing (has: {', '.join(sorted(data.files))})")
    array = _load(path, data, key)
    fits = array.ndim == len(shape) and all(s in (None, a) for s, a in zip(shape, array.shape, strict=True))
    if not fits:
        wanted = str(tuple("N" if s is None else s for s in shape)).replace("'", "")
        raise InputFormatError(path, f"array '{key}' has shape {array.shape}, expected {wanted}")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise InputFormatError(path, f"array '{key}' is not numeric ({array.dtype})")
    return array


def read_keypoints_npz(
    path: str | Path,
    layout: str | None = None,
    width: int | None = None,
    height: int | None = None,
    fps: float | None = None,
) -> KeypointSequence:
    """Read one sequence from our NPZ; settings missing from the file come from the arguments."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise InputFormatError(path, "not an .npz archive (a zip of keypoints, frames, layout, ... arrays)")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise InputFormatError(path, f"not a readable .npz archive ({exc})") from None
    with data:
        found = {key: got for key in _SETTINGS if (got := _scalar(path, data, key)) is not None}
        settings = _merge(path, found, {"layout": layout, "width": width, "height": height, "fps": fps})
        keypoints = _array(path, data, "keypoints", (None, settings.layout.num_joints, 3))
        n = len(keypoints)
        frames = _array(path, data, "frames", (n,))
        labels = _array(path, data, "labels", (n,)) if "labels" in data.files else None
    return KeypointSequence(
        name=settings.name or path.stem,
        layout=settings.layout,
        keypoints=keypoints,
        frames=frames,
        width=settings.width,
        height=settings.height,
        fps=settings.fps,
        labels=labels,
        meta={"source": str(path)},
    )


def write_keypoints_npz(path: str | Path, sequence: KeypointSequence) -> None:
    """Write one sequence to an NPZ that :func:`read_keypoints_npz` reads back (no pickled objects)."""
    arrays: dict[str, np.ndarray] = {
        "keypoints": sequence.keypoints,
        "frames": sequence.frames,
        "layout": np.asarray(sequence.layout.name),
        "width": np.asarray(sequence.width),
        "height": np.asarray(sequence.height),
        "fps": np.asarray(float(sequence.fps)),
        "name": np.asarray(sequence.name),
    }
    if sequence.labels is not None:
        arrays["labels"] = sequence.labels
    with Path(path).open("wb") as fh:
        np.savez_compressed(fh, **arrays)
