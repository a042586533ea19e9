"""The daemon end to end: real footage or real skeletons, the shipped starter bundle, a real broker."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import jsonschema
import pytest

from appliance.alarms.events import SCHEMAS, AnomalyEvent
from appliance.capture.frame_rate import RateGate
from appliance.keypoints.urfd import read_urfd_csv
from appliance.models.bundle import open_bundle
from appliance.pose.model_files import find_model_files
from appliance.service.demo import DEMO_CLIP, STARTER_BUNDLE, STARTER_LSTM_BUNDLE, WORKCELL_CLIP

from .conftest import DATA, ROOT, Broker, write_appliance_config

URFD = DATA / "urfd-falls" / "pose_urfd_3classes.csv"


def write_config(path: Path, **overrides) -> Path:
    return write_appliance_config(path, {"id": "walkway", "source": str(DEMO_CLIP), "fps": None}, **overrides)


def appliance(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "appliance.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def read_events(path: Path) -> list[AnomalyEvent]:
    return [AnomalyEvent.model_validate_json(line) for line in path.read_text().splitlines()]


def check_event_sequences(events: list[AnomalyEvent]) -> None:
    """Every anomaly is start, updates, end under one id, seq counting from 0, end last."""
    by_id: dict[str, list[AnomalyEvent]] = {}
    for e in events:
        by_id.setdefault(e.event_id, []).append(e)
    for evs in by_id.values():
        assert [e.seq for e in evs] == list(range(len(evs)))
        assert evs[0].type == "start" and evs[-1].type == "end"
        assert all(e.type == "update" for e in evs[1:-1])
        assert len({(e.camera_id, e.track_id) for e in evs}) == 1
        assert evs[-1].peak_score == max(e.peak_score for e in evs)


@pytest.mark.skipif(not URFD.is_file(), reason="real data not found")
def test_replayed_real_skeletons_are_scored_once_per_frame_per_track(tmp_path):
    """URFD's 30 videos replayed one after another: every frame of a confirmed track ends a window."""
    cfg = write_config(
        tmp_path / "c.yaml",
        pose={"type": "keypoints", "path": str(URFD), "consecutive": True},
        cameras=[{"id": "cam1", "source": "replay"}],
        tracking={"min_hits": 3, "max_missed_frames": 0},
        detector={"when_uncalibrated": "bundle_default"},
        sinks=[{"type": "jsonl", "path": str(tmp_path / "events.jsonl")}, {"type": "stdout"}],
    )
    out = appliance("run", "--config", str(cfg))
    assert out.returncode == 0, out.stderr
    seqs = read_urfd_csv(URFD)
    # the 30 fps replay is scored at the starter's 10 fps (every third frame, on the replay's clock);
    # a track is scored from its 3rd kept frame (min_hits) and needs 30 maps for its first window
    gate, at, kept = RateGate(open_bundle(STARTER_BUNDLE).contract.fps), 0, []
    for s in seqs:
        kept.append(sum(gate.keep((at + i) / 30.0) for i in range(len(s))))
        at += len(s)
    expected_windows = sum(max(0, k - 2 - 29) for k in kept)
    assert sum(kept) < sum(len(s) for s in seqs) / 2.9  # thinned: the time base applies to replays too
    assert f"{sum(kept)} frames, {expected_windows} windows" in out.stderr
    events = read_events(tmp_path / "events.jsonl")
    assert events, "falls in URFD should raise at least one anomaly with the bundle's default threshold"
    check_event_sequences(events)
    assert {e.end_reason for e in events if e.type == "end"} <= {
        "below_threshold",
        "track_lost",
        "stream_ended",
    }
    assert all(e.peak_skeleton is not None and e.peak_skeleton.layout == "urfd13" for e in events)
    # stdout shows the same events, one line each
    assert sum(" anomaly " in line for line in out.stdout.splitlines()) == len(events)


