"""Alarm points: the plant's view of anomalies, one point per camera and zone, with the states of
ISA-18.2 / IEC 62682 that an operator works with (a subset; ``docs/mqtt.md`` draws the diagram).

Tracks come and go; a point stays. Each track anomaly (``start`` ... ``end``) drives the point of its
camera and zone (``all`` for a camera without include zones):

- ``normal`` -> an anomaly starts -> ``active_unacknowledged``; acknowledged -> ``active_acknowledged``;
  when its last anomaly ends: unacknowledged -> ``returned_unacknowledged`` (still waiting for an
  operator), acknowledged -> ``normal``; acknowledging a returned alarm -> ``normal``. An anomaly while
  the point is active adds to it (count, peak, tracks).
- ``shelved`` (by an operator, for at most ``MAX_SHELVE_S``, ending by itself) and
  ``out_of_service`` (camera lost, uncalibrated, zone outside its schedule) suppress the point: its
  anomalies are still counted, but it does not wait for anyone. When the suppression ends, a point
  with an anomaly still open is ``active_unacknowledged`` again, otherwise ``normal``.

Every change is journalled (``<state_dir>/alarms/points.json``, written atomically), so states
survive a restart; an anomaly open at a hard kill is ended by the daemon's ``restart`` event, which
leaves its point ``returned_unacknowledged``. Operator actions go to an audit log
(``<state_dir>/alarms/audit.jsonl``) with who, when, the comment and the result.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from appliance.alarms.events import CAMERA_POINT, AlarmPointState, AnomalyEvent, iso_utc
from appliance.errors import ApplianceError
from appliance.storage import write_atomic

log = logging.getLogger("appliance.alarms")

MAX_SHELVE_S = 8 * 3600.0  # a shelf longer than a shift is a disabled alarm by another name


class AlarmRefused(ApplianceError):
    """An operator action that does not apply to the point as it is; the message says why."""


@dataclass
class AlarmPoint:
    """One point's state (the journal holds these fields)."""

    camera: str
    name: str
    alarm: str = "normal"  # normal | active_unacknowledged | active_acknowledged | returned_unacknowledged
    since: float = field(default_factory=time.time)
    open: list[str] = field(default_factory=list)  # event ids of the anomalies open now
    count: int = 0
    peak: float | None = None
    tracks: list[int] = field(default_factory=list)
    acked_by: str | None = None
    acked_at: float | None = None
    comment: str | None = None
    shelved_until: float | None = None
    shelved_by: str | None = None
    oos: str | None = None

    @property
    def key(self) -> str:
        return f"{self.camera}/{self.name}"

    @property
    def state(self) -> str:
        if self.oos:
            return "out_of_service"
        if self.shelved_until is not None:
            return "shelved"
        return self.alarm

    def _set(self, alarm: str, now: float) -> None:
        if alarm != self.alarm:
            self.alarm, self.since = alarm, now
        if alarm == "normal":
            self.count, self.peak, self.tracks = 0, None, []
            self.acked_by = self.acked_at = None

    @property
    def suppressed(self) -> bool:
        return self.oos is not None or self.shelved_until is not None

    def anomalies_ended(self, now: float) -> None:
        """Its last anomaly ended: unacknowledged waits for an operator, acknowledged is over."""
        if not self.suppressed:
            ended = {"active_unacknowledged": "returned_unacknowledged", "active_acknowledged": "normal"}
            self._set(ended.get(self.alarm, self.alarm), now)

    def anomaly(self, event: AnomalyEvent, now: float) -> None:
        """A track anomaly of this point started, went on or ended."""
        if event.type == "start":
            self.open.append(event.event_id)
            self.count += 1
            if event.track_id not in self.tracks:
                self.tracks.append(event.track_id)
            if not self.suppressed and self.alarm in ("normal", "returned_unacknowledged"):
                self._set("active_unacknowledged", now)
        elif event.type == "end" and event.event_id in self.open:
            self.open.remove(event.event_id)
            if not self.open:
                self.anomalies_ended(now)
        self.peak = event.peak_score if self.peak is None else max(self.peak, event.peak_score)

    def lift_suppression(self, now: float) -> None:
        """Shelf or out-of-service ended: what is still open waits for an operator again."""
        if not self.suppressed:
            self._set("active_unacknowledged" if self.open else "normal", now)

    def message(self, appliance_id: str, now: float) -> AlarmPointState:
        return AlarmPointState(
            appliance_id=appliance_id,
            camera_id=self.camera,
            point=self.name,
            state=self.state,  # type: ignore[arg-type]
            since=iso_utc(self.since),
            active_anomalies=len(self.open),
            anomalies=self.count,
            peak_score=self.peak,
            tracks=list(self.tracks),
            acknowledged_by=self.acked_by,
            acknowledged_at=iso_utc(self.acked_at) if self.acked_at else None,
            comment=self.comment,
            shelved_until=iso_utc(self.shelved_until) if self.shelved_until else None,
            shelved_by=self.shelved_by,
            out_of_service=self.oos,
            time=iso_utc(now),
        )


