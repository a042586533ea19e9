"""Skeleton extraction from footage: the daemon's own capture, pose and tracker, written to a keypoint file.

A site collects its normal work this way (training or calibration data that holds no pixels), and
the starter model is trained on what it gives for the walking footage. Short tracks (fewer frames
than ``min_length``, by default a model's window of 30) are dropped: a track shorter than the window
can never be scored (``appliance extract --min-track-frames``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from appliance.capture.camera import Camera
from appliance.keypoints.sequence import KeypointSequence
from appliance.pose.base import PoseBackend
from appliance.tracking.tracker import Tracker


def extract_tracks(
    source: str | Path,
    backend: PoseBackend,
    tracker: Tracker | None = None,
    start: int = 0,
    frames: int | None = None,
    min_length: int = 30,
    name: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[KeypointSequence]:
    """Per-track keypoint sequences of frames ``start`` to ``start + frames`` of a video file; tracks
    seen in fewer than ``min_length`` frames are left out."""
    if min_length < 1:
        raise ValueError(f"min_length must be at least 1, not {min_length}")
    tracker = tracker or Tracker()
    camera = Camera(source, "extract", fps=None, loop=False, realtime=False).start()
    rows: dict[int, list[tuple[int, np.ndarray]]] = {}
    size = None
    try:
        while True:
            frame = camera.read(timeout=10.0)
            if frame is None:
                break
            pos = frame.source_frame if frame.source_frame is not None else frame.index
            if pos < start:
                continue
            if frames is not None and pos >= start + frames:
                break
            size = (frame.image.shape[1], frame.image.shape[0])
            for track in tracker.update(backend.infer(frame.image)).seen:
                rows.setdefault(track.track_id, []).append((pos, track.person.keypoints.copy()))
            if progress is not None:
                progress(pos)
    finally:
        camera.stop()
    if size is None:
        return []
    fps = video_fps(source)
    stem = name or Path(str(source)).stem
    out = []
    for tid, track_rows in sorted(rows.items()):
        if len(track_rows) < min_length:
            continue
        out.append(
            KeypointSequence(
                name=f"{stem}#{tid}",
                layout=backend.layout,
                keypoints=np.stack([kp for _, kp in track_rows]),
                frames=np.array([f for f, _ in track_rows]),
                width=size[0],
                height=size[1],
                fps=fps,
            )
        )
    return out


def video_fps(source: str | Path) -> float:
    """The frame rate a video file declares (30 if it declares none)."""
    import cv2

    cap = cv2.VideoCapture(str(source))
    fps = cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    return float(fps) if fps and fps > 0 else 30.0
