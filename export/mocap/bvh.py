"""BVH motion capture: a parser (HIERARCHY + MOTION) and forward kinematics to world joint positions.

The parser takes any CHANNELS line (3 or 6 channels, position and rotation channels in any order)
and ``End Site`` blocks. Conventions, those of the BVH format as the Bandai Namco data uses it:

- A joint's rotation is the product of its rotation channels in the order they are listed, so
  ``Zrotation Xrotation Yrotation`` means ``R = Rz @ Rx @ Ry`` applied to the child offsets; angles
  are in degrees and each elementary rotation is right-handed about its axis.
- A joint with position channels is translated from its parent by those values, which *replace* the
  matching components of its OFFSET (the Bandai files give every joint 6 channels, with positions
  equal to the offsets for all but the root-motion joints); without position channels the OFFSET
  is used.
- World positions are in the file's units (Bandai: centimetres, y up).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from appliance.errors import InputFormatError

_POSITION_CHANNELS = {"xposition": 0, "yposition": 1, "zposition": 2}
_ROTATION_CHANNELS = {"xrotation": "x", "yrotation": "y", "zrotation": "z"}


@dataclass(frozen=True)
class BvhJoint:
    """One joint of the hierarchy: its parent's index (-1 for a root), rest offset and channels."""

    name: str
    parent: int
    offset: np.ndarray  # (3,) in file units
    channels: tuple[str, ...]  # lower-case channel names, in file order
    channel_start: int  # column of its first channel in a motion line


@dataclass(frozen=True)
class BvhEndSite:
    """An ``End Site``: a fixed offset from its parent joint (e.g. the top of the head)."""

    parent: int
    offset: np.ndarray


@dataclass(frozen=True)
class BvhClip:
    """A parsed BVH file: the joint hierarchy and the (frames, channels) motion table."""

    name: str
    joints: tuple[BvhJoint, ...]
    end_sites: tuple[BvhEndSite, ...]
    motion: np.ndarray  # (N, total channels), float64
    frame_time: float  # seconds per frame

    @property
    def joint_names(self) -> tuple[str, ...]:
        return tuple(j.name for j in self.joints)

    @property
    def num_frames(self) -> int:
        return len(self.motion)

    @property
    def fps(self) -> float:
        return 1.0 / self.frame_time

    def joint_index(self, name: str) -> int:
        """Index of the joint called ``name``, with a message listing the joints if absent."""
        try:
            return self.joint_names.index(name)
        except ValueError:
            raise KeyError(f"{self.name}: no joint {name!r}; joints: {', '.join(self.joint_names)}") from None


