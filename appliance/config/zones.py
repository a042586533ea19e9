"""The ``cameras[].zones`` section: named polygons where anomalies count or never count, with their
own threshold, start windows, dwell and schedule (:mod:`appliance.alarms.zones` applies them)."""

from __future__ import annotations

import re
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from appliance.config.sections import Section, TopicLevel

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_RANGE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")


class ScheduleConfig(Section):
    timezone: str = Field(
        "UTC", description="IANA time zone of the hours (e.g. Europe/Berlin); daylight saving follows it."
    )
    days: list[Day] = Field(
        ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], min_length=1, description="Days in service."
    )
    hours: list[str] = Field(
        ["00:00-24:00"],
        min_length=1,
        max_length=24,
        description="Local time ranges in service, 'HH:MM-HH:MM'; a range may run past midnight "
        "('22:00-06:00': its morning part belongs to the next day).",
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (use an IANA name such as Europe/Berlin)") from None
        return v

    @field_validator("hours")
    @classmethod
    def _ranges(cls, v: list[str]) -> list[str]:
        for text in v:
            m = _RANGE.match(text)
            if not m or (m.group(3) == "24" and m.group(4) != "00"):
                raise ValueError(f"{text!r}: write a range as 'HH:MM-HH:MM', e.g. '06:00-14:00'")
            if text[:5] == text[6:]:
                raise ValueError(f"{text!r}: an empty range")
        return v

    def minutes(self) -> list[tuple[int, int]]:
        """The ranges as (start, end) minutes of the day; end <= start runs past midnight."""
        out = []
        for text in self.hours:
            a, b = text.split("-")
            start = int(a[:2]) * 60 + int(a[3:])
            end = int(b[:2]) * 60 + int(b[3:])
            out.append((start, end))
        return out


class ZoneConfig(Section):
    name: TopicLevel = Field(description="Zone name, unique per camera (events and alarm points carry it).")
    kind: Literal["include", "exclude"] = Field(
        "include",
        description="'include': anomalies count here (with include zones, only here); 'exclude': never "
        "here (a walkway beside the line).",
    )
    polygon: list[tuple[Fraction, Fraction]] = Field(
        min_length=3,
        max_length=64,
        description="Corners as [x, y] fractions of the image width and height (0-1; 0,0 is top left), "
        "so a resolution change keeps the zone.",
    )
    enabled: bool = Field(True, description="A disabled zone is as if it were not there.")
    threshold: float | None = Field(
        None, description="The zone's own alarm threshold (default: the camera's times threshold_factor)."
    )
    threshold_factor: float = Field(
        1.0, gt=0, le=100, description="The camera's threshold times this, when threshold is not given."
    )
    start_windows: int | None = Field(
        None,
        ge=1,
        le=1000,
        description="Windows in a row above the threshold to start (default: detector's).",
    )
    min_dwell_s: float = Field(
        0.0, ge=0, le=86_400, description="Seconds a person must stand in the zone before an anomaly counts."
    )
    schedule: ScheduleConfig | None = Field(
        None, description="When the zone is in service; outside it, it raises nothing (default: always)."
    )

    @model_validator(mode="after")
    def _one_threshold(self) -> ZoneConfig:
        if self.threshold is not None and self.threshold_factor != 1.0:
            raise ValueError("give threshold or threshold_factor, not both")
        return self


def unique_zone_names(cls, v: list[ZoneConfig]) -> list[ZoneConfig]:
    """A field validator for a camera's zone list: names unique per camera (events and points carry them)."""
    names = [z.name for z in v]
    if dup := sorted({n for n in names if names.count(n) > 1}):
        raise ValueError(f"zone names must be unique per camera; repeated: {', '.join(dup)}")
    return v
