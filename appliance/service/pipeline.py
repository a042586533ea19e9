"""One camera's processing after pose: tracks -> skeleton maps -> window scores -> anomaly events.

Per frame: the tracker assigns the detected people to tracks; each confirmed track's skeleton is
drawn as a map centred on its own neck (the last seen neck when the neck is hidden); all tracks'
maps are scored in one batched call; each track's detector turns its score into events. A closed
track ends its open anomaly. In whole-frame mode all skeletons go into one map (the paper's
single-worker setup) scored as track -1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from appliance.alarms.detector import HysteresisRule, TrackDetector
from appliance.alarms.events import AnomalyEvent, ModelRef, Skeleton
from appliance.alarms.evidence import TrackClips
from appliance.alarms.zones import CameraZones, foot_point
from appliance.features.skeleton_map import MapSpec, neck_of, render_map
from appliance.models.fused import FusedScorer
from appliance.models.lstm_vae import MultiTrackScorer
from appliance.models.posture_motion import PostureMotionScorer
from appliance.pose.base import Person
from appliance.pose.layouts import to_body_graph
from appliance.tracking.tracker import Tracker

WHOLE_FRAME_TRACK = -1


@dataclass
class FrameResult:
    """What one frame produced (for status, calibration and tests)."""

    scores: dict[int, float] = field(default_factory=dict)  # track id -> window score
    events: list[AnomalyEvent] = field(default_factory=list)
    people: int = 0
    tracks: dict[int, Person] = field(default_factory=dict)  # track id -> its person on this frame


class CameraPipeline:
    def __init__(
        self,
        *,
        appliance_id: str,
        camera_id: str,
        scorer: MultiTrackScorer | PostureMotionScorer | FusedScorer,
        map_spec: MapSpec | None,
        model: ModelRef,
        rule: HysteresisRule,
        tracker: Tracker,
        whole_frame: bool = False,
        zones: CameraZones | None = None,
        evidence: str = "clip",
        evidence_frames: int = 60,
    ) -> None:
        self.appliance_id, self.camera_id = appliance_id, camera_id
        self.scorer, self.map_spec, self.model = scorer, map_spec, model
        self.rule, self.tracker, self.whole_frame = rule, tracker, whole_frame
        self.zones = zones  # None: the whole image counts under the camera's rule
        self.evidence = evidence  # off | peak | clip (detector.evidence)
        self.clips = TrackClips(evidence_frames)
        self.detectors: dict[int, TrackDetector] = {}
        self._last_neck: dict[int, np.ndarray] = {}

    def process(
        self, people: list[Person], image_size: tuple[int, int], when: float, index: int
    ) -> FrameResult:
        """Run one frame's people (from the pose stage) through tracking, scoring and detection."""
        result = FrameResult(people=len(people))
        kind = getattr(self.scorer, "input_kind", "maps")  # maps, body (posture-motion) or both (fused)
        if self.whole_frame:
            drawn = (
                self._whole_frame_body(people)
                if kind == "body"
                else self._whole_frame_map(people, image_size)
            )
            if drawn is not None and kind == "both":
                drawn = ((drawn[0], to_body_graph(drawn[1].keypoints, drawn[1].layout)), drawn[1])
            inputs, persons = (
                ({WHOLE_FRAME_TRACK: drawn[0]}, {WHOLE_FRAME_TRACK: drawn[1]}) if drawn else ({}, {})
            )
            result.tracks = persons
            if drawn and self.evidence == "clip":
                self.clips.add(WHOLE_FRAME_TRACK, drawn[1], when, image_size)
        else:
            update = self.tracker.update(people)
            for tid in update.closed:
                result.events += self.end_track(tid, when, "track_lost")
            inputs, persons = {}, {}
            result.tracks = {track.track_id: track.person for track in update.seen}
            for track in update.seen:
                p = track.person
                if self.evidence == "clip":
                    self.clips.add(track.track_id, p, when, image_size)
                m = self._track_input(kind, track.track_id, p, image_size)
                if m is not None:
                    inputs[track.track_id] = m
                    persons[track.track_id] = p
        for tid, score in self.scorer.push(inputs).items():
            if score is None:
                continue
            result.scores[tid] = score
            detector = self._detector(tid)
            placement = None
            if self.zones is not None:
                feet = foot_point(persons[tid], image_size)
                placement = self.zones.place(tid, feet, when, self.rule)
            rule = placement.rule if placement is not None and placement.rule else detector.rule
            # the detector keeps a skeleton only from windows above threshold (anomaly peaks): build it
            # for those alone, not for every track on every frame, and never with evidence off
            above = score > rule.threshold and (placement is None or placement.counts)
            keep = above and self.evidence != "off"
            skeleton = _skeleton(persons[tid], image_size, index) if keep else None
            result.events += self._with_evidence(detector.observe(score, when, skeleton, placement))
        return result

    def end_track(self, track_id: int, when: float, reason: str) -> list[AnomalyEvent]:
        """Forget a track; end its anomaly if one is open."""
        det = self.detectors.pop(track_id, None)
        ended = self._with_evidence([det.close(when, reason)]) if det is not None and det.active else []
        self.scorer.drop(track_id)
        self.clips.drop(track_id)
        self._last_neck.pop(track_id, None)
        if self.zones is not None:
            self.zones.forget(track_id)
        return ended

    def _with_evidence(self, events: list[AnomalyEvent]) -> list[AnomalyEvent]:
        """Attach the track's skeleton clip to ``start`` and ``end`` (``detector.evidence: clip``)."""
        if self.evidence == "clip":
            for e in events:
                if e.type in ("start", "end"):
                    e.evidence = self.clips.evidence(e.track_id)
        return events

    def end_all(self, when: float, reason: str) -> list[AnomalyEvent]:
        """Close every track (stream ended, camera reopened, shutdown)."""
        ids = set(self.detectors) | set(self.tracker.close_all())
        events: list[AnomalyEvent] = []
        for tid in sorted(ids):
            events += self.end_track(tid, when, reason)
        self.scorer.clear()
        return events

    def swap_model(
        self,
        scorer: MultiTrackScorer | PostureMotionScorer | FusedScorer,
        map_spec: MapSpec | None,
        model: ModelRef,
        threshold: float,
        when: float,
    ) -> list[AnomalyEvent]:
        """Score with another model from the next frame on; tracks are kept.

        Open anomalies end (``model_changed``: the new model's scores are on its own scale) and every
        track's detector starts afresh. With the same map definition the new scorer takes over the
        tracks' recent maps, so scoring continues without a gap; otherwise windows refill (T frames).
        """
        events = []
        for tid in sorted(self.detectors):
            det = self.detectors[tid]
            if det.active:
                events.append(det.close(when, "model_changed"))
        self.detectors.clear()
        if map_spec == self.map_spec:
            scorer.take_over(self.scorer)
        self.scorer, self.map_spec, self.model = scorer, map_spec, model
        self.rule = HysteresisRule(
            threshold, self.rule.start_windows, self.rule.end_windows, self.rule.update_interval_s
        )
        return events

    def set_threshold(self, threshold: float) -> None:
        self.rule = HysteresisRule(
            threshold, self.rule.start_windows, self.rule.end_windows, self.rule.update_interval_s
        )
        for det in self.detectors.values():
            det.set_threshold(threshold)

    def _detector(self, tid: int) -> TrackDetector:
        if tid not in self.detectors:
            self.detectors[tid] = TrackDetector(self.appliance_id, self.camera_id, tid, self.model, self.rule)
        return self.detectors[tid]

    def _track_map(self, tid: int, person: Person, image_size: tuple[int, int]) -> np.ndarray | None:
        body = to_body_graph(person.keypoints, person.layout)
        neck = neck_of(body, self.map_spec.min_confidence)
        if neck is None:
            neck = self._last_neck.get(tid)
            if neck is None:
                return None  # not drawable until its neck has been seen once
        self._last_neck[tid] = neck
        return render_map(body, neck, image_size, self.map_spec)

    def _track_input(self, kind: str, tid: int, person: Person, image_size: tuple[int, int]):
        if kind == "body":
            return to_body_graph(person.keypoints, person.layout)
        drawn = self._track_map(tid, person, image_size)
        if kind == "maps" or drawn is None:
            return drawn
        return drawn, to_body_graph(person.keypoints, person.layout)

    def _whole_frame_body(self, people: list[Person]) -> tuple[np.ndarray, Person] | None:
        """Whole-frame mode for the posture-motion model: the largest person's body."""
        if not people:
            return None
        main = people[int(np.argmax([(p.box[2] - p.box[0]) * (p.box[3] - p.box[1]) for p in people]))]
        return to_body_graph(main.keypoints, main.layout), main

    def _whole_frame_map(
        self, people: list[Person], image_size: tuple[int, int]
    ) -> tuple[np.ndarray, Person] | None:
        """All people drawn in one map centred on the largest one's neck; returns it and that person."""
        if not people:
            return None  # nobody in view: nothing to judge, the window waits
        areas = [(p.box[2] - p.box[0]) * (p.box[3] - p.box[1]) for p in people]
        main = int(np.argmax(areas))
        bodies = np.stack([to_body_graph(p.keypoints, p.layout) for p in people])
        neck = neck_of(bodies[main], self.map_spec.min_confidence)
        if neck is None:
            neck = self._last_neck.get(WHOLE_FRAME_TRACK)
            if neck is None:
                return None
        self._last_neck[WHOLE_FRAME_TRACK] = neck
        return render_map(bodies, neck, image_size, self.map_spec), people[main]


def _skeleton(person: Person, image_size: tuple[int, int], index: int) -> Skeleton:
    pts = np.round(person.keypoints.astype(np.float64), 2)
    return Skeleton(
        layout=person.layout.name,
        image_size=image_size,
        frame_index=index,
        points=[tuple(p) for p in pts.tolist()],
    )