class _Lines:
    """The file's non-blank lines as token lists, with their 1-based line numbers for messages."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.items = [
            (no, line.split()) for no, line in enumerate(text.splitlines(), start=1) if line.strip()
        ]
        self.pos = 0

    def next(self, what: str) -> tuple[int, list[str]]:
        if self.pos >= len(self.items):
            last = self.items[-1][0] if self.items else 1
            raise InputFormatError(self.path, f"unexpected end of file, expected {what}", line=last)
        item = self.items[self.pos]
        self.pos += 1
        return item

    def error(self, line: int, message: str) -> InputFormatError:
        return InputFormatError(self.path, message, line=line)


def _floats(lines: _Lines, line: int, tokens: list[str], what: str) -> np.ndarray:
    try:
        return np.asarray([float(t) for t in tokens], dtype=np.float64)
    except ValueError:
        raise lines.error(line, f"non-numeric value in {what}: {' '.join(tokens)!r}") from None


def _expect_open_brace(lines: _Lines, owner: str) -> None:
    line, tokens = lines.next(f"'{{' after {owner}")
    if tokens != ["{"]:
        raise lines.error(line, f"expected '{{' after {owner}, found {' '.join(tokens)!r}")


def _parse_offset(lines: _Lines, owner: str) -> np.ndarray:
    line, tokens = lines.next(f"OFFSET of {owner}")
    if tokens[0].upper() != "OFFSET" or len(tokens) != 4:
        raise lines.error(line, f"expected 'OFFSET x y z' for {owner}, found {' '.join(tokens)!r}")
    return _floats(lines, line, tokens[1:], f"OFFSET of {owner}")


def _parse_channels(lines: _Lines, owner: str) -> tuple[str, ...]:
    line, tokens = lines.next(f"CHANNELS of {owner}")
    if tokens[0].upper() != "CHANNELS" or len(tokens) < 2:
        raise lines.error(line, f"expected 'CHANNELS n ...' for {owner}, found {' '.join(tokens)!r}")
    try:
        count = int(tokens[1])
    except ValueError:
        raise lines.error(line, f"channel count {tokens[1]!r} of {owner} is not an integer") from None
    names = tuple(t.lower() for t in tokens[2:])
    if len(names) != count:
        raise lines.error(line, f"{owner} declares {count} channels but lists {len(names)}")
    unknown = [n for n in names if n not in _POSITION_CHANNELS and n not in _ROTATION_CHANNELS]
    if unknown:
        raise lines.error(line, f"unknown channel {unknown[0]!r} for {owner}")
    if len(set(names)) != len(names):
        raise lines.error(line, f"repeated channel for {owner}")
    return names


def _parse_hierarchy(lines: _Lines) -> tuple[list[BvhJoint], list[BvhEndSite]]:
    """Parse from the ROOT line to the brace closing the last root; an explicit stack, no recursion."""
    joints: list[BvhJoint] = []
    end_sites: list[BvhEndSite] = []
    stack: list[int] = []  # indices of the joints whose braces are open (-2 marks an End Site)
    num_channels = 0
    while True:
        line, tokens = lines.next("ROOT, JOINT, End Site or '}'")
        keyword = tokens[0].upper()
        if keyword in ("ROOT", "JOINT"):
            if (keyword == "ROOT") != (not stack):
                raise lines.error(line, f"{tokens[0]} {'inside a joint' if stack else 'outside ROOT'}")
            if stack and stack[-1] == -2:
                raise lines.error(line, "JOINT inside an End Site")
            if len(tokens) < 2:
                raise lines.error(line, f"{tokens[0]} without a name")
            name = " ".join(tokens[1:])
            _expect_open_brace(lines, name)
            offset = _parse_offset(lines, name)
            channels = _parse_channels(lines, name)
            joints.append(BvhJoint(name, stack[-1] if stack else -1, offset, channels, num_channels))
            num_channels += len(channels)
            stack.append(len(joints) - 1)
        elif keyword == "END":
            if not stack or stack[-1] == -2:
                raise lines.error(line, "End Site outside a joint")
            _expect_open_brace(lines, "End Site")
            end_sites.append(BvhEndSite(stack[-1], _parse_offset(lines, "End Site")))
            stack.append(-2)
        elif tokens == ["}"]:
            if not stack:
                raise lines.error(line, "unbalanced '}'")
            stack.pop()
            if not stack:
                return joints, end_sites
        elif keyword == "MOTION":
            raise lines.error(line, f"MOTION before the hierarchy is closed ({len(stack)} unclosed '{{')")
        else:
            raise lines.error(line, f"unexpected {' '.join(tokens)!r} in HIERARCHY")


def _parse_header_value(lines: _Lines, label: str) -> tuple[int, str]:
    line, tokens = lines.next(f"'{label}'")
    text = " ".join(tokens)
    if not text.lower().startswith(label.lower()) or len(text) == len(label):
        raise lines.error(line, f"expected '{label} <value>', found {text!r}")
    return line, text[len(label) :].strip()


def _parse_motion(lines: _Lines, num_channels: int) -> tuple[np.ndarray, float]:
    line, tokens = lines.next("MOTION")
    if tokens == ["}"]:
        raise lines.error(line, "unbalanced '}' after the hierarchy")
    if tokens != ["MOTION"]:
        raise lines.error(line, f"expected MOTION after the hierarchy, found {' '.join(tokens)!r}")
    line, value = _parse_header_value(lines, "Frames:")
    try:
        num_frames = int(value)
    except ValueError:
        raise lines.error(line, f"frame count {value!r} is not an integer") from None
    line, value = _parse_header_value(lines, "Frame Time:")
    try:
        frame_time = float(value)
    except ValueError:
        raise lines.error(line, f"frame time {value!r} is not a number") from None
    if num_frames < 0 or not frame_time > 0:
        raise lines.error(line, f"bad frame count {num_frames} or frame time {frame_time}")
    rows = lines.items[lines.pos :]
    if len(rows) != num_frames:
        where = rows[num_frames][0] if len(rows) > num_frames else (rows[-1][0] if rows else line)
        raise lines.error(where, f"header says {num_frames} frames, file has {len(rows)} motion lines")
    motion = np.empty((num_frames, num_channels), dtype=np.float64)
    for i, (row_line, row) in enumerate(rows):
        if len(row) != num_channels:
            raise lines.error(
                row_line, f"motion line has {len(row)} values, the hierarchy needs {num_channels}"
            )
        motion[i] = _floats(lines, row_line, row, "motion line")
    if not np.isfinite(motion).all():
        bad = rows[int(np.flatnonzero(~np.isfinite(motion).all(axis=1))[0])][0]
        raise lines.error(bad, "non-finite value in motion line")
    return motion, frame_time


def parse_bvh_text(text: str, path: str | Path = "<bvh>", name: str | None = None) -> BvhClip:
    """Parse BVH text; ``path`` is only used in error messages, ``name`` defaults to its stem."""
    path = Path(path)
    lines = _Lines(path, text)
    line, tokens = lines.next("HIERARCHY")
    if tokens != ["HIERARCHY"]:
        raise lines.error(line, f"expected HIERARCHY, found {' '.join(tokens)!r}")
    joints, end_sites = _parse_hierarchy(lines)
    num_channels = sum(len(j.channels) for j in joints)
    motion, frame_time = _parse_motion(lines, num_channels)
    return BvhClip(name or path.stem, tuple(joints), tuple(end_sites), motion, frame_time)


def read_bvh(path: str | Path, name: str | None = None) -> BvhClip:
    """Read and parse a BVH file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise InputFormatError(path, f"not a text BVH file ({exc.reason})") from None
    return parse_bvh_text(text, path, name)