def test_run_on_a_video_file_delivers_events_to_a_real_broker(tmp_path, broker: Broker):
    """Real footage -> BlazePose -> scorer -> events, received by mosquitto_sub (threshold 0: every
    confirmed track's first windows start an anomaly, so the count does not depend on the model)."""
    find_model_files(None)  # the setup command installed them; fail loudly otherwise
    sub = broker.subscribe("appliance/#")
    cfg = write_config(
        tmp_path / "c.yaml",
        cameras=[{"id": "walkway", "source": str(DEMO_CLIP), "fps": None}],
        detector={"threshold": 0.0, "start_windows": 3, "end_windows": 3},
        sinks=[
            {"type": "jsonl", "path": str(tmp_path / "events.jsonl")},
            {
                "type": "mqtt",
                "host": broker.host,
                "port": broker.port,
                "topic_prefix": "appliance",
                "telemetry_interval_s": 1.0,
            },
        ],
    )
    out = appliance("run", "--config", str(cfg))
    assert out.returncode == 0, out.stderr
    sub.wait_for("appliance/test-box/available", 2)
    sub.stop()
    on_events = [json.loads(p) for p in sub.messages("appliance/test-box/walkway/events")]
    written = read_events(tmp_path / "events.jsonl")
    assert len(written) >= 2
    assert [e["event_id"] + e["type"] for e in on_events] == [e.event_id + e.type for e in written]
    schemas = {n: json.loads((ROOT / "docs" / "schemas" / f"{n}.schema.json").read_text()) for n in SCHEMAS}
    for payload in on_events:
        jsonschema.validate(payload, schemas["event"])  # every payload fits the shipped schema
    statuses = [json.loads(p) for p in sub.messages("appliance/test-box/status")]
    assert statuses
    for status in statuses:
        jsonschema.validate(status, schemas["status"])
    telemetry = [json.loads(p) for p in sub.messages("appliance/test-box/walkway/scores")]
    assert telemetry and any(t["max_score"] is not None for t in telemetry)
    for t in telemetry:
        jsonschema.validate(t, schemas["telemetry"])
    final = statuses[-1]
    assert final["cameras"]["walkway"]["state"] in ("ended", "stopped")
    assert final["cameras"]["walkway"]["frames"] == 195 and final["outbox"]["depth"] == 0
    assert final["model"]["name"] == "starter-walking-fused"
    check_event_sequences(written)
    availability = sub.messages("appliance/test-box/available")
    assert availability[0] == "online" and availability[-1] == "offline"


