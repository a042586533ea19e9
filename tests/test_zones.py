"""Zones on real footage through the real daemon: an excluded walkway beside an included cell, a
zone out of service by its schedule, a zone's own threshold; and the geometry and schedule rules."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from appliance.alarms.detector import HysteresisRule, Placement, TrackDetector
from appliance.alarms.events import AnomalyEvent, ModelRef
from appliance.alarms.zones import CameraZones, foot_point, in_service, inside
from appliance.config import ConfigError, ZoneConfig, load_config, parse_config
from appliance.pose.base import Person
from appliance.pose.layouts import BLAZEPOSE33
from appliance.service.demo import DEMO_CLIP, WORKCELL_CLIP

from .conftest import write_appliance_config

LEFT = [[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]]
RIGHT = [[0.5, 0.0], [1.0, 0.0], [1.0, 1.0], [0.5, 1.0]]
WHOLE = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]


def run_daemon(tmp_path: Path, clip: Path, zones: list[dict], threshold: float) -> list[AnomalyEvent]:
    from appliance.service.daemon import Appliance

    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg = load_config(
        write_appliance_config(
            tmp_path / "c.yaml",
            {"id": "line", "source": str(clip), "fps": None, "zones": zones},
            detector={"threshold": threshold, "start_windows": 3},
        )
    )
    app = Appliance(cfg)
    app.start()
    app.workers[0].thread.join(120)
    app.stop()
    events = tmp_path / "events.jsonl"
    lines = events.read_text().splitlines() if events.exists() else []
    return [AnomalyEvent.model_validate_json(line) for line in lines]


def feet_x(event: AnomalyEvent) -> float:
    """Where the peak window's person stood, as a fraction of the image width."""
    sk = event.peak_skeleton
    kp = np.asarray(sk.points, dtype=float)
    person = Person(kp, BLAZEPOSE33, Person.box_of(kp), 1.0)
    return foot_point(person, sk.image_size)[0]


def test_walkers_raise_alarms_in_the_included_cell_and_never_on_the_excluded_walkway(tmp_path):
    """Real CCTV walkers, every window over the threshold: anomalies start only where the walkers' feet
    stand in the cell (right half), carry its name, and none starts on the walkway (left half)."""
    zones = [
        {"name": "walkway", "kind": "exclude", "polygon": LEFT},
        {"name": "cell", "kind": "include", "polygon": RIGHT},
    ]
    events = run_daemon(tmp_path, DEMO_CLIP, zones, threshold=-100.0)
    starts = [e for e in events if e.type == "start"]
    assert len(starts) >= 3, [e.type for e in events]
    assert {e.zone for e in events} == {"cell"}
    assert all(e.zones == ["cell"] for e in starts)
    assert all(feet_x(e) >= 0.5 for e in starts), [round(feet_x(e), 3) for e in starts]
    # walkers who crossed out of the cell ended their anomaly on the way out
    assert {e.end_reason for e in events if e.type == "end"} <= {"left_zone", "track_lost", "stream_ended"}

    # without zones the same footage raises anomalies on both halves
    everywhere = [e for e in run_daemon(tmp_path / "all", DEMO_CLIP, [], -100.0) if e.type == "start"]
    assert any(feet_x(e) < 0.5 for e in everywhere) and all(e.zone is None for e in everywhere)


def test_a_zone_out_of_service_by_its_schedule_raises_nothing_and_in_service_raises(tmp_path):
    """The dancer is anomalous for the starter (README demo); a schedule of one hour twelve hours
    from now puts the zone out of service, a schedule of the whole day in service."""
    hour = (datetime.now(timezone.utc).hour + 12) % 24
    away = {"timezone": "UTC", "hours": [f"{hour:02d}:00-{(hour + 1) % 24:02d}:00"]}
    zone = {"name": "cell", "polygon": WHOLE}
    assert run_daemon(tmp_path / "off", WORKCELL_CLIP, [{**zone, "schedule": away}], threshold=2.77) == []
    on = run_daemon(tmp_path / "on", WORKCELL_CLIP, [{**zone, "schedule": {"hours": ["00:00-24:00"]}}], 2.77)
    assert [e.type for e in on][:1] == ["start"] and {e.zone for e in on} == {"cell"}


