"""Multi-person tracking: gives each person a stable id across frames so each gets its own window.

Detections are matched to tracks greedily by similarity: box overlap (IoU), or, for small people
whose boxes stop overlapping when they move fast, the distance between box centres relative to the
box size. A track survives ``max_missed_frames`` unseen frames (short occlusions) and is confirmed
after ``min_hits`` sightings, so a one-frame false detection never reaches the scorer. Sources
that carry their own identities (replayed track files) are followed by those.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from appliance.pose.base import Person


@dataclass
class Track:
    track_id: int
    person: Person
    hits: int = 1
    missed: int = 0
    confirmed: bool = False
    hint: int | None = None


def box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def similarity(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """IoU, or for disjoint boxes up to 0.5 by centre distance (within half a box height)."""
    iou = box_iou(a, b)
    if iou > 0:
        return iou
    size = max(a[3] - a[1], b[3] - b[1], a[2] - a[0], b[2] - b[0], 1.0)
    d = np.hypot((a[0] + a[2] - b[0] - b[2]) / 2, (a[1] + a[3] - b[1] - b[3]) / 2)
    return max(0.0, 0.5 * (1.0 - 2.0 * d / size))


@dataclass
class TrackUpdate:
    """What one frame did to the tracks."""

    seen: list[Track] = field(default_factory=list)  # confirmed tracks with a detection this frame
    closed: list[int] = field(default_factory=list)  # track ids ended this frame


class Tracker:
    def __init__(self, min_iou: float = 0.2, max_missed_frames: int = 15, min_hits: int = 3) -> None:
        self.min_iou = min_iou
        self.max_missed = max_missed_frames
        self.min_hits = min_hits
        self.tracks: dict[int, Track] = {}
        self._next_id = 1

    def update(self, people: list[Person]) -> TrackUpdate:
        out = TrackUpdate()
        unmatched = list(range(len(people)))
        matched: dict[int, int] = {}
        # 1. identities from the source itself
        by_hint = {t.hint: tid for tid, t in self.tracks.items() if t.hint is not None}
        for i in list(unmatched):
            hint = people[i].track_hint
            if hint is not None and hint in by_hint and by_hint[hint] not in matched:
                matched[by_hint[hint]] = i
                unmatched.remove(i)
        # 2. greedy by similarity
        pairs = sorted(
            (
                (similarity(t.person.box, people[i].box), tid, i)
                for tid, t in self.tracks.items()
                if tid not in matched and t.hint is None
                for i in unmatched
                if people[i].track_hint is None
            ),
            reverse=True,
        )
        used: set[int] = set()
        for sim, tid, i in pairs:
            if sim < self.min_iou:
                break
            if tid in matched or i in used:
                continue
            matched[tid] = i
            used.add(i)
        unmatched = [i for i in unmatched if i not in used]
        for tid, t in list(self.tracks.items()):
            if tid in matched:
                t.person = people[matched[tid]]
                t.hits += 1
                t.missed = 0
                t.confirmed = t.confirmed or t.hits >= self.min_hits
                if t.confirmed:
                    out.seen.append(t)
            else:
                t.missed += 1
                if t.missed > self.max_missed:
                    del self.tracks[tid]
                    if t.confirmed:
                        out.closed.append(tid)
        for i in unmatched:
            t = Track(self._next_id, people[i], hint=people[i].track_hint)
            self._next_id += 1
            t.confirmed = self.min_hits <= 1
            self.tracks[t.track_id] = t
            if t.confirmed:
                out.seen.append(t)
        return out

    def close_all(self) -> list[int]:
        """End every track (camera reopened or shutdown); returns the confirmed ones' ids."""
        ids = [tid for tid, t in self.tracks.items() if t.confirmed]
        self.tracks.clear()
        return ids