def _axis_rotations(axis: str, degrees: np.ndarray) -> np.ndarray:
    """(N, 3, 3) right-handed rotations by ``degrees`` about the x, y or z axis."""
    rad = np.deg2rad(degrees)
    c, s = np.cos(rad), np.sin(rad)
    one, zero = np.ones_like(c), np.zeros_like(c)
    if axis == "x":
        rows = ((one, zero, zero), (zero, c, -s), (zero, s, c))
    elif axis == "y":
        rows = ((c, zero, s), (zero, one, zero), (-s, zero, c))
    else:
        rows = ((c, -s, zero), (s, c, zero), (zero, zero, one))
    return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)


def local_transforms(clip: BvhClip, joint: int) -> tuple[np.ndarray, np.ndarray]:
    """A joint's per-frame translation from its parent (N, 3) and local rotation (N, 3, 3)."""
    info = clip.joints[joint]
    n = clip.num_frames
    translation = np.broadcast_to(info.offset, (n, 3)).copy()
    rotation = np.broadcast_to(np.eye(3), (n, 3, 3))
    for k, channel in enumerate(info.channels):
        values = clip.motion[:, info.channel_start + k]
        if channel in _POSITION_CHANNELS:
            translation[:, _POSITION_CHANNELS[channel]] = values
        else:
            rotation = rotation @ _axis_rotations(_ROTATION_CHANNELS[channel], values)
    return translation, rotation


def forward_kinematics(clip: BvhClip, end_sites: bool = False) -> np.ndarray:
    """World positions (N, J, 3) of every joint in file order, in file units.

    With ``end_sites`` the End Sites follow the joints, in file order (J + E positions).
    Vectorised over frames: one pass over the joints, parents before children.
    """
    n, num_joints = clip.num_frames, len(clip.joints)
    positions = np.empty((n, num_joints, 3))
    rotations = np.empty((n, num_joints, 3, 3))
    for j, info in enumerate(clip.joints):
        translation, rotation = local_transforms(clip, j)
        if info.parent < 0:
            positions[:, j] = translation
            rotations[:, j] = rotation
        else:
            parent_rot = rotations[:, info.parent]
            positions[:, j] = positions[:, info.parent] + np.einsum("nij,nj->ni", parent_rot, translation)
            rotations[:, j] = parent_rot @ rotation
    if not end_sites or not clip.end_sites:
        return positions
    tips = [positions[:, e.parent] + rotations[:, e.parent] @ e.offset for e in clip.end_sites]
    return np.concatenate([positions, np.stack(tips, axis=1)], axis=1)
