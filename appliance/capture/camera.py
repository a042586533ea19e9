"""Capture stage: frames from a camera, stream or file, newest first, surviving outages.

A :class:`Camera` owns one OpenCV source (video file, RTSP/HTTP URL, V4L2 device or GStreamer
pipeline; see :func:`parse_source`). A background thread reads frames and keeps only the newest in
a one-slot buffer, so a slow consumer (pose + scorer) always gets the latest picture and memory
never grows: frames it could not take in time are dropped and counted. Live sources are reopened
with exponential backoff when opening or reading fails or no frame arrives for ``stall_timeout_s``;
a read that blocks longer than that is abandoned by a watchdog (OpenCV cannot interrupt it) and a
fresh connection is started beside it.

Files are read as fast as the consumer takes frames (no drops, every frame scored: replays and
tests), or with ``realtime=True`` paced at their own frame rate like a live camera, so dropping
behaves as on the device.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from appliance.errors import ApplianceError
from appliance.redact import redact

log = logging.getLogger("appliance.capture")  # the name journals and log filters know

_URL_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_DEVICE_INDEX_RE = re.compile(r"^\d+$")


class CameraError(ApplianceError):
    """A camera or video source that cannot be opened or read; the message names the source."""

    exit_code = 4


class SourceKind(str, Enum):
    """How a source spec was understood."""

    FILE = "file"
    URL = "url"
    DEVICE = "device"
    GSTREAMER = "gstreamer"


class CameraState(str, Enum):
    """Lifecycle of a :class:`Camera` (the values are what ``stats()`` and events report)."""

    STARTING = "starting"  # first open in progress
    STREAMING = "streaming"  # frames arriving
    RECONNECTING = "reconnecting"  # source lost or stalled; waiting out the backoff, then reopening
    FAILED = "failed"  # gave up after max_failures attempts in a row without a frame
    ENDED = "ended"  # a file reached its end (loop=False)
    STOPPED = "stopped"  # stop() was called

    @property
    def terminal(self) -> bool:
        """No more frames will come."""
        return self in (CameraState.FAILED, CameraState.ENDED, CameraState.STOPPED)


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


@dataclass(frozen=True)
class Frame:
    """One captured frame.

    ``index`` counts the frames the camera published (after ``fps`` decimation), monotonic over
    reconnects and loops, so a gap between two frames a consumer got is the number it missed.
    ``wall_time`` (``time.time()``) is for events and logs, ``mono_time`` (``time.monotonic()``)
    for intervals. Files also give the frame's position in the file (``source_frame`` from 0,
    ``source_ms``); live sources leave them None.
    """

    image: np.ndarray
    index: int
    camera_id: str
    wall_time: float
    mono_time: float
    source_frame: int | None = None
    source_ms: float | None = None


StateCallback = Callable[["Camera", CameraState, CameraState], None]
Opener = Callable[[Source], VideoReader]


class Camera:
    """One source read by a background thread; ``read()`` returns the newest frame.

    Args:
        source: file path, URL, device index / ``/dev/videoN`` or GStreamer pipeline (see
            :func:`parse_source`).
        camera_id: name in frames, stats and logs (default: the source).
        fps: publish at most this rate (decimation by source time for files, capture time for live
            sources); None = the source's own rate.
        stall_timeout_s: no frame for this long (or one read blocking this long) = source lost.
        backoff_initial_s, backoff_max_s, backoff_factor: waits between reopen attempts.
        max_failures: connection attempts in a row that fail to open or give no frame before giving
            up (state ``failed``); None = never.
        loop: files only: restart at the end (demos) instead of ending the stream.
        realtime: files only: pace frames at the file's rate like a live camera (frames the consumer
            misses are dropped); False = as fast as the consumer takes them, none dropped.
        require_open_at_start: ``start()`` raises :class:`CameraError` if the first open fails;
            otherwise the camera keeps retrying in the background.
        on_state_change: called ``(camera, old, new)`` from the capture threads on every change.
        opener: opens a :class:`Source` (default :func:`open_source`); for tests.
    """

    def __init__(
        self,
        source: str | int | Path | Source,
        camera_id: str | None = None,
        *,
        fps: float | None = None,
        stall_timeout_s: float = 5.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        backoff_factor: float = 2.0,
        max_failures: int | None = None,
        loop: bool = False,
        realtime: bool = False,
        require_open_at_start: bool = True,
        on_state_change: StateCallback | None = None,
        opener: Opener | None = None,
    ) -> None:
        if fps is not None and fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        if stall_timeout_s <= 0:
            raise ValueError(f"stall_timeout_s must be positive, got {stall_timeout_s}")
        if backoff_initial_s < 0 or backoff_max_s < backoff_initial_s or backoff_factor < 1:
            raise ValueError("backoff needs 0 <= initial <= max and factor >= 1")
        if max_failures is not None and max_failures < 1:
            raise ValueError(f"max_failures must be >= 1 or None, got {max_failures}")
        self.source = parse_source(source)
        self.camera_id = camera_id if camera_id is not None else str(self.source)
        self.fps = fps
        self.stall_timeout_s = stall_timeout_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.backoff_factor = backoff_factor
        self.max_failures = max_failures
        self.loop = loop
        self.realtime = realtime
        self.require_open_at_start = require_open_at_start
        self.on_state_change = on_state_change
        self._opener: Opener = opener or (lambda src: open_source(src, timeout_s=stall_timeout_s))

        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)  # slot filled / slot taken / state changed
        self._stop = threading.Event()
        self._state = CameraState.STARTING
        self._slot: Frame | None = None
        self._generation = 0  # bumped when the watchdog abandons a hung reader
        self._busy_since: float | None = None  # monotonic start of the read in progress
        self._last_frame_mono: float | None = None
        self._worker: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None
        self._counters = {
            "frames_read": 0,
            "frames_published": 0,
            "frames_consumed": 0,
            "frames_dropped": 0,
            "frames_decimated": 0,
            "reconnects": 0,
            "open_failures": 0,
            "consecutive_failures": 0,
        }
        self._last_error: str | None = None
        self._next_index = 0

    # ------------------------------------------------------------------ public API

    @property
    def state(self) -> CameraState:
        return self._state

    def start(self) -> Camera:
        """Start the capture threads (once). With ``require_open_at_start`` the first open happens
        here, so a wrong source fails at once with a :class:`CameraError` naming it."""
        if self._worker is not None:
            raise RuntimeError(f"camera {self.camera_id} already started")
        first: VideoReader | None = None
        if self.require_open_at_start:
            try:
                first = self._opener(self.source)
            except CameraError as exc:
                self._set_state(CameraState.FAILED, str(exc))
                if self.camera_id == str(self.source):
                    raise
                raise CameraError(f"camera {self.camera_id}: {exc}") from exc
            except Exception as exc:
                self._set_state(CameraState.FAILED, str(exc))
                raise CameraError(f"camera {self.camera_id}: cannot open {self.source}: {exc}") from exc
        self._spawn_worker(0, first)
        self._watchdog = threading.Thread(
            target=self._watch, name=f"camera-{self.camera_id}-watchdog", daemon=True
        )
        self._watchdog.start()
        return self

    def read(self, timeout: float | None = 1.0) -> Frame | None:
        """The newest frame not yet returned, waiting up to ``timeout`` s (None = forever).

        Returns None on timeout, or at once when the camera has ended, failed or stopped and no
        frame is pending.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._slot is None:
                if self._state.terminal:
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            frame, self._slot = self._slot, None
            self._counters["frames_consumed"] += 1
            self._cond.notify_all()
            return frame

    def stop(self, timeout: float = 5.0) -> None:
        """Stop reading and release the source; joins the threads (up to ``timeout`` s: a read
        blocked inside OpenCV cannot be interrupted, its daemon thread is left to finish it)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for thread in (self._worker, self._watchdog):
            if thread is not None and thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        self._set_state(CameraState.STOPPED)

    def stats(self) -> dict[str, Any]:
        """Counters and state, for health reporting.

        Keys: ``camera_id``, ``source``, ``state``, ``frames_read`` (decoded), ``frames_published``
        (after decimation), ``frames_consumed`` (returned by ``read``), ``frames_dropped`` (replaced
        before the consumer took them), ``frames_decimated``, ``reconnects``, ``open_failures``
        (attempts that failed to open or gave no frame, total), ``consecutive_failures`` (since the
        last frame), ``last_error``, ``last_frame_age_s``.
        """
        with self._lock:
            age = None if self._last_frame_mono is None else time.monotonic() - self._last_frame_mono
            return {
                "camera_id": self.camera_id,
                "source": str(self.source),
                "state": self._state.value,
                **self._counters,
                "last_error": self._last_error,
                "last_frame_age_s": age,
            }

    def __enter__(self) -> Camera:
        return self.start() if self._worker is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"Camera({self.camera_id!r}, source={str(self.source)!r}, state={self._state.value})"

    # ------------------------------------------------------------------ internals

    def _set_state(self, new: CameraState, error: str | None = None) -> None:
        with self._cond:
            if error is not None:
                self._last_error = error
            old = self._state
            if old is new or (old is CameraState.STOPPED):
                return
            if new is CameraState.RECONNECTING and old is not CameraState.STARTING:
                self._counters["reconnects"] += 1
            self._state = new
            self._cond.notify_all()
        if error is not None and new is not CameraState.STREAMING:
            log.warning("camera %s: %s -> %s: %s", self.camera_id, old.value, new.value, error)
        else:
            log.info("camera %s: %s -> %s", self.camera_id, old.value, new.value)
        if self.on_state_change is not None:
            try:
                self.on_state_change(self, old, new)
            except Exception:  # a broken callback must not kill capture
                log.exception("camera %s: state callback failed", self.camera_id)

    def _spawn_worker(self, generation: int, first: VideoReader | None = None) -> None:
        self._worker = threading.Thread(
            target=self._run,
            args=(generation, first),
            name=f"camera-{self.camera_id}-{generation}",
            daemon=True,
        )
        self._worker.start()

    def _current(self, generation: int) -> bool:
        return not self._stop.is_set() and self._generation == generation

    def _watch(self) -> None:
        """Abandon a reader stuck in one read for longer than the stall timeout."""
        period = min(0.1, self.stall_timeout_s / 4)
        while not self._stop.wait(period):
            with self._lock:
                busy = self._busy_since
                stuck = busy is not None and time.monotonic() - busy > self.stall_timeout_s
                if stuck:
                    self._generation += 1
                    self._busy_since = None
                    generation = self._generation
            if stuck:
                error = f"no frame from {self.source} for {self.stall_timeout_s:g} s (read blocked)"
                self._set_state(CameraState.RECONNECTING, error)
                self._spawn_worker(generation)

    def _run(self, generation: int, cap: VideoReader | None) -> None:
        """Open, read and reopen until stopped, ended, failed or abandoned by the watchdog."""
        backoff = self.backoff_initial_s
        try:
            while self._current(generation):
                if cap is None:
                    cap = self._try_open()
                    if cap is None:
                        if self._state is CameraState.FAILED:
                            return
                        self._stop.wait(backoff)
                        backoff = min(backoff * self.backoff_factor, self.backoff_max_s)
                        continue
                outcome = self._stream(cap, generation)
                if outcome in ("delivered", "eof_loop"):
                    backoff = self.backoff_initial_s  # the connection worked: start the backoff over
                with contextlib.suppress(Exception):
                    cap.release()
                cap = None
                if outcome == "lost" and self._current(generation):  # opened, but not one frame
                    self._attempt_failed(self._last_error or f"no frame from {self.source}")
                    if self._state is CameraState.FAILED:
                        return
                if outcome in ("ended", "abandoned") or not self._current(generation):
                    return
                if outcome == "eof_loop":
                    continue  # reopen at once, no backoff
                # read failure or stall: wait, then reopen
                self._stop.wait(backoff)
                backoff = min(backoff * self.backoff_factor, self.backoff_max_s)
        except Exception as exc:  # never die silently
            log.exception("camera %s: capture thread crashed", self.camera_id)
            self._set_state(CameraState.FAILED, f"capture thread crashed: {exc!r}")
        finally:
            if cap is not None:
                with contextlib.suppress(Exception):
                    cap.release()

    def _try_open(self) -> VideoReader | None:
        try:
            cap = self._opener(self.source)
        except Exception as exc:
            error = str(exc) if isinstance(exc, CameraError) else f"cannot open {self.source}: {exc}"
            self._attempt_failed(error)
            return None
        return cap

    def _attempt_failed(self, error: str) -> None:
        """Count a connection attempt that gave no frame; give up after ``max_failures`` in a row."""
        with self._lock:
            self._counters["open_failures"] += 1
            self._counters["consecutive_failures"] += 1
            failures = self._counters["consecutive_failures"]
        if self.max_failures is not None and failures >= self.max_failures:
            self._set_state(CameraState.FAILED, f"{error} ({failures} attempts without a frame, giving up)")
        else:
            self._set_state(CameraState.RECONNECTING, error)

    def _stream(self, cap: VideoReader, generation: int) -> str:
        """Read one connection until it ends. Returns ``eof_loop``, ``ended``, ``lost`` (read failed or
        stalled, nothing delivered), ``delivered`` (lost after delivering frames) or ``abandoned``."""
        is_file = self.source.is_file
        src_fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
        if not np.isfinite(src_fps) or src_fps <= 0 or src_fps > 1000:
            src_fps = 0.0
        period = 1.0 / self.fps if self.fps else None
        tolerance = (min(period / 4, 0.5 / src_fps) if src_fps else period / 4) if period else 0.0
        next_due: float | None = None  # decimation, in source seconds (files) or monotonic (live)
        pace_t0: float | None = None  # monotonic time of file frame 0 when realtime
        frame_no = -1
        delivered = False
        last_ok = time.monotonic()
        while self._current(generation):
            with self._lock:
                if self._generation != generation:
                    return "abandoned"
                self._busy_since = time.monotonic()
            try:
                ok, image = cap.read()
            except cv2.error as exc:
                ok, image = False, None
                with self._lock:
                    self._last_error = f"read error from {self.source}: {exc}"
            with self._lock:
                if self._generation != generation:
                    return "abandoned"
                self._busy_since = None
            now = time.monotonic()
            if not ok or image is None:
                if is_file:
                    if self.loop and frame_no >= 0:
                        return "eof_loop"
                    if frame_no >= 0:
                        self._set_state(CameraState.ENDED)
                        return "ended"
                    self._set_state(CameraState.RECONNECTING, f"no frame could be read from {self.source}")
                    return "lost"
                if now - last_ok < self.stall_timeout_s:
                    if self._stop.wait(0.01):
                        return "abandoned"
                    continue  # brief hiccup of a live source: retry until the stall timeout
                error = f"no frame from {self.source} for {now - last_ok:.1f} s (read failed)"
                self._set_state(CameraState.RECONNECTING, error)
                return "delivered" if delivered else "lost"
            last_ok = now
            frame_no += 1
            with self._lock:
                self._counters["frames_read"] += 1
                self._counters["consecutive_failures"] = 0
                self._last_frame_mono = now
            if self._state is not CameraState.STREAMING:
                self._set_state(CameraState.STREAMING)

            source_ms: float | None = None
            if is_file:
                pos = cap.get(cv2.CAP_PROP_POS_MSEC)
                source_ms = float(pos) if np.isfinite(pos) and (pos > 0 or frame_no == 0) else None
                if source_ms is None and src_fps:
                    source_ms = 1000.0 * frame_no / src_fps
                t = (source_ms / 1000.0) if source_ms is not None else now
            else:
                t = now
            if period is not None:
                # keep a frame when its time reaches the next slot, within half a source frame (jitter)
                if next_due is not None and t < next_due - tolerance:
                    with self._lock:
                        self._counters["frames_decimated"] += 1
                    continue
                next_due = t + period if next_due is None or t > next_due + period else next_due + period

            if is_file and self.realtime and src_fps:
                if pace_t0 is None:
                    pace_t0 = now - frame_no / src_fps
                due = pace_t0 + ((source_ms / 1000.0) if source_ms is not None else frame_no / src_fps)
                if due > now and self._stop.wait(due - now):
                    return "abandoned"
            self._publish(
                image,
                source_frame=frame_no if is_file else None,
                source_ms=source_ms,
                backpressure=is_file and not self.realtime,
                generation=generation,
            )
            delivered = True
        return "abandoned"

    def _publish(
        self,
        image: np.ndarray,
        source_frame: int | None,
        source_ms: float | None,
        backpressure: bool,
        generation: int,
    ) -> None:
        with self._cond:
            if backpressure:  # file, not realtime: wait until the consumer took the previous frame
                while self._slot is not None and self._current(generation):
                    self._cond.wait(0.5)
                if not self._current(generation):
                    return
            if self._slot is not None:
                self._counters["frames_dropped"] += 1
            self._slot = Frame(
                image=image,
                index=self._next_index,
                camera_id=self.camera_id,
                wall_time=time.time(),
                mono_time=time.monotonic(),
                source_frame=source_frame,
                source_ms=source_ms,
            )
            self._next_index += 1
            self._counters["frames_published"] += 1
            self._cond.notify_all()
