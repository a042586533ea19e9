"""Turns a track's stream of window scores into anomaly events, with hysteresis.

An anomaly starts after ``start_windows`` consecutive windows above the threshold (one noisy window
raises nothing) and ends after ``end_windows`` consecutive windows at or below it. While it lasts,
``update`` messages go out at most every ``update_interval_s``, carrying the running peak.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from appliance.alarms.events import AnomalyEvent, ModelRef, Skeleton, iso_utc


@dataclass(frozen=True)
class HysteresisRule:
    threshold: float
    start_windows: int = 5
    end_windows: int = 15
    update_interval_s: float = 1.0


@dataclass(frozen=True)
class Placement:
    """Where a track's window falls (:mod:`appliance.alarms.zones`): the zones holding its feet, and
    the zone (None: the camera) under whose rule it may count; ``counts`` False means the window can
    neither raise nor hold an alarm."""

    zones: tuple[str, ...]
    zone: str | None
    counts: bool
    rule: HysteresisRule | None = None


@dataclass
class _Active:
    event_id: str
    started_at: float
    peak_score: float
    peak_skeleton: Skeleton | None
    frames_above: int
    zone: str | None = None
    seq: int = 0
    last_sent: float = 0.0


@dataclass
class TrackDetector:
    """Hysteresis state of one track; ``observe`` returns the events this window causes (0 or 1)."""

    appliance_id: str
    camera_id: str
    track_id: int
    model: ModelRef
    rule: HysteresisRule
    new_id: Callable[[], str] = field(default=lambda: uuid.uuid4().hex)
    _above: int = 0
    _below: int = 0
    _active: _Active | None = None
    # Best window of the current run above threshold, before the anomaly is confirmed.
    _pending_peak: tuple[float, Skeleton | None] | None = None
    _zones: tuple[str, ...] = ()  # the zones the track's feet were in at the last window

    @property
    def active(self) -> bool:
        return self._active is not None

    def observe(
        self, score: float, when: float, skeleton: Skeleton | None, placement: Placement | None = None
    ) -> list[AnomalyEvent]:
        """Feed the score of the window ending at wall-clock ``when`` (epoch s). With zones,
        ``placement`` says where the track stands: a window that does not count is below threshold,
        and an anomaly raised under another zone's rule than this window's ends first (``left_zone``)."""
        if not np.isfinite(score):
            return []  # a scoring fault is reported by the daemon's health, not as an alarm
        events: list[AnomalyEvent] = []
        zone = None
        if placement is not None:
            self._zones, zone = placement.zones, placement.zone
            if self._active is not None and zone != self._active.zone:
                events.append(self.close(when, "left_zone", score))  # left it, or it went out of service
            if placement.rule is not None and placement.rule != self.rule:
                self.rule = placement.rule
        counts = placement is None or placement.counts
        return events + self._observe(score, when, skeleton, counts, zone)

    def _observe(
        self, score: float, when: float, skeleton: Skeleton | None, counts: bool, zone: str | None
    ) -> list[AnomalyEvent]:
        above = counts and score > self.rule.threshold
        if above:
            self._above += 1
            self._below = 0
            if self._pending_peak is None or score > self._pending_peak[0]:
                self._pending_peak = (score, skeleton)
        else:
            self._below += 1
            self._above = 0
            self._pending_peak = None if self._active is None else self._pending_peak
        a = self._active
        if a is None:
            if self._above >= self.rule.start_windows:
                peak, peak_skel = self._pending_peak or (score, skeleton)
                self._active = a = _Active(
                    self.new_id(), when, peak, peak_skel, self._above, zone=zone, last_sent=when
                )
                return [self._event("start", a, score, when)]
            return []
        if above:
            a.frames_above += 1
            if score > a.peak_score:
                a.peak_score, a.peak_skeleton = score, skeleton
        if self._below >= self.rule.end_windows:
            return [self.close(when, "below_threshold", score)]
        if when - a.last_sent >= self.rule.update_interval_s:
            a.seq += 1
            a.last_sent = when
            return [self._event("update", a, score, when)]
        return []

    def close(self, when: float, reason: str, score: float | None = None) -> AnomalyEvent:
        """End the active anomaly (track lost, shutdown, or back below the threshold)."""
        a = self._active
        if a is None:
            raise RuntimeError("no active anomaly to close")
        a.seq += 1
        event = self._event("end", a, a.peak_score if score is None else score, when, reason)
        self._active = None
        self._above = self._below = 0
        self._pending_peak = None
        return event

    def set_threshold(self, threshold: float) -> None:
        self.rule = HysteresisRule(
            threshold, self.rule.start_windows, self.rule.end_windows, self.rule.update_interval_s
        )

    def _event(
        self, kind: str, a: _Active, score: float, when: float, reason: str | None = None
    ) -> AnomalyEvent:
        ended = kind == "end"
        return AnomalyEvent(
            type=kind,
            event_id=a.event_id,
            seq=a.seq,
            appliance_id=self.appliance_id,
            camera_id=self.camera_id,
            track_id=self.track_id,
            time=iso_utc(when),
            time_ms=round(when * 1000),
            started_at=iso_utc(a.started_at),
            started_at_ms=round(a.started_at * 1000),
            ended_at=iso_utc(when) if ended else None,
            ended_at_ms=round(when * 1000) if ended else None,
            end_reason=reason,
            score=float(score),
            peak_score=float(a.peak_score),
            threshold=float(self.rule.threshold),
            frames_above=a.frames_above,
            model=self.model,
            peak_skeleton=a.peak_skeleton,
            zone=a.zone,
            zones=list(self._zones) or None,
        )
