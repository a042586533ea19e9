"""Evidence without video: a track's recent skeletons, kept per track and attached to an anomaly's
``start`` and ``end`` as a compact clip (quarter-pixel uint16 joints and uint8 confidences of the
15-joint body graph, zlib-compressed, base64): a few kB that ``appliance render-event`` draws."""

from __future__ import annotations

import base64
import zlib
from collections import deque

import numpy as np

from appliance.alarms.events import Evidence
from appliance.pose.base import Person
from appliance.pose.layouts import BODY_JOINTS, to_body_graph

QUARTER = 4.0  # points are stored in quarter pixels: 0.25 px steps up to 16383 px


def _pack(array: np.ndarray) -> str:
    return base64.b64encode(zlib.compress(array.tobytes(), 9)).decode("ascii")


def _unpack(text: str, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    return np.frombuffer(zlib.decompress(base64.b64decode(text)), dtype=dtype).reshape(shape)


def encode_clip(times_ms: list[int], bodies: np.ndarray, image_size: tuple[int, int]) -> Evidence:
    """``bodies`` (F, 15, 3) x, y pixels and confidence at ``times_ms`` (epoch ms) -> :class:`Evidence`."""
    xy = np.clip(np.nan_to_num(bodies[..., :2]) * QUARTER, 0, 65535).round().astype("<u2")
    conf = np.clip(np.nan_to_num(bodies[..., 2]) * 255, 0, 255).round().astype(np.uint8)
    t0 = int(times_ms[0])
    return Evidence(
        image_size=image_size,
        frames=len(times_ms),
        t0_ms=t0,
        times_ms=[int(t) - t0 for t in times_ms],
        points=_pack(xy),
        confidence=_pack(conf),
    )


def decode_clip(ev: Evidence) -> tuple[np.ndarray, np.ndarray]:
    """(epoch ms (F,), bodies (F, 15, 3)) of an evidence clip."""
    n = len(BODY_JOINTS)
    xy = _unpack(ev.points, "<u2", (ev.frames, n, 2)).astype(np.float32) / QUARTER
    conf = _unpack(ev.confidence, "u1", (ev.frames, n)).astype(np.float32) / 255.0
    times = ev.t0_ms + np.asarray(ev.times_ms, dtype=np.int64)
    return times, np.concatenate([xy, conf[..., None]], axis=-1)


class TrackClips:
    """The last ``frames`` skeletons of every track, ready to become evidence."""

    def __init__(self, frames: int = 60) -> None:
        self.frames = frames
        self._clips: dict[int, deque[tuple[int, np.ndarray]]] = {}
        self._sizes: dict[int, tuple[int, int]] = {}  # each track's frame size, for the pixels

    def add(self, track_id: int, person: Person, when: float, image_size: tuple[int, int]) -> None:
        clip = self._clips.setdefault(track_id, deque(maxlen=self.frames))
        clip.append((round(when * 1000), to_body_graph(person.keypoints, person.layout)))
        self._sizes[track_id] = image_size

    def evidence(self, track_id: int) -> Evidence | None:
        clip = self._clips.get(track_id)
        if not clip:
            return None
        times, bodies = zip(*clip, strict=True)
        return encode_clip(list(times), np.stack(bodies), self._sizes[track_id])

    def drop(self, track_id: int) -> None:
        self._clips.pop(track_id, None)
        self._sizes.pop(track_id, None)
