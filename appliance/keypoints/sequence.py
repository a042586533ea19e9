"""The in-memory form every keypoint reader produces: one person's skeleton over consecutive frames."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from appliance.pose.layouts import JointLayout, get_layout


@dataclass
class KeypointSequence:
    """One tracked person's 2D keypoints in image pixels.

    ``keypoints`` is (N, K, 3): x, y in pixels of a ``width`` x ``height`` image, and a confidence in
    [0, 1] (0 or NaN coordinates = joint not seen). ``labels`` holds a per-frame ground truth where
    the source has one (0 = normal, > 0 = anomalous class), else None. ``frames`` are the source's
    frame numbers (gaps are allowed; consecutive entries are treated as consecutive frames).
    """

    name: str
    layout: JointLayout
    keypoints: np.ndarray
    frames: np.ndarray
    width: int
    height: int
    fps: float = 30.0
    labels: np.ndarray | None = None
    meta: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.layout, str):
            self.layout = get_layout(self.layout)
        self.keypoints = np.asarray(self.keypoints, dtype=np.float32)
        self.frames = np.asarray(self.frames, dtype=np.int64)
        n = len(self.keypoints)
        if self.keypoints.ndim != 3 or self.keypoints.shape[1:] != (self.layout.num_joints, 3):
            raise ValueError(
                f"{self.name}: keypoints shape {self.keypoints.shape} does not fit layout "
                f"{self.layout.name} (N x {self.layout.num_joints} x 3)"
            )
        if self.frames.shape != (n,):
            raise ValueError(f"{self.name}: {len(self.frames)} frame numbers for {n} keypoint frames")
        if self.labels is not None:
            self.labels = np.asarray(self.labels, dtype=np.int64)
            if self.labels.shape != (n,):
                raise ValueError(f"{self.name}: {len(self.labels)} labels for {n} keypoint frames")

    def __len__(self) -> int:
        return len(self.keypoints)

    def slice(self, start: int, stop: int, name: str | None = None) -> KeypointSequence:
        """A contiguous part of the sequence (frames ``start`` to ``stop`` by position)."""
        return KeypointSequence(
            name=name or f"{self.name}[{start}:{stop}]",
            layout=self.layout,
            keypoints=self.keypoints[start:stop],
            frames=self.frames[start:stop],
            width=self.width,
            height=self.height,
            fps=self.fps,
            labels=None if self.labels is None else self.labels[start:stop],
            meta=dict(self.meta),
        )