def test_sigterm_stops_the_daemon_cleanly_and_ends_open_anomalies(tmp_path):
    cfg = write_config(
        tmp_path / "c.yaml",
        cameras=[{"id": "walkway", "source": str(DEMO_CLIP), "fps": None, "loop": True, "realtime": True}],
        detector={"threshold": 0.0, "start_windows": 1, "end_windows": 1000},
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance.cli", "run", "--config", str(cfg)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    events_file = tmp_path / "events.jsonl"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not (events_file.exists() and events_file.read_text().strip()):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    events = read_events(events_file)
    assert events and events[-1].type == "end"
    starts = {e.event_id for e in events if e.type == "start"}
    ends = {e.event_id for e in events if e.type == "end"}
    assert starts == ends  # nothing left open
    assert "shutdown" in {e.end_reason for e in events}


@pytest.mark.parametrize(
    ("change", "code", "needle"),
    [
        ({"model": {"bundle": "/nonexistent/bundle.tar"}}, 3, "/nonexistent/bundle.tar: no such bundle"),
        (
            {"cameras": [{"id": "c", "source": "/nonexistent/cam.mp4"}]},
            2,
            "no such video file /nonexistent/cam.mp4",
        ),
        (
            {"pose": {"type": "blazepose", "model_dir": "/nonexistent/models"}},
            3,
            "appliance install-models --dest /nonexistent/models",
        ),
        ({"cameras": [{"id": "c", "source": "x", "colour": "red"}]}, 2, "cameras[0].colour: unknown key"),
    ],
)
def test_user_mistakes_give_one_clear_line_and_an_exit_code(tmp_path, change, code, needle):
    cfg = write_config(tmp_path / "c.yaml", **change)
    out = appliance("run", "--config", str(cfg), timeout=60)
    assert out.returncode == code, out.stderr
    assert "Traceback" not in out.stderr
    assert needle in out.stderr


def test_a_corrupt_bundle_is_refused_before_any_camera_opens(tmp_path):
    bad = tmp_path / "bundle.tar"
    data = STARTER_BUNDLE.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    out = appliance("run", "--config", str(write_config(tmp_path / "c.yaml", model={"bundle": str(bad)})))
    assert out.returncode == 3 and "truncated" in out.stderr and "Traceback" not in out.stderr


def test_demo_stays_quiet_on_normal_walking_and_alarms_on_dancing(tmp_path, broker: Broker):
    """The shipped demo: two real clips, the starter model at its production threshold. A newcomer
    runs it twice: the second run's file holds its own events only, says so, and no inbox appears;
    the published status counts uptime from one start."""
    (tmp_path / "events.jsonl").write_text('{"stale": "an earlier run"}\n')
    status = broker.subscribe("appliance/demo/status")
    try:
        out = appliance("demo", "--out", str(tmp_path / "events.jsonl"), "--mqtt", f"127.0.0.1:{broker.port}")
    finally:
        status.stop()
    assert out.returncode == 0, out.stderr
    assert "the previous run's file was replaced" in out.stderr
    assert not (tmp_path / "inbox").exists()
    uptimes = [json.loads(p)["uptime_s"] for p in status.messages("appliance/demo/status")]
    assert len(uptimes) >= 2 and uptimes == sorted(uptimes), uptimes
    events = read_events(tmp_path / "events.jsonl")
    check_event_sequences(events)
    assert {e.camera_id for e in events} == {"workcell"}  # walking: normal work, no alarm
    assert events[0].type == "start" and events[-1].type == "end"
    assert all(e.peak_score > e.threshold for e in events)
    assert sum(" anomaly " in line for line in out.stdout.splitlines()) == len(events)
    assert "walkway: stopped" in out.stderr and ", 0 events" in out.stderr.split("walkway: stopped")[1]


@pytest.mark.skipif(not URFD.is_file(), reason="real data not found")
def test_whole_frame_mode_scores_all_people_as_one_map():
    """Two real skeletons in one frame: per-person mode scores two tracks, whole-frame mode one map."""
    from appliance.alarms.detector import HysteresisRule
    from appliance.alarms.events import ModelRef
    from appliance.models.lstm_vae import MultiTrackScorer
    from appliance.pose.base import Person
    from appliance.service.pipeline import WHOLE_FRAME_TRACK, CameraPipeline
    from appliance.tracking.tracker import Tracker

    bundle = open_bundle(STARTER_LSTM_BUNDLE)
    runtime, _ = bundle.open()
    c = bundle.contract
    seqs = read_urfd_csv(URFD)
    a, b = seqs[0].keypoints[:40], seqs[1].keypoints[:40].copy()
    b[..., 0] += 250.0

    def pipeline(whole: bool) -> CameraPipeline:
        return CameraPipeline(
            appliance_id="t",
            camera_id="c",
            scorer=MultiTrackScorer(runtime, c.window, c.feature_dim, c.map_spec.map_size),
            map_spec=c.map_spec,
            model=ModelRef(name="m", version="1"),
            rule=HysteresisRule(1e9),
            tracker=Tracker(min_hits=1),
            whole_frame=whole,
        )

    per_person, whole = pipeline(False), pipeline(True)
    keys_pp, keys_wf = set(), set()
    for i in range(40):
        people = [Person(k, seqs[0].layout, Person.box_of(k), 1.0) for k in (a[i], b[i])]
        keys_pp |= set(per_person.process(people, (640, 480), 0.0, i).scores)
        keys_wf |= set(whole.process(people, (640, 480), 0.0, i).scores)
    assert len(keys_pp) == 2 and WHOLE_FRAME_TRACK not in keys_pp
    assert keys_wf == {WHOLE_FRAME_TRACK}


def test_sparkplug_mode_publishes_births_then_anomaly_data_from_the_daemon(tmp_path, broker: Broker):
    """The daemon with a Sparkplug B sink on the dancing clip: NBIRTH, DBIRTH, then DDATA with the anomaly."""
    import paho.mqtt.client as mqtt

    from appliance.publish.sparkplug.payload import Payload

    got: list[tuple[str, object]] = []
    ready = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="host-app")
    client.on_connect = lambda c, *a: c.subscribe("spBv1.0/#", qos=1)
    client.on_subscribe = lambda *a: ready.set()
    client.on_message = lambda c, u, m: got.append((m.topic, Payload.FromString(m.payload)))
    client.connect(broker.host, broker.port)
    client.loop_start()
    assert ready.wait(10)
    cfg = write_config(
        tmp_path / "c.yaml",
        cameras=[{"id": "workcell", "source": str(WORKCELL_CLIP), "fps": None}],
        detector={"when_uncalibrated": "bundle_default"},
        sinks=[{"type": "sparkplug", "host": broker.host, "port": broker.port, "group_id": "plant1"}],
    )
    out = appliance("run", "--config", str(cfg))
    time.sleep(1.0)
    client.loop_stop()
    assert out.returncode == 0, out.stderr
    kinds = [t.split("/")[2] for t, _ in got]
    assert kinds[0] == "NBIRTH" and kinds[1] == "DBIRTH" and kinds[-1] == "NDEATH"
    assert got[1][0] == "spBv1.0/plant1/DBIRTH/test-box/workcell"
    born = {m.alias: m for t, p in got if "/DBIRTH/" in t for m in p.metrics}  # data travels by alias
    data = [p for t, p in got if "/DDATA/" in t]
    active = [m.boolean_value for p in data for m in p.metrics if born[m.alias].name == "Anomaly/Active"]
    assert True in active  # the dancing raises an anomaly, carried as a metric change
    seqs = [p.seq for t, p in got if "NDEATH" not in t]
    assert seqs == [i % 256 for i in range(len(seqs))]