def test_a_zone_threshold_of_its_own_replaces_the_cameras(tmp_path):
    """The dancer scores 2.98-3.12: a zone threshold of 5 keeps it quiet, a factor of 1.0 does not."""
    zone = {"name": "cell", "polygon": WHOLE}
    assert run_daemon(tmp_path / "high", WORKCELL_CLIP, [{**zone, "threshold": 5.0}], 2.77) == []
    events = run_daemon(tmp_path / "same", WORKCELL_CLIP, [zone], 2.77)
    assert events and all(e.threshold == pytest.approx(2.77) for e in events)


# -- rules ------------------------------------------------------------------------------------------
def test_point_in_polygon_even_odd_rule_on_a_concave_zone():
    notch = ((0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.5, 0.4), (0.0, 1.0))
    assert inside((0.5, 0.2), notch) and not inside((0.5, 0.8), notch)
    assert inside((0.1, 0.8), notch) and not inside((1.2, 0.5), notch)


def _zone(**kw) -> ZoneConfig:
    return ZoneConfig(name="z", polygon=WHOLE, **kw)


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def test_schedules_follow_local_time_days_and_ranges_past_midnight():
    day_shift = _zone(schedule={"timezone": "Europe/Berlin", "days": ["mon"], "hours": ["06:00-14:00"]})
    assert in_service(day_shift, _epoch("2026-03-30T05:30:00+00:00"))  # Monday 07:30 in Berlin (CEST)
    assert not in_service(day_shift, _epoch("2026-03-30T12:30:00+00:00"))  # 14:30 in Berlin
    assert not in_service(day_shift, _epoch("2026-03-31T05:30:00+00:00"))  # Tuesday
    night = _zone(schedule={"timezone": "Europe/Berlin", "days": ["mon"], "hours": ["22:00-06:00"]})
    assert in_service(night, _epoch("2026-03-30T21:00:00+00:00"))  # Monday 23:00
    assert in_service(night, _epoch("2026-03-31T01:00:00+00:00"))  # Tuesday 03:00: Monday's night
    assert not in_service(night, _epoch("2026-03-30T01:00:00+00:00"))  # Monday 03:00: Sunday's night
    assert in_service(_zone(), time.time())


def test_dwell_counts_from_entering_and_restarts_after_leaving():
    zones = CameraZones([_zone(min_dwell_s=2.0)])
    rule = HysteresisRule(1.0)
    assert not zones.place(1, (0.5, 0.5), 100.0, rule).counts
    assert zones.place(1, (0.5, 0.5), 102.0, rule).counts
    assert not zones.place(1, (1.5, 0.5), 103.0, rule).counts  # outside the include zone
    assert not zones.place(1, (0.5, 0.5), 104.0, rule).counts  # back: the dwell starts again
    assert zones.place(1, (0.5, 0.5), 106.0, rule).zone == "z"


def test_an_anomaly_ends_when_its_person_leaves_the_zone():
    det = TrackDetector("a", "cam", 1, ModelRef(name="m", version="1"), HysteresisRule(1.0, 2, 5))
    cell = Placement(("cell",), "cell", True, HysteresisRule(1.0, 2, 5))
    walkway = Placement(("walkway",), None, False)
    events = det.observe(2.0, 1.0, None, cell) + det.observe(2.0, 2.0, None, cell)
    assert [e.type for e in events] == ["start"] and events[0].zone == "cell"
    (end,) = det.observe(2.0, 3.0, None, walkway)
    assert (end.type, end.end_reason, end.zone, end.zones) == ("end", "left_zone", "cell", ["walkway"])
    assert det.observe(2.0, 4.0, None, walkway) == [] and not det.active


@pytest.mark.parametrize(
    "zone, message",
    [
        ({"name": "z", "polygon": [[0, 0], [1, 0]]}, "at least 3"),
        ({"name": "z", "polygon": [[0, 0], [1, 0], [1, 1.5]]}, "out of range: must be from 0 to 1 (got 1.5)"),
        ({"name": "z", "polygon": WHOLE, "threshold": 3, "threshold_factor": 2}, "not both"),
        ({"name": "z", "polygon": WHOLE, "schedule": {"timezone": "Mars/Olympus"}}, "unknown time zone"),
        ({"name": "z", "polygon": WHOLE, "schedule": {"hours": ["6-14"]}}, "'HH:MM-HH:MM'"),
    ],
)
def test_a_bad_zone_is_refused_with_its_key_and_line(zone, message):
    import yaml

    text = yaml.safe_dump(
        {
            "schema_version": 1,
            "appliance_id": "a",
            "model": {"bundle": "b.tar"},
            "cameras": [{"id": "c", "source": 0, "zones": [zone]}],
        }
    )
    with pytest.raises(ConfigError, match=r"^site\.yaml:\d+: cameras\[0\]\.zones\[0\]") as err:
        parse_config(text, "site.yaml")
    assert message in str(err.value)


