"""Hysteresis detector and multi-person tracker: the logic between window scores and events."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.alarms.detector import HysteresisRule, TrackDetector
from appliance.alarms.events import AnomalyEvent, ModelRef
from appliance.keypoints.urfd import read_urfd_csv
from appliance.pose.base import Person
from appliance.tracking.tracker import Tracker

from .conftest import DATA


def detector(**kw) -> TrackDetector:
    rule = HysteresisRule(threshold=10.0, start_windows=3, end_windows=4, update_interval_s=1.0, **kw)
    ids = iter(f"ev{i}" for i in range(100))
    return TrackDetector("box1", "cam1", 7, ModelRef(name="m", version="1"), rule, new_id=lambda: next(ids))


def feed(det: TrackDetector, scores: list[float], t0: float = 1000.0, dt: float = 0.1) -> list[AnomalyEvent]:
    events = []
    for i, s in enumerate(scores):
        events += det.observe(s, t0 + i * dt, None)
    return events


def test_anomaly_starts_only_after_n_consecutive_windows_above():
    det = detector()
    assert feed(det, [11, 12, 5, 11, 12, 5, 30, 2]) == []  # never 3 in a row
    events = feed(det, [11, 12, 13])
    assert [e.type for e in events] == ["start"]
    assert events[0].peak_score == 13 and events[0].frames_above == 3 and events[0].track_id == 7


def test_anomaly_ends_after_m_windows_below_and_keeps_one_event_id():
    det = detector()
    events = feed(det, [20, 25, 22] + [15] * 25 + [1, 1, 1, 1] + [1] * 5)
    kinds = [e.type for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end" and set(kinds[1:-1]) == {"update"}
    assert len({e.event_id for e in events}) == 1
    assert [e.seq for e in events] == list(range(len(events)))
    assert events[-1].end_reason == "below_threshold" and events[-1].peak_score == 25
    assert events[-1].ended_at_ms == events[-1].time_ms
    # updates are rate-limited: 28 windows at 10 windows/s above threshold -> about 2-3 updates, not 25
    assert 2 <= kinds.count("update") <= 3
    # a short dip below does not end it
    det2 = detector()
    assert [e.type for e in feed(det2, [20, 20, 20, 1, 1, 1, 20, 1, 1, 1])] == ["start"]


def test_a_new_anomaly_after_an_end_gets_a_new_id():
    det = detector()
    events = feed(det, [20] * 3 + [1] * 4 + [20] * 3)
    assert [e.type for e in events] == ["start", "end", "start"]
    assert events[0].event_id != events[2].event_id


def test_nan_scores_raise_nothing():
    det = detector()
    assert feed(det, [float("nan")] * 10) == []


def test_event_payload_round_trips_through_json():
    det = detector()
    ev = feed(det, [20, 20, 20])[0]
    back = AnomalyEvent.model_validate_json(ev.to_json())
    assert back == ev and back.time.endswith("Z") and back.started_at_ms == 1000200


def _people(frame_kps: list[np.ndarray], layout) -> list[Person]:
    return [Person(kp, layout, Person.box_of(kp), 1.0) for kp in frame_kps]


@pytest.mark.skipif(not (DATA / "urfd-falls").is_dir(), reason="real data not found")
def test_tracker_keeps_two_real_people_apart_through_a_short_occlusion():
    """Two real URFD skeleton sequences side by side (one shifted 300 px), detections in random order."""
    seqs = {s.name: s for s in read_urfd_csv(DATA / "urfd-falls" / "pose_urfd_3classes.csv")}
    a, b = seqs["fall-01"].keypoints[:60].copy(), seqs["fall-02"].keypoints[:60].copy()
    b[..., 0] += 300.0
    layout = seqs["fall-01"].layout
    tracker = Tracker(min_iou=0.2, max_missed_frames=5, min_hits=2)
    rng = np.random.default_rng(0)
    ids_a, ids_b = set(), set()
    for i in range(60):
        frame = [("a", a[i]), ("b", b[i])]
        if 20 <= i < 24:
            frame = frame[1:]  # person a hidden for 4 frames (shorter than max_missed_frames)
        order = rng.permutation(len(frame))
        frame = [frame[k] for k in order]
        update = tracker.update(_people([kp for _, kp in frame], layout))
        assert update.closed == []
        for track in update.seen:
            is_a = np.array_equal(track.person.keypoints, a[i])
            (ids_a if is_a else ids_b).add(track.track_id)
    assert len(ids_a) == 1 and len(ids_b) == 1 and ids_a != ids_b


@pytest.mark.skipif(not (DATA / "urfd-falls").is_dir(), reason="real data not found")
def test_tracker_closes_a_track_unseen_too_long_and_ignores_one_frame_flickers():
    seq = read_urfd_csv(DATA / "urfd-falls" / "pose_urfd_3classes.csv")[0]
    tracker = Tracker(min_iou=0.2, max_missed_frames=3, min_hits=3)
    kp = seq.keypoints
    first = tracker.update(_people([kp[0]], seq.layout))
    assert first.seen == []  # not confirmed yet
    for i in range(1, 5):
        seen = tracker.update(_people([kp[i]], seq.layout)).seen
    assert len(seen) == 1
    tid = seen[0].track_id
    closed = []
    for _ in range(4):
        closed += tracker.update([]).closed
    assert closed == [tid]
    # a flicker: one frame, never confirmed, never reported as closed
    tracker.update(_people([kp[10]], seq.layout))
    assert all(tracker.update([]).closed == [] for _ in range(5))