def test_uncalibrated_cameras_score_but_raise_nothing_until_calibrated(tmp_path):
    """Squats at the default setting: no calibration for this model -> no events; a calibration file for
    this model -> its threshold is used; a file learnt on another model version is ignored."""
    from appliance.alarms.threshold_store import save_threshold

    manifest = open_bundle(STARTER_BUNDLE).manifest["model"]
    cams = [{"id": "workcell", "source": str(WORKCELL_CLIP), "fps": None}]

    def run(name: str) -> tuple[list[AnomalyEvent], str]:
        cfg = write_config(tmp_path / f"{name}.yaml", cameras=cams, state_dir=str(tmp_path / "state"),
                           sinks=[{"type": "jsonl", "path": str(tmp_path / f"{name}.jsonl")}])  # fmt: skip
        out = appliance("run", "--config", str(cfg))
        assert out.returncode == 0, out.stderr
        path = tmp_path / f"{name}.jsonl"
        return (read_events(path) if path.exists() else []), out.stderr

    events, log = run("uncalibrated")
    assert events == [] and "uncalibrated for model starter-walking-fused" in log
    assert "9 windows" in log  # it still scores every window (40 frames at the model's 10 fps)

    save_threshold(tmp_path / "state", manifest["name"], "0.0.1-other", "workcell", {"threshold": 1.0})
    events, log = run("other-model")
    assert events == [] and "not used (recalibrate)" in log

    save_threshold(tmp_path / "state", manifest["name"], manifest["version"], "workcell", {"threshold": 3.0})
    events, log = run("calibrated")
    assert events and {e.threshold for e in events} == {3.0}