def test_zone_names_are_unique_per_camera():
    cam = {"id": "c", "source": 0, "zones": [{"name": "z", "polygon": WHOLE}, {"name": "z", "polygon": LEFT}]}
    text = "schema_version: 1\nappliance_id: a\nmodel: {bundle: b.tar}\ncameras: [" + str(cam) + "]\n"
    with pytest.raises(ConfigError, match="zone names must be unique per camera; repeated: z"):
        parse_config(text, "site.yaml")


def test_a_reload_applies_new_zones_to_a_running_camera(tmp_path):
    """SIGHUP's path (Appliance.reload) with a zone excluding the whole image, while the dancer's
    anomaly is open: it ends below the threshold (the dancer never drops below it by herself) and
    nothing starts again; the camera, its tracks and the sinks stay."""
    import yaml

    from appliance.service.daemon import Appliance

    camera = {"id": "line", "source": str(WORKCELL_CLIP), "fps": None, "loop": True, "realtime": True}
    path = write_appliance_config(
        tmp_path / "c.yaml", camera, detector={"threshold": 2.77, "start_windows": 3}
    )
    app = Appliance(load_config(path))
    app.start()
    events = tmp_path / "events.jsonl"
    try:
        deadline = time.monotonic() + 60
        while '"type":"start"' not in (events.read_text() if events.exists() else ""):
            assert time.monotonic() < deadline, "no anomaly from the dancer"
            time.sleep(0.1)
        data = yaml.safe_load(path.read_text())
        data["cameras"][0]["zones"] = [{"name": "everywhere", "kind": "exclude", "polygon": WHOLE}]
        path.write_text(yaml.safe_dump(data))
        reloaded_ms = time.time() * 1000
        app.reload(load_config(path))
        worker = app.workers[0]
        assert [z.name for z in worker.pipeline.zones.zones] == ["everywhere"]
        time.sleep(6)  # 60 windows at the model's 10 fps
    finally:
        app.stop()
    after = [AnomalyEvent.model_validate_json(x) for x in events.read_text().splitlines()]
    after = [e for e in after if e.time_ms > reloaded_ms]
    assert [e.type for e in after if e.type != "update"][:1] == ["end"], [e.type for e in after]
    assert after[[e.type for e in after].index("end")].end_reason == "below_threshold"
    assert not [e for e in after if e.type == "start"]


def test_the_zones_picture_draws_the_polygons_over_where_people_stood(tmp_path):
    """`appliance zones` on the walkway: the PNG is written; the drawing (read back from the figure)
    holds each zone's corners and a heat map counting every foot point."""
    pytest.importorskip("matplotlib")
    import subprocess
    import sys

    from PIL import Image

    from appliance.cli.render import draw_zones, foot_points
    from appliance.pose.extract import extract_tracks
    from appliance.pose.registry import create_backend

    from .conftest import ROOT

    zones = [
        {"name": "walkway", "kind": "exclude", "polygon": LEFT},
        {"name": "cell", "kind": "include", "polygon": RIGHT},
    ]
    cfg = write_appliance_config(
        tmp_path / "c.yaml", {"id": "line", "source": str(DEMO_CLIP), "zones": zones}
    )
    out = tmp_path / "zones.png"
    cmd = [sys.executable, "-m", "appliance.cli", "zones", "--config", str(cfg), "--camera", "line"]
    done = subprocess.run(
        [*cmd, "--from", str(DEMO_CLIP), "--out", str(out), "--frames", "40"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with Image.open(out) as png:
        assert png.size == (720, 540)

    config = load_config(cfg)
    points = foot_points(extract_tracks(DEMO_CLIP, create_backend(config.pose), frames=40, min_length=1))
    in_view = ((points >= 0) & (points <= 1)).all(axis=1)  # feet may stand just past the frame's edge
    assert in_view.sum() > 40  # several walkers per frame
    _, ax, counts = draw_zones(list(config.cameras[0].zones), points, "t")
    assert counts.sum() == in_view.sum()
    drawn = {p.get_label(): p for p in ax.patches}
    assert set(drawn) == {"walkway (exclude)", "cell (include)"}
    assert np.allclose(drawn["cell (include)"].get_xy()[:4], RIGHT)
    assert np.allclose(drawn["walkway (exclude)"].get_xy()[:4], LEFT)
    assert ax.get_ylim() == (1.0, 0.0) and "fraction of the width" in ax.get_xlabel()