class AlarmBoard:
    """All alarm points of the appliance: fed by events, operator actions and a clock; journalled."""

    def __init__(
        self,
        appliance_id: str,
        state_dir: Path,
        points: Iterable[tuple[str, str]],
        on_change: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.appliance_id = appliance_id
        self.dir = Path(state_dir) / "alarms"
        self.journal, self.audit = self.dir / "points.json", self.dir / "audit.jsonl"
        self.on_change, self.clock = on_change, clock
        self._lock = threading.Lock()
        saved = self._load()
        self.points: dict[str, AlarmPoint] = {}
        for camera, name in points:
            p = AlarmPoint(camera, name)
            old = saved.get(p.key)
            if old is not None:  # the same point before the restart: its state carries on
                p = AlarmPoint(**{**old, "camera": camera, "name": name})
            self.points[p.key] = p
        self.retired: set[str] = set(saved) - set(self.points)
        """Keys of points that no longer exist (zone deleted): their retained states are taken down."""

    # -- inputs -----------------------------------------------------------------------------------
    def on_events(self, events: Iterable[AnomalyEvent]) -> None:
        now = self.clock()
        changed = False
        with self._lock:
            for e in events:
                p = self.points.get(f"{e.camera_id}/{e.zone or CAMERA_POINT}")
                if p is not None and e.type in ("start", "end"):
                    p.anomaly(e, now)
                    changed = True
            if changed:
                self._save()
        if changed:
            self._changed()

    def acknowledge(self, camera: str, point: str, who: str, comment: str | None = None) -> AlarmPointState:
        def act(p: AlarmPoint, now: float) -> None:
            if p.suppressed or p.alarm not in ("active_unacknowledged", "returned_unacknowledged"):
                raise AlarmRefused(f"nothing to acknowledge: {p.key} is {p.state}")
            p.acked_by, p.acked_at = who, now
            p._set("active_acknowledged" if p.alarm == "active_unacknowledged" else "normal", now)

        return self._operator("acknowledge", camera, point, who, comment, act)

    def shelve(
        self, camera: str, point: str, who: str, duration_s: float, comment: str | None = None
    ) -> AlarmPointState:
        if not 0 < duration_s <= MAX_SHELVE_S:
            raise AlarmRefused(f"shelve for more than 0 s and at most {MAX_SHELVE_S:g} s, not {duration_s:g}")

        def act(p: AlarmPoint, now: float) -> None:
            p.shelved_until, p.shelved_by = now + duration_s, who
            p._set("normal" if not p.open else p.alarm, now)
            p.since = now

        return self._operator("shelve", camera, point, who, comment, act, {"duration_s": duration_s})

    def unshelve(self, camera: str, point: str, who: str, comment: str | None = None) -> AlarmPointState:
        def act(p: AlarmPoint, now: float) -> None:
            if p.shelved_until is None:
                raise AlarmRefused(f"{p.key} is not shelved")
            p.shelved_until = p.shelved_by = None
            p.lift_suppression(now)

        return self._operator("unshelve", camera, point, who, comment, act)

    def restarted(self) -> None:
        """After the daemon's ``restart`` ends: no anomaly can be open at start, so a point still
        holding one (journalled without its end) returns as an ended anomaly would leave it."""
        now = self.clock()
        with self._lock:
            stale = [p for p in self.points.values() if p.open]
            for p in stale:
                p.open.clear()
                p.anomalies_ended(now)
            if stale:
                self._save()
        if stale:
            self._changed()

    def sync(self, camera: str, points: Iterable[tuple[str, str]]) -> None:
        """A reload changed ``camera``'s zones: its points become ``points`` (kept ones keep their
        state; a removed one is retired, so the links can take its retained state down)."""
        wanted = {f"{cam}/{name}": (cam, name) for cam, name in points}
        with self._lock:
            gone = [k for k, p in self.points.items() if p.camera == camera and k not in wanted]
            for key in gone:
                del self.points[key]
                self.retired.add(key)
            for key, (cam, name) in wanted.items():
                self.points.setdefault(key, AlarmPoint(cam, name))
                self.retired.discard(key)
            self._save()
        for key in gone:
            log.info("alarm point %s removed (its zone is gone)", key)
        self._changed()

    def tick(self, out_of_service: dict[str, str | None]) -> None:
        """Expire shelves, and set or lift out-of-service: ``out_of_service`` maps point keys to why
        (None: in service); points it does not name keep their service state."""
        now = self.clock()
        expired, changed = [], False
        with self._lock:
            for p in self.points.values():
                if p.shelved_until is not None and now >= p.shelved_until:
                    p.shelved_until = p.shelved_by = None
                    p.lift_suppression(now)
                    expired.append(p.key)
                    changed = True
                if p.key in out_of_service and out_of_service[p.key] != p.oos:
                    p.oos = out_of_service[p.key]
                    p.since = now
                    p.lift_suppression(now)
                    changed = True
            for key in expired:
                self._audit("shelve_expired", key, "appliance", None, "ok", None)
            if changed:
                self._save()
        for key in expired:
            log.info("alarm point %s: shelf expired", key)
        if changed:
            self._changed()

    # -- outputs ----------------------------------------------------------------------------------
    def messages(self) -> list[AlarmPointState]:
        now = self.clock()
        with self._lock:
            return [p.message(self.appliance_id, now) for p in self.points.values()]

    def retired_points(self) -> list[tuple[str, str]]:
        """(camera, point) of every retired point (see :attr:`retired`)."""
        with self._lock:
            return [tuple(k.split("/", 1)) for k in sorted(self.retired)]  # type: ignore[misc]

    # -- internals --------------------------------------------------------------------------------
    def _operator(
        self, action: str, camera: str, point: str, who: str, comment: str | None, act,
        extra: dict[str, Any] | None = None,
    ) -> AlarmPointState:  # fmt: skip
        key = f"{camera}/{point}"
        now = self.clock()
        with self._lock:
            p = self.points.get(key)
            if p is None:
                known = ", ".join(sorted(self.points))
                self._audit(
                    action, key, who, comment, f"refused: no such alarm point (known: {known})", extra
                )
                raise AlarmRefused(f"no alarm point {key}; known: {known}")
            try:
                act(p, now)
            except AlarmRefused as exc:
                self._audit(action, key, who, comment, f"refused: {exc}", extra)
                raise
            if comment:
                p.comment = comment
            self._audit(action, key, who, comment, "ok", extra)
            self._save()
            message = p.message(self.appliance_id, now)
        log.info("alarm point %s: %s by %s, now %s", key, action, who, message.state)
        self._changed()
        return message

    def _audit(self, action, key, who, comment, result, extra) -> None:
        entry = {"time": iso_utc(self.clock()), "action": action, "point": key, "by": who}
        entry.update({"comment": comment, "result": result, **(extra or {})})
        self.dir.mkdir(parents=True, exist_ok=True)
        with self.audit.open("a") as fh:
            fh.write(json.dumps(entry) + "\n")
            fh.flush()

    def _save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        body = {"format": 1, "points": {k: asdict(p) for k, p in self.points.items()}}
        write_atomic(self.journal, (json.dumps(body, indent=1) + "\n").encode())

    def _load(self) -> dict[str, dict[str, Any]]:
        if not self.journal.exists():
            return {}
        try:
            data = json.loads(self.journal.read_text())
            points = data["points"]
            fields = set(AlarmPoint.__dataclass_fields__)
            return {k: {f: v for f, v in p.items() if f in fields} for k, p in points.items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.error("alarm journal %s unreadable (%s): every point starts normal", self.journal, exc)
            return {}

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()


def points_of(cameras) -> list[tuple[str, str]]:
    """(camera, point) of every camera config: one per include zone, or ``all`` without them."""
    out = []
    for cam in cameras:
        include = [z.name for z in cam.zones if z.kind == "include"]
        out += [(cam.id, name) for name in include] or [(cam.id, CAMERA_POINT)]
    return out
