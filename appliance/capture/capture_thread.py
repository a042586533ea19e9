"""A camera's capture thread: open the source, read it, reopen it with backoff, until told to stop.

:func:`read_connection` reads one opened connection until it ends, fails, stalls or is abandoned.

Frames are decimated to the camera's ``fps`` (:class:`~appliance.capture.frame_rate.RateGate`, by
source time for files and capture time live), files are paced at their own rate when ``realtime``,
and each kept frame goes to the camera's :class:`~appliance.capture.newest_frame.NewestFrame`.
:func:`run_capture` calls it once per connection and decides from the outcome whether to reopen at
once, after a backoff, or not at all. Both work through the :class:`~appliance.capture.camera.Camera`
methods meant for its capture threads.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING, Literal

import cv2
import numpy as np

from appliance.capture.camera_state import CameraState
from appliance.capture.frame_rate import RateGate
from appliance.capture.sources import CameraError

if TYPE_CHECKING:
    from appliance.capture.camera import Camera
    from appliance.capture.sources import VideoReader

log = logging.getLogger("appliance.capture")  # the name journals and log filters know

#: ``eof_loop``: a looping file ended (reopen at once); ``ended``: a file ended; ``lost``: the read
#: failed or stalled before one frame; ``delivered``: lost after frames; ``abandoned``: stopped, or
#: the watchdog gave up on this reader.
Outcome = Literal["eof_loop", "ended", "lost", "delivered", "abandoned"]


def source_fps(cap: VideoReader) -> float:
    """The rate the source declares, 0.0 when it declares none or nonsense."""
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    return fps if np.isfinite(fps) and 0 < fps <= 1000 else 0.0


def read_connection(cam: Camera, cap: VideoReader, generation: int) -> Outcome:
    """Read ``cap`` for ``cam`` until the connection ends; returns how it ended."""
    is_file = cam.source.is_file
    src_fps = source_fps(cap)
    period = 1.0 / cam.fps if cam.fps else None
    # keep a frame when its time reaches the next slot, within half a source frame (jitter)
    tolerance = (min(period / 4, 0.5 / src_fps) if src_fps else period / 4) if period else None
    gate = RateGate(cam.fps, tolerance)
    pace_t0: float | None = None  # monotonic time of file frame 0 when realtime
    frame_no = -1
    delivered = False
    last_ok = time.monotonic()
    while cam.is_current(generation):
        if not cam.begin_read(generation):
            return "abandoned"
        error = None
        try:
            ok, image = cap.read()
        except cv2.error as exc:
            ok, image, error = False, None, f"read error from {cam.source}: {exc}"
        if not cam.end_read(generation, error):
            return "abandoned"
        now = time.monotonic()
        if not ok or image is None:
            if is_file:
                if cam.loop and frame_no >= 0:
                    return "eof_loop"
                if frame_no >= 0:
                    cam.set_state(CameraState.ENDED)
                    return "ended"
                cam.set_state(CameraState.RECONNECTING, f"no frame could be read from {cam.source}")
                return "lost"
            if now - last_ok < cam.stall_timeout_s:
                if cam.wait_stop(0.01):
                    return "abandoned"
                continue  # brief hiccup of a live source: retry until the stall timeout
            cam.set_state(
                CameraState.RECONNECTING,
                f"no frame from {cam.source} for {now - last_ok:.1f} s (read failed)",
            )
            return "delivered" if delivered else "lost"
        last_ok = now
        frame_no += 1

        source_ms: float | None = None
        if is_file:
            pos = cap.get(cv2.CAP_PROP_POS_MSEC)
            source_ms = float(pos) if np.isfinite(pos) and (pos > 0 or frame_no == 0) else None
            if source_ms is None and src_fps:
                source_ms = 1000.0 * frame_no / src_fps
        t = source_ms / 1000.0 if source_ms is not None else now
        kept = gate.keep(t)
        cam.frame_arrived(now, decimated=not kept)
        if not kept:
            continue
        if is_file and cam.realtime and src_fps:
            if pace_t0 is None:
                pace_t0 = now - frame_no / src_fps
            due = pace_t0 + ((source_ms / 1000.0) if source_ms is not None else frame_no / src_fps)
            if due > now and cam.wait_stop(due - now):
                return "abandoned"
        cam.frames.put(
            image,
            source_frame=frame_no if is_file else None,
            source_ms=source_ms,
            backpressure=is_file and not cam.realtime,
            current=lambda: cam.is_current(generation),
        )
        delivered = True
    return "abandoned"


def run_capture(cam: Camera, generation: int, cap: VideoReader | None) -> None:
    """Open, read and reopen until stopped, ended, failed or abandoned by the watchdog."""
    backoff = cam.backoff_initial_s
    try:
        while cam.is_current(generation):
            if cap is None:
                cap = _try_open(cam)
                if cap is None:
                    if cam.state is CameraState.FAILED:
                        return
                    cam.wait_stop(backoff)
                    backoff = min(backoff * cam.backoff_factor, cam.backoff_max_s)
                    continue
            outcome = read_connection(cam, cap, generation)
            if outcome in ("delivered", "eof_loop"):
                backoff = cam.backoff_initial_s  # the connection worked: start the backoff over
            with contextlib.suppress(Exception):
                cap.release()
            cap = None
            if outcome == "lost" and cam.is_current(generation):  # opened, but not one frame
                cam.attempt_failed(cam.last_error or f"no frame from {cam.source}")
                if cam.state is CameraState.FAILED:
                    return
            if outcome in ("ended", "abandoned") or not cam.is_current(generation):
                return
            if outcome == "eof_loop":
                continue  # reopen at once, no backoff
            # read failure or stall: wait, then reopen
            cam.wait_stop(backoff)
            backoff = min(backoff * cam.backoff_factor, cam.backoff_max_s)
    except Exception as exc:  # never die silently
        log.exception("camera %s: capture thread crashed", cam.camera_id)
        cam.set_state(CameraState.FAILED, f"capture thread crashed: {exc!r}")
    finally:
        if cap is not None:
            with contextlib.suppress(Exception):
                cap.release()


def _try_open(cam: Camera) -> VideoReader | None:
    try:
        cap = cam.opener(cam.source)
    except Exception as exc:
        error = str(exc) if isinstance(exc, CameraError) else f"cannot open {cam.source}: {exc}"
        cam.attempt_failed(error)
        return None
    return cap


def watch_reads(cam: Camera) -> None:
    """The watchdog thread: abandon a reader stuck in one read for longer than the stall timeout and
    start a fresh one beside it (OpenCV cannot interrupt a blocked read)."""
    period = min(0.1, cam.stall_timeout_s / 4)
    while not cam.wait_stop(period):
        generation = cam.abandon_stuck_reader()
        if generation is not None:
            error = f"no frame from {cam.source} for {cam.stall_timeout_s:g} s (read blocked)"
            cam.set_state(CameraState.RECONNECTING, error)
            cam.spawn_worker(generation)
