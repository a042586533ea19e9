"""Capture stage: frames from a camera, stream or file, newest first, surviving outages.

A :class:`Camera` owns one OpenCV source (video file, RTSP/HTTP URL, V4L2 device or GStreamer
pipeline; see :mod:`appliance.capture.sources`). A background thread reads frames
(:mod:`.connection`) and keeps only the newest in a one-slot buffer (:mod:`.newest_frame`), so a
slow consumer (pose + scorer) always gets the latest picture and memory never grows: frames it could
not take in time are dropped and counted. Live sources are reopened with exponential backoff when
opening or reading fails or no frame arrives for ``stall_timeout_s``; a read that blocks longer than
that is abandoned by a watchdog (OpenCV cannot interrupt it) and a fresh connection is started
beside it.

Files are read as fast as the consumer takes frames (no drops, every frame scored: replays and
tests), or with ``realtime=True`` paced at their own frame rate like a live camera, so dropping
behaves as on the device.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance.capture.camera_state import CameraState
from appliance.capture.capture_thread import run_capture, watch_reads
from appliance.capture.newest_frame import Frame, NewestFrame
from appliance.capture.sources import CameraError, Source, VideoReader, open_source, parse_source

log = logging.getLogger("appliance.capture")  # the name journals and log filters know


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
        self.opener: Opener = opener or (lambda src: open_source(src, timeout_s=stall_timeout_s))

        self.frames = NewestFrame(self.camera_id)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._state = CameraState.STARTING
        self._generation = 0  # bumped when the watchdog abandons a hung reader
        self._busy_since: float | None = None  # monotonic start of the read in progress
        self._last_frame_mono: float | None = None
        self._worker: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None
        self._counters = dict.fromkeys(
            ("frames_read", "frames_decimated", "reconnects", "open_failures", "consecutive_failures"), 0
        )
        self._last_error: str | None = None

    # ------------------------------------------------------------------ public API

    @property
    def state(self) -> CameraState:
        return self._state

    @property
    def last_error(self) -> str | None:
        return self._last_error

    def start(self) -> Camera:
        """Start the capture threads (once). With ``require_open_at_start`` the first open happens
        here, so a wrong source fails at once with a :class:`CameraError` naming it."""
        if self._worker is not None:
            raise RuntimeError(f"camera {self.camera_id} already started")
        first: VideoReader | None = None
        if self.require_open_at_start:
            try:
                first = self.opener(self.source)
            except CameraError as exc:
                self.set_state(CameraState.FAILED, str(exc))
                if self.camera_id == str(self.source):
                    raise
                raise CameraError(f"camera {self.camera_id}: {exc}") from exc
            except Exception as exc:
                self.set_state(CameraState.FAILED, str(exc))
                raise CameraError(f"camera {self.camera_id}: cannot open {self.source}: {exc}") from exc
        self.spawn_worker(0, first)
        self._watchdog = threading.Thread(
            target=watch_reads, args=(self,), name=f"camera-{self.camera_id}-watchdog", daemon=True
        )
        self._watchdog.start()
        return self

    def read(self, timeout: float | None = 1.0) -> Frame | None:
        """The newest frame not yet returned, waiting up to ``timeout`` s (None = forever).

        Returns None on timeout, or at once when the camera has ended, failed or stopped and no
        frame is pending.
        """
        return self.frames.take(timeout, lambda: self._state.terminal)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop reading and release the source; joins the threads (up to ``timeout`` s: a read
        blocked inside OpenCV cannot be interrupted, its daemon thread is left to finish it)."""
        self._stop.set()
        self.frames.wake()
        deadline = time.monotonic() + timeout
        for thread in (self._worker, self._watchdog):
            if thread is not None and thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        self.set_state(CameraState.STOPPED)

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
            c, f = self._counters, self.frames
            return {
                "camera_id": self.camera_id,
                "source": str(self.source),
                "state": self._state.value,
                "frames_read": c["frames_read"],
                "frames_published": f.published,
                "frames_consumed": f.consumed,
                "frames_dropped": f.dropped,
                **{k: v for k, v in c.items() if k != "frames_read"},
                "last_error": self._last_error,
                "last_frame_age_s": age,
            }

    def __enter__(self) -> Camera:
        return self.start() if self._worker is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"Camera({self.camera_id!r}, source={str(self.source)!r}, state={self._state.value})"

    # ------------------------------------------------------------------ for the capture threads

    def is_current(self, generation: int) -> bool:
        """Whether the reader of ``generation`` should go on (not stopped, not abandoned)."""
        return not self._stop.is_set() and self._generation == generation

    def wait_stop(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True when the camera was stopped meanwhile."""
        return self._stop.wait(seconds)

    def begin_read(self, generation: int) -> bool:
        """A blocking read starts (the watchdog times it); False when this reader was abandoned."""
        with self._lock:
            if self._generation != generation:
                return False
            self._busy_since = time.monotonic()
            return True

    def end_read(self, generation: int, error: str | None = None) -> bool:
        """The read returned (``error``: it raised); False when the watchdog abandoned this reader."""
        with self._lock:
            self._last_error = error or self._last_error
            if self._generation != generation:
                return False
            self._busy_since = None
            return True

    def frame_arrived(self, now: float, decimated: bool) -> None:
        """A frame was decoded (``decimated``: off the ``fps`` clock); failures in a row start over."""
        with self._lock:
            self._counters["frames_read"] += 1
            self._counters["frames_decimated"] += decimated
            self._counters["consecutive_failures"] = 0
            self._last_frame_mono = now
        if self._state is not CameraState.STREAMING:
            self.set_state(CameraState.STREAMING)

    def abandon_stuck_reader(self) -> int | None:
        """A read blocked past the stall timeout is given up: the new reader generation, else None."""
        with self._lock:
            busy = self._busy_since
            if busy is None or time.monotonic() - busy <= self.stall_timeout_s:
                return None
            self._generation += 1
            self._busy_since = None
            return self._generation

    def set_state(self, new: CameraState, error: str | None = None) -> None:
        """Move to ``new`` (``error``: why), wake a waiting consumer, log it and tell the callback."""
        with self._lock:
            if error is not None:
                self._last_error = error
            old = self._state
            if old is new or (old is CameraState.STOPPED):
                return
            if new is CameraState.RECONNECTING and old is not CameraState.STARTING:
                self._counters["reconnects"] += 1
            self._state = new
        self.frames.wake()
        if error is not None and new is not CameraState.STREAMING:
            log.warning("camera %s: %s -> %s: %s", self.camera_id, old.value, new.value, error)
        else:
            log.info("camera %s: %s -> %s", self.camera_id, old.value, new.value)
        if self.on_state_change is not None:
            try:
                self.on_state_change(self, old, new)
            except Exception:  # a broken callback must not kill capture
                log.exception("camera %s: state callback failed", self.camera_id)

    def spawn_worker(self, generation: int, first: VideoReader | None = None) -> None:
        self._worker = threading.Thread(
            target=run_capture,
            args=(self, generation, first),
            name=f"camera-{self.camera_id}-{generation}",
            daemon=True,
        )
        self._worker.start()

    def attempt_failed(self, error: str) -> None:
        """Count a connection attempt that gave no frame; give up after ``max_failures`` in a row."""
        with self._lock:
            self._counters["open_failures"] += 1
            self._counters["consecutive_failures"] += 1
            failures = self._counters["consecutive_failures"]
        if self.max_failures is not None and failures >= self.max_failures:
            self.set_state(CameraState.FAILED, f"{error} ({failures} attempts without a frame, giving up)")
        else:
            self.set_state(CameraState.RECONNECTING, error)
