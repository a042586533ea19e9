"""``keypoints`` pose backend: replays skeletons a site already has (OpenPose/AlphaPose JSON, our CSV/NPZ).

Each call to :meth:`KeypointReplay.infer` returns the skeletons of the next frame of the file, so a
replay runs through the same tracker, maps, scorer and detector as a live camera. Sequences in the
file are played side by side as concurrent tracks (a multi-person track file), or one after another
(``consecutive``: a file of separate videos, such as URFD's). A sequence's own identity is passed on
as the track hint, so the tracker keeps the file's tracks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from appliance.keypoints.readers import read_keypoints
from appliance.keypoints.sequence import KeypointSequence
from appliance.pose.base import Person


class KeypointReplay:
    def __init__(self, path: Path, layout: str | None = None, consecutive: bool = False) -> None:
        self.sequences: list[KeypointSequence] = read_keypoints(path, layout=layout)
        self.layout = self.sequences[0].layout
        self.width, self.height = self.sequences[0].width, self.sequences[0].height
        self.fps = self.sequences[0].fps
        # timeline: for each replay step, (sequence index, row) pairs
        self._steps: list[list[tuple[int, int]]] = []
        if consecutive:
            for s, seq in enumerate(self.sequences):
                self._steps += [[(s, r)] for r in range(len(seq))]
        else:
            first = min(int(seq.frames[0]) for seq in self.sequences if len(seq))
            last = max(int(seq.frames[-1]) for seq in self.sequences if len(seq))
            rows: dict[int, list[tuple[int, int]]] = {}
            for s, seq in enumerate(self.sequences):
                for r, f in enumerate(seq.frames):
                    rows.setdefault(int(f), []).append((s, r))
            self._steps = [rows.get(f, []) for f in range(first, last + 1)]
        self._pos = 0

    def __len__(self) -> int:
        return len(self._steps)

    @property
    def finished(self) -> bool:
        return self._pos >= len(self._steps)

    def infer(self, frame: np.ndarray | None = None) -> list[Person]:
        if self.finished:
            return []
        people = []
        for s, r in self._steps[self._pos]:
            kp = self.sequences[s].keypoints[r].copy()
            kp[~np.isfinite(kp).all(axis=1)] = 0.0
            people.append(Person(kp, self.layout, Person.box_of(kp), 1.0, track_hint=s))
        self._pos += 1
        return people

    def skip(self) -> None:
        """Move past the next frame without returning it (a frame off the model's time base)."""
        if not self.finished:
            self._pos += 1

    def reset(self) -> None:
        self._pos = 0

    def close(self) -> None:
        pass