def test_a_recalibration_reaches_the_running_daemon_without_a_restart(tmp_path):
    """`appliance calibrate` writes the thresholds file while the service runs: the daemon applies it
    between frames (no restart, camera and tracks kept) and alarms from then on."""
    from appliance.alarms.threshold_store import save_threshold

    manifest = open_bundle(STARTER_BUNDLE).manifest["model"]
    cfg = write_config(
        tmp_path / "c.yaml",
        state_dir=str(tmp_path / "state"),
        cameras=[
            {"id": "workcell", "source": str(WORKCELL_CLIP), "fps": None, "loop": True, "realtime": True}
        ],
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance.cli", "run", "--config", str(cfg)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    events_file = tmp_path / "events.jsonl"
    try:
        time.sleep(12)  # uncalibrated: a minute of dancing would raise nothing
        assert not events_file.exists() or events_file.read_text() == ""
        save_threshold(
            tmp_path / "state", manifest["name"], manifest["version"], "workcell", {"threshold": 3.0}
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (events_file.exists() and events_file.read_text().strip()):
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "camera workcell: threshold now 3.00 (calibration)" in err
    events = read_events(events_file)
    assert events and events[0].type == "start" and events[0].threshold == 3.0
    assert err.count("starting -> streaming") == 1  # the camera was never reopened


def test_mqtt_commands_are_answered_on_their_response_topics(tmp_path, broker: Broker):
    """With commands enabled: status, reload and a recalibration from the running pipeline (here
    refused, 6 s of one squatting person being far too little), unknown commands and bad payloads."""
    sub = broker.subscribe("appliance/test-box/cmd/#")
    cfg = write_config(
        tmp_path / "c.yaml",
        cameras=[
            {"id": "workcell", "source": str(WORKCELL_CLIP), "fps": None, "loop": True, "realtime": True}
        ],
        sinks=[{"type": "mqtt", "host": broker.host, "port": broker.port, "commands": True}],
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance.cli", "run", "--config", str(cfg)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip

    def send(name: str, payload: str) -> None:
        subprocess.run(["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-q", "1",
                        "-t", f"appliance/test-box/cmd/{name}", "-m", payload], check=True)  # fmt: skip

    def answer(name: str) -> dict:
        got = sub.wait_for(f"appliance/test-box/cmd/{name}/response", 1, timeout=60)
        assert got, f"no answer to {name}"
        return json.loads(got[-1])

    try:
        # a command sent before the daemon has subscribed is dropped by the broker (it has no session
        # yet): ask for the status until the first answer shows the command channel is up
        deadline = time.monotonic() + 90
        while not sub.messages("appliance/test-box/cmd/status/response") and time.monotonic() < deadline:
            send("status", '{"request_id": "s1"}')
            time.sleep(1)
        assert answer("status") == {**answer("status"), "ok": True, "request_id": "s1", "command": "status"}
        send("reload", "{}")
        assert answer("reload")["ok"] is True
        send("recalibrate", '{"request_id": "r1", "minutes": 0.1, "target_alarms_per_hour": 30}')
        r = answer("recalibrate")
        assert r["ok"] is False and r["request_id"] == "r1" and "footage" in r["error"]
        send("explode", "{}")
        assert "unknown command 'explode'" in answer("explode")["error"]
        send("status", "not json")
        time.sleep(1)
        assert (
            "not a JSON object"
            in json.loads(sub.messages("appliance/test-box/cmd/status/response")[-1])["error"]
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        sub.stop()
    assert proc.returncode == 0, err
    assert "Traceback" not in err


def test_a_looped_keypoint_replay_starts_over_and_rewinds_its_skeletons():
    from appliance.service.daemon import ReplayFrames

    rewound = []
    frames = ReplayFrames("c", 4, 30.0, realtime=False, loop=True, on_loop=lambda: rewound.append(1)).start()
    got = [frames.read().source_frame for _ in range(10)]
    assert got == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1] and len(rewound) == 2 and frames.loops == 2
    once = ReplayFrames("c", 2, 30.0, realtime=False).start()
    assert [once.read().source_frame, once.read().source_frame, once.read()] == [0, 1, None]
