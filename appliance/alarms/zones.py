"""Zones: named polygons of a camera's image where anomalies count (``include``) or never count
(``exclude``), each with its own threshold, start windows, dwell and schedule.

A person stands where their feet are: the midpoint of the ankles when both are seen, else the bottom
centre of their box. Coordinates are fractions of the image width and height, so a resolution change
keeps the zones. For each scored window a track gets a :class:`Placement`: which zones hold it, and
under which zone's rule (if any) the window may count towards an anomaly:

- inside an enabled ``exclude`` zone that is in service: the window never counts;
- a camera with ``include`` zones: the window counts only inside one of them that is enabled, in
  service (its schedule) and where the person has stood at least ``min_dwell_s``; the first such zone
  in the configuration's order gives the rule;
- a camera without ``include`` zones: the window counts anywhere but in excluded zones, under the
  camera's rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from appliance.alarms.detector import HysteresisRule, Placement
from appliance.config import ZoneConfig
from appliance.pose.base import Person

ANKLE_CONFIDENCE = 0.3  # an ankle seen at least this surely places the foot point
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def foot_point(person: Person, image_size: tuple[int, int]) -> tuple[float, float]:
    """Where the person stands, as fractions of the image (x right, y down)."""
    w, h = image_size
    kp = person.keypoints
    names = person.layout.joints
    try:
        left, right = kp[names.index("left_ankle")], kp[names.index("right_ankle")]
    except ValueError:
        left = right = None
    if left is not None and right is not None and min(left[2], right[2]) >= ANKLE_CONFIDENCE:
        return float((left[0] + right[0]) / 2 / w), float((left[1] + right[1]) / 2 / h)
    x0, _, x1, y1 = person.box
    return float((x0 + x1) / 2 / w), float(y1 / h)


def inside(point: tuple[float, float], polygon: tuple[tuple[float, float], ...]) -> bool:
    """Whether ``point`` lies in ``polygon`` (even-odd rule; a point on an edge may fall either way)."""
    x, y = point
    hit = False
    j = len(polygon) - 1
    for i in range(len(polygon)):
        xi, yi = polygon[i]
        xj, yj = polygon[j]
        if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
            hit = not hit
        j = i
    return hit


def in_service(zone: ZoneConfig, when: float) -> bool:
    """Whether ``zone``'s schedule covers the epoch time ``when`` (no schedule: always)."""
    s = zone.schedule
    if s is None:
        return True
    local = datetime.fromtimestamp(when, ZoneInfo(s.timezone))
    minute = local.hour * 60 + local.minute
    day = DAYS[local.weekday()]
    yesterday = DAYS[(local.weekday() - 1) % 7]
    for start, end in s.minutes():
        if start < end and day in s.days and start <= minute < end:
            return True
        # over midnight: the evening belongs to its day, the morning to the next
        overnight = (day in s.days and minute >= start) or (yesterday in s.days and minute < end)
        if start >= end and overnight:
            return True
    return False


@dataclass
class CameraZones:
    """One camera's zones and each track's time of entry into each zone (for the dwell)."""

    zones: list[ZoneConfig]
    _entered: dict[int, dict[str, float]] = field(default_factory=dict)

    @property
    def has_include(self) -> bool:
        return any(z.kind == "include" for z in self.zones)

    def place(
        self, track_id: int, point: tuple[float, float], when: float, camera: HysteresisRule
    ) -> Placement:
        """The placement of ``track_id``'s window ending at ``when`` with feet at ``point``."""
        holding = [z for z in self.zones if inside(point, z.polygon)]
        entered = self._entered.setdefault(track_id, {})
        for name in [n for n in entered if n not in {z.name for z in holding}]:
            del entered[name]  # left the zone: its dwell starts again on return
        for z in holding:
            entered.setdefault(z.name, when)
        names = tuple(z.name for z in holding)
        live = [z for z in holding if z.enabled and in_service(z, when)]
        if any(z.kind == "exclude" for z in live):
            return Placement(names, None, False)
        if not self.has_include:
            return Placement(names, None, True, camera)
        for z in live:
            if z.kind == "include" and when - entered[z.name] >= z.min_dwell_s:
                return Placement(names, z.name, True, zone_rule(z, camera))
        return Placement(names, None, False)

    def forget(self, track_id: int) -> None:
        self._entered.pop(track_id, None)


def zone_rule(zone: ZoneConfig, camera: HysteresisRule) -> HysteresisRule:
    """The camera's rule with the zone's own threshold (or factor) and start windows."""
    threshold = zone.threshold if zone.threshold is not None else camera.threshold * zone.threshold_factor
    if not math.isfinite(camera.threshold) and zone.threshold is None:
        threshold = camera.threshold  # uncalibrated stays uncalibrated
    return HysteresisRule(
        float(threshold),
        zone.start_windows or camera.start_windows,
        camera.end_windows,
        camera.update_interval_s,
    )


def camera_zones(zones: list[ZoneConfig]) -> CameraZones | None:
    """A camera's zones as the pipeline applies them; None for a camera without zones."""
    return CameraZones(list(zones)) if zones else None
