"""What a camera source is and how it is opened: file, RTSP/HTTP URL, V4L2 device or GStreamer pipeline.

:func:`parse_source` classifies a spec, :func:`source_problem` says why one can never work (a
configuration mistake, as opposed to a camera that is not up yet), :func:`open_source` opens it
with OpenCV and bounded network timeouts.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from appliance.errors import ApplianceError
from appliance.redact import redact

_URL_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_DEVICE_INDEX_RE = re.compile(r"^\d+$")


def read_video_frames(path: Path | str, limit: int | None = None) -> list[np.ndarray]:
    """The decoded BGR frames of a video file (all, or the first ``limit``), for tools and checks
    that look at a whole clip; the daemon reads cameras frame by frame instead."""
    cap = cv2.VideoCapture(str(path))
    frames: list[np.ndarray] = []
    try:
        while limit is None or len(frames) < limit:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame)
    finally:
        cap.release()
    return frames


class CameraError(ApplianceError):
    """A camera or video source that cannot be opened or read; the message names the source."""

    exit_code = 4


class SourceKind(str, Enum):
    """How a source spec was understood."""

    FILE = "file"
    URL = "url"
    DEVICE = "device"
    GSTREAMER = "gstreamer"


@dataclass(frozen=True)
class Source:
    """A classified source: what to hand to ``cv2.VideoCapture`` and with which backend."""

    kind: SourceKind
    target: str | int
    api: int

    @property
    def is_file(self) -> bool:
        return self.kind is SourceKind.FILE

    def __str__(self) -> str:
        """The source for logs, errors and status: a URL's password and secret parameters redacted."""
        return redact(self.target)


def parse_source(spec: str | int | Path | Source) -> Source:
    """Classify a source spec.

    - a string containing ``!``: a GStreamer pipeline (``cv2.CAP_GSTREAMER``), checked first since
      pipelines may contain URLs;
    - ``scheme://...`` (rtsp, http, https, rtmp, udp, ...): a network stream (FFmpeg);
    - an int, a string of digits or a ``/dev/...`` path: a V4L2 device;
    - anything else: a video file path.
    """
    if isinstance(spec, Source):
        return spec
    if isinstance(spec, bool):
        raise CameraError(f"invalid camera source {spec!r}")
    if isinstance(spec, int):
        if spec < 0:
            raise CameraError(f"invalid camera device index {spec}")
        return Source(SourceKind.DEVICE, spec, _device_api())
    if isinstance(spec, Path):
        return Source(SourceKind.FILE, str(spec), cv2.CAP_ANY)
    text = str(spec).strip()
    if not text:
        raise CameraError("empty camera source")
    if "!" in text:
        return Source(SourceKind.GSTREAMER, text, cv2.CAP_GSTREAMER)
    if _URL_RE.match(text):
        return Source(SourceKind.URL, text, cv2.CAP_FFMPEG)
    if _DEVICE_INDEX_RE.match(text):
        return Source(SourceKind.DEVICE, int(text), _device_api())
    if text.startswith("/dev/"):
        return Source(SourceKind.DEVICE, text, _device_api())
    return Source(SourceKind.FILE, text, cv2.CAP_ANY)


def _device_api() -> int:
    return cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY


def source_problem(spec: str | int | Path | Source) -> str | None:
    """Why a source can never work, however long it is retried (None: it may work, or come up later).

    A network camera that is not up yet, or a USB index not enumerated yet, is worth retrying; a
    malformed URL, a ``/dev/`` path or video file that does not exist, or a GStreamer pipeline on an
    OpenCV without GStreamer is a configuration mistake.
    """
    from urllib.parse import urlsplit

    try:
        source = parse_source(spec)
    except CameraError as exc:
        return str(exc)
    target = str(source.target)
    if source.kind is SourceKind.URL:
        try:
            parts = urlsplit(target)
            parts.port  # noqa: B018  (raises ValueError on a non-numeric or out-of-range port)
        except ValueError:  # its text can hold a password taken for the port: not echoed
            return "malformed URL: the port is not a number from 0 to 65535"
        if not parts.hostname:
            return "malformed URL: no host"
        return None
    if source.kind is SourceKind.DEVICE and isinstance(source.target, str):
        return None if Path(target).exists() else f"no such device {target}"
    if source.kind is SourceKind.FILE and not Path(target).exists() and "%" not in target:
        return f"no such video file {target}"
    if source.kind is SourceKind.GSTREAMER and not cv2.videoio_registry.hasBackend(cv2.CAP_GSTREAMER):
        return "GStreamer pipeline, but this OpenCV was built without GStreamer"
    return None


class VideoReader(Protocol):
    """The part of ``cv2.VideoCapture`` the camera uses (lets tests substitute a reader)."""

    def isOpened(self) -> bool: ...

    def read(self) -> tuple[bool, np.ndarray | None]: ...

    def get(self, prop: int) -> float: ...

    def release(self) -> None: ...


def open_source(spec: str | int | Path | Source, timeout_s: float | None = None) -> cv2.VideoCapture:
    """Classify ``spec`` and open it with OpenCV; raise :class:`CameraError` naming it if that fails.

    ``timeout_s`` bounds the open and each read of network streams (FFmpeg backend), so a dead
    camera cannot block the reader thread for FFmpeg's default 30 s.
    """
    source = parse_source(spec)
    if source.kind is SourceKind.FILE and not Path(str(source.target)).exists() and "%" not in str(source):
        raise CameraError(f"cannot open video file {source.target}: no such file")
    if source.kind is SourceKind.GSTREAMER and not cv2.videoio_registry.hasBackend(cv2.CAP_GSTREAMER):
        raise CameraError(
            f"cannot open GStreamer pipeline {str(source)!r}: this OpenCV was built without GStreamer"
        )
    params: list[int] = []
    if source.kind is SourceKind.URL and timeout_s is not None:
        ms = max(1, round(timeout_s * 1000))
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
    try:
        cap = (
            cv2.VideoCapture(source.target, source.api, params)
            if params
            else cv2.VideoCapture(source.target, source.api)
        )
    except cv2.error as exc:
        raise CameraError(f"cannot open {source.kind.value} source {str(source)!r}: {redact(exc)}") from exc
    if not cap.isOpened():
        cap.release()
        raise CameraError(f"cannot open {source.kind.value} source {str(source)!r}")
    return cap
