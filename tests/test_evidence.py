"""Evidence without video: the dancer's anomaly carries the skeleton clip behind it (a few kB of
keypoints, no image), `appliance render-event` draws it as a stick figure, and the drawing holds
exactly the decoded joints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from appliance.alarms.events import AnomalyEvent
from appliance.alarms.evidence import decode_clip, encode_clip
from appliance.config import load_config
from appliance.pose.layouts import BODY_LIMBS
from appliance.service.demo import WORKCELL_CLIP

from .conftest import ROOT, write_appliance_config


def dancer_events(tmp_path: Path, evidence: str) -> list[AnomalyEvent]:
    from appliance.service.daemon import Appliance

    tmp_path.mkdir(parents=True, exist_ok=True)
    camera = {"id": "workcell", "source": str(WORKCELL_CLIP), "fps": None}
    path = write_appliance_config(
        tmp_path / "c.yaml", camera, detector={"threshold": 2.77, "start_windows": 3, "evidence": evidence}
    )
    app = Appliance(load_config(path))
    app.start()
    app.workers[0].thread.join(120)
    app.stop()
    return [AnomalyEvent.model_validate_json(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]


def test_start_and_end_carry_a_compact_skeleton_clip_and_off_carries_no_skeleton(tmp_path):
    events = dancer_events(tmp_path / "clip", "clip")
    ends = [e for e in events if e.type in ("start", "end")]
    assert [e.type for e in ends] == ["start", "end"] and all(e.evidence is not None for e in ends)
    start = ends[0]
    times, bodies = decode_clip(start.evidence)
    assert start.evidence.frames == len(times) >= 30  # at least the window that raised it
    assert times[-1] <= start.time_ms and np.all(np.diff(times) > 0)
    assert bodies.shape == (len(times), 15, 3) and bodies[..., 2].max() > 0.5
    size = len(start.evidence.model_dump_json())
    assert size < 6000, size  # bytes in the event for about 4 s of one person
    assert all(e.evidence is None for e in events if e.type == "update")
    off = dancer_events(tmp_path / "off", "off")
    assert off and all(e.evidence is None and e.peak_skeleton is None for e in off)


def test_the_codec_keeps_joints_to_a_quarter_pixel_and_confidence_to_a_255th():
    rng = np.random.default_rng(0)
    bodies = np.concatenate([rng.uniform(0, 1900, (40, 15, 2)), rng.uniform(0, 1, (40, 15, 1))], axis=-1)
    times = list(1_800_000_000_000 + np.arange(40) * 100)
    back_times, back = decode_clip(encode_clip(times, bodies.astype(np.float32), (1920, 1080)))
    assert back_times.tolist() == times
    assert np.abs(back[..., :2] - bodies[..., :2]).max() <= 0.125 + 1e-4
    assert np.abs(back[..., 2] - bodies[..., 2]).max() <= 0.5 / 255 + 1e-6


def test_render_event_draws_the_clip_as_a_stick_figure_and_the_drawing_holds_the_joints(tmp_path):
    pytest.importorskip("matplotlib")
    from PIL import Image

    from appliance.cli.render import SEEN, ClipDrawing

    events = dancer_events(tmp_path, "clip")
    start = next(e for e in events if e.type == "start")
    drawing = ClipDrawing(start)
    _, bodies = decode_clip(start.evidence)
    last = len(bodies) - 1
    drawing.show(last)
    body = bodies[last]
    for line, (a, b) in zip(drawing.lines, BODY_LIMBS, strict=True):
        xs, ys = line.get_data()
        if min(body[a, 2], body[b, 2]) >= SEEN:
            assert np.allclose(xs, [body[a, 0], body[b, 0]]) and np.allclose(ys, [body[a, 1], body[b, 1]])
        else:
            assert len(xs) == 0
    assert sum(len(line.get_data()[0]) > 0 for line in drawing.lines) >= 10  # the dancer is in view
    assert drawing.ax.get_title().startswith("camera workcell, person 1: anomaly start")
    assert drawing.ax.get_ylim()[0] > drawing.ax.get_ylim()[1]  # image rows grow downwards
    assert f"frame {last + 1} of {last + 1}" in drawing.clock.get_text()

    out = tmp_path / "clip.gif"
    cli = [
        sys.executable,
        "-m",
        "appliance.cli",
        "render-event",
        str(tmp_path / "events.jsonl"),
        "--out",
        str(out),
    ]
    done = subprocess.run(cli, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    last_clip = [e for e in events if e.evidence is not None][-1]
    with Image.open(out) as gif:
        assert gif.n_frames == last_clip.evidence.frames
    refused = subprocess.run(
        [*cli[:-1], str(tmp_path / "clip.mp4")], cwd=ROOT, capture_output=True, text=True
    )
    assert refused.returncode != 0 and "write a .gif" in refused.stderr and "Traceback" not in refused.stderr
