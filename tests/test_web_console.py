"""The web console on a running daemon (the two demo clips, looped in real time): logins and roles,
CSRF, login rate limiting, the audit log, the overview, the live skeleton stream, the alarm actions
through the same handlers as MQTT, and Prometheus /metrics; all over real HTTP."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from .conftest import make_broker
from .web_console import PASSWORDS, Client, console_config, start_appliance

CHANGES = [  # every route that changes something, with a body it would accept
    ("POST", "/api/logout", None),
    ("POST", "/api/alarms/workcell/all/ack", {"comment": "seen"}),
    ("POST", "/api/alarms/workcell/all/shelve", {"minutes": 30}),
    ("POST", "/api/alarms/workcell/all/unshelve", {}),
]

ADMIN_CHANGES = [  # the routes only an admin may use, with a body each would accept
    ("POST", "/api/cameras/walkway/calibrate", {"minutes": 0.5}),
    ("POST", "/api/cameras/walkway/learn", {"minutes": 0.5}),
    ("POST", "/api/models/rollback", {}),
    ("PUT", "/api/cameras/walkway/zones", {"zones": []}),
    ("DELETE", "/api/cameras/walkway/zones", None),
]


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("console")
    broker = make_broker(tmp / "broker")
    config, port = console_config(tmp, sinks=[{"type": "mqtt", "host": broker.host, "port": broker.port}])
    app = start_appliance(config)
    try:
        yield app, f"http://127.0.0.1:{port}", tmp
    finally:
        app.stop()
        broker.stop()


def test_every_change_is_refused_without_a_session_with_a_viewer_role_and_without_the_csrf_token(running):
    _app, base, tmp = running
    anonymous = Client(base)
    for method, path, body in CHANGES:
        assert anonymous.request(method, path, body)[0] == 401, path
    viewer = Client(base)
    assert viewer.login("vera") == 200
    for method, path, body in CHANGES[1:]:  # a viewer may log out, nothing else
        status, answer, _ = viewer.request(method, path, body)
        assert (status, answer["error"]) == (403, "needs the operator role"), path
    operator = Client(base)
    assert operator.login("otto") == 200
    for method, path, body in CHANGES:
        status, answer, _ = operator.request(method, path, body, csrf=False)
        assert (status, answer["error"]) == (403, "missing or wrong CSRF token"), path
    operator.csrf = "forged" + (operator.csrf or "")
    assert operator.request("POST", "/api/alarms/workcell/all/ack", {})[0] == 403
    audit = [json.loads(x) for x in (tmp / "state" / "web" / "audit.jsonl").read_text().splitlines()]
    refusals = [(a["by"], a["detail"]) for a in audit if a["action"] == "refused"]
    assert ("vera", "needs role operator") in refusals and ("otto", "missing or wrong CSRF token") in refusals
    assert all("password" not in json.dumps(a) for a in audit)


def test_admin_changes_are_refused_without_a_session_to_an_operator_and_without_the_csrf_token(running):
    _app, base, tmp = running
    anonymous, operator, admin = Client(base), Client(base), Client(base)
    assert operator.login("otto") == 200 and admin.login("ada") == 200
    for method, path, body in ADMIN_CHANGES:
        assert anonymous.request(method, path, body)[0] == 401, path
        status, answer, _ = operator.request(method, path, body)
        assert (status, answer["error"]) == (403, "needs the admin role"), path
        status, answer, _ = admin.request(method, path, body, csrf=False)
        assert (status, answer["error"]) == (403, "missing or wrong CSRF token"), path
    assert not (tmp / "state" / "zones.yaml").exists()  # nothing refused was done
    audit = [json.loads(x) for x in (tmp / "state" / "web" / "audit.jsonl").read_text().splitlines()]
    refusals = [(a["by"], a["path"], a["detail"]) for a in audit if a["action"] == "refused"]
    for _method, path, _body in ADMIN_CHANGES:
        assert ("otto", path, "needs role admin") in refusals, path
        assert ("ada", path, "missing or wrong CSRF token") in refusals, path


def test_the_session_cookie_is_httponly_and_samesite_strict_and_pages_carry_a_strict_csp(running):
    _app, base, _ = running
    req = urllib.request.Request(
        base + "/api/login", data=json.dumps({"user": "vera", "password": PASSWORDS["vera"]}).encode(),
        method="POST", headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(req, timeout=20) as resp:
        cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain HTTP here; under TLS it is Secure
    status, page, headers = Client(base).request("GET", "/", raw=True)
    assert status == 200 and "<canvas" in page
    assert (
        "script-src 'self'" in headers["Content-Security-Policy"]
        and "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    )
    assert headers["X-Content-Type-Options"] == "nosniff"
    status, answer, headers = Client(base).request("GET", "/api/overview")  # a refusal: the same headers
    assert (status, answer) == (401, {"ok": False, "error": "log in first"})
    assert headers["Cache-Control"] == "no-store"
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]


def test_wrong_passwords_are_limited_per_user_name_and_said_once_in_the_audit(running):
    _app, base, tmp = running
    c = Client(base)
    statuses = [c.login("rita", "not-the-password") for _ in range(7)]
    assert statuses[:5] == [401] * 5 and statuses[5:] == [429, 429]
    assert c.login("rita") == 429  # even the right password waits out the minute
    assert Client(base).login("nobody", "whatever-pass") == 401  # an unknown user looks the same
    audit = [json.loads(x) for x in (tmp / "state" / "web" / "audit.jsonl").read_text().splitlines()]
    assert sum(a["action"] == "login_failed" and a["by"] == "rita" for a in audit) == 5


def test_an_operator_sees_both_cameras_live_skeletons_and_acknowledges_the_dancers_alarm(running):
    _app, base, tmp = running
    c = Client(base)
    assert c.login("otto") == 200
    status, overview, _ = c.request("GET", "/api/overview")
    assert status == 200 and set(overview["status"]["cameras"]) == {"walkway", "workcell"}
    assert overview["broker"]["link"]["state"] == "connected" and overview["broker"]["outbox"]["depth"] >= 0
    assert overview["skeleton"]["joints"][0] == "nose" and len(overview["skeleton"]["limbs"]) >= 12

    with c.opener.open(base + "/api/cameras/workcell/live", timeout=20) as stream:
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        frames = []
        while len(frames) < 3:
            line = stream.readline().decode()
            if line.startswith("data: "):
                frames.append(json.loads(line[6:]))
    assert [f["frame"] for f in frames] == sorted({f["frame"] for f in frames})  # each frame once, in order
    person = next(p for f in frames for p in f["people"])
    assert len(person["joints"]) == 15 and all(len(j) == 3 for j in person["joints"])
    assert frames[-1]["size"] == [640, 360] or frames[-1]["size"][0] > 0

    def alarm():
        alarms = c.request("GET", "/api/overview")[1]["alarms"]
        return next((a for a in alarms if a["camera_id"] == "workcell" and a["state"] != "normal"), None)

    open_alarm = c.wait_for(alarm, "the dancer's alarm", timeout=90)
    assert open_alarm["state"] in ("active_unacknowledged", "returned_unacknowledged")
    status, answer, _ = c.request(
        "POST", "/api/alarms/workcell/all/ack", {"comment": "checked from the console"}
    )
    assert status == 200 and answer["ok"] and answer["alarm"]["acknowledged_by"] == "otto"
    audit = [json.loads(x) for x in (tmp / "state" / "alarms" / "audit.jsonl").read_text().splitlines()]
    assert audit[-1]["action"] == "acknowledge" and audit[-1]["by"] == "otto"
    assert audit[-1]["comment"] == "checked from the console"
    status, answer, _ = c.request("POST", "/api/alarms/workcell/all/shelve", {"minutes": 9999})
    assert status == 400 and "minutes" in answer["error"]
    status, answer, _ = c.request("POST", "/api/alarms/workcell/nowhere/ack", {})
    assert status == 409 and "no alarm point workcell/nowhere" in answer["error"]


def test_metrics_expose_per_camera_figures_latency_histograms_alarm_states_and_the_process(running):
    app, base, _ = running
    c = Client(base)
    c.wait_for(lambda: app.workers[1].stats.frames > 20, "frames")
    status, text, headers = c.request("GET", "/metrics", raw=True)
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    lines = text.splitlines()

    def value(prefix: str) -> float:
        return float(next(x for x in lines if x.startswith(prefix)).rsplit(" ", 1)[1])

    assert value('appliance_camera_frames_total{camera="workcell"}') > 20
    assert value('appliance_camera_streaming{camera="walkway"}') == 1.0
    assert value('appliance_camera_threshold{camera="workcell"}') == pytest.approx(2.77)
    count = value('appliance_pose_latency_seconds_count{camera="workcell"}')
    assert value('appliance_pose_latency_seconds_bucket{camera="workcell",le="+Inf"}') == count > 20
    buckets = [x for x in lines if x.startswith('appliance_pose_latency_seconds_bucket{camera="workcell"')]
    counts = [float(x.rsplit(" ", 1)[1]) for x in buckets]
    assert counts == sorted(counts) and len(counts) == 14  # cumulative, 13 bounds and +Inf
    states = {x.split('state="')[1].split('"')[0] for x in lines if x.startswith("appliance_alarm_points{")}
    assert {"normal", "active_unacknowledged", "shelved", "out_of_service"} <= states
    assert any(x.startswith("appliance_model_info{") and 'name="starter-walking-fused"' in x for x in lines)
    assert value("appliance_broker_link_up") == 1.0 and value("appliance_outbox_depth") >= 0
    assert value("process_resident_memory_bytes") > 50e6 and value("process_cpu_seconds_total") > 0


def test_the_grafana_dashboard_queries_only_metrics_the_appliance_exports(running):
    """docs/grafana-dashboard.json: every metric name in every panel's query is one /metrics serves."""
    import re
    from pathlib import Path

    _app, base, _ = running
    served = {
        line.split("{")[0].split(" ")[0]
        for line in Client(base).request("GET", "/metrics", raw=True)[1].splitlines()
        if line and not line.startswith("#")
    }
    dashboard = json.loads((Path(__file__).parents[1] / "docs" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\b((?:appliance|process)_[a-z_]+)\b", e)}
    assert len(dashboard["panels"]) >= 10 and used
    assert used - served == set(), sorted(used - served)


def test_the_daemon_stops_promptly_while_a_browser_watches_a_live_stream(tmp_path):
    import threading
    import time

    config, port = console_config(tmp_path)
    app = start_appliance(config)
    c = Client(f"http://127.0.0.1:{port}")
    assert c.login("vera") == 200
    got = threading.Event()

    def watch() -> None:
        try:
            with c.opener.open(c.base + "/api/cameras/walkway/live", timeout=30) as stream:
                while stream.readline():
                    got.set()
        except OSError:
            pass

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    assert got.wait(30), "no live frame"
    started = time.monotonic()
    app.stop()
    assert time.monotonic() - started < 15  # cameras, pose and the console within the daemon's budget
    watcher.join(10)
    assert not watcher.is_alive()  # the stream ended with the console


def test_the_setup_still_is_for_admins_only_and_only_when_the_site_turns_it_on(running, tmp_path):
    """A viewer or operator never sees a camera frame; an admin sees one only with web.setup_image
    (off in the shared daemon; on in a second one started here)."""
    import time

    _app, base, _ = running
    for user, status in (("vera", 403), ("otto", 403), ("ada", 404)):
        c = Client(base)
        assert c.login(user) == 200
        assert c.request("GET", "/api/cameras/workcell/still")[0] == status, user
    config, port = console_config(tmp_path, setup_image=True)
    app = start_appliance(config)
    try:
        admin, viewer = Client(f"http://127.0.0.1:{port}"), Client(f"http://127.0.0.1:{port}")
        assert admin.login("ada") == 200 and viewer.login("vera") == 200
        assert viewer.request("GET", "/api/cameras/workcell/still")[0] == 403
        deadline = time.monotonic() + 30
        while (got := admin.request("GET", "/api/cameras/workcell/still", raw=True))[0] != 200:
            assert time.monotonic() < deadline, got[:2]
            time.sleep(0.2)
        status, body, headers = got
        assert headers["Content-Type"] == "image/jpeg" and headers["Cache-Control"] == "no-store"
        assert body[:3] == b"\xff\xd8\xff" and len(body) > 5000  # a JPEG of the camera's frame
    finally:
        app.stop()
    audit = [json.loads(x) for x in (tmp_path / "state" / "web" / "audit.jsonl").read_text().splitlines()]
    assert [(a["action"], a["by"]) for a in audit if a["action"] == "setup_image"][:1] == [
        ("setup_image", "ada")
    ]


def test_only_an_admin_uploads_a_bundle_and_an_unsigned_one_is_refused_with_the_running_model_kept(running):
    from appliance.service.demo import STARTER_BUNDLE

    _app, base, tmp = running
    data = STARTER_BUNDLE.read_bytes()
    for user in ("vera", "otto"):
        c = Client(base)
        assert c.login(user) == 200
        assert upload(c, data)[0] == 403, user
    admin = Client(base)
    assert admin.login("ada") == 200
    assert upload(admin, data, csrf=False)[0] == 403
    status, answer = upload(admin, data)
    assert status == 422 and not answer["ok"] and "not signed" in answer["error"], answer
    assert answer["error"].startswith("console upload bundle.tar by ada: ")  # named as the log names it
    status, models, _ = admin.request("GET", "/api/models")
    assert status == 200 and models["active"] == "factory" and models["versions"] == []
    assert models["running"]["name"] == "starter-walking-fused"
    assert not list((tmp / "state" / "web" / "uploads").iterdir())  # the upload is not kept
    audit = [json.loads(x) for x in (tmp / "state" / "web" / "audit.jsonl").read_text().splitlines()]
    assert any(
        a["action"] == "model_upload" and a["by"] == "ada" and "not signed" in a["detail"] for a in audit
    )


def upload(c: Client, data: bytes, csrf: bool = True) -> tuple[int, dict]:
    req = urllib.request.Request(c.base + "/api/models", data=data, method="POST",
                                 headers={"Content-Type": "application/x-tar"})  # fmt: skip
    if csrf:
        req.add_header("X-CSRF-Token", c.csrf or "")
    try:
        with c.opener.open(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_an_admin_draws_zones_that_are_checked_saved_beside_the_config_and_applied_without_a_restart(running):
    from appliance.config import load_config
    from appliance.service.preflight import check_files_and_sources

    app, base, tmp = running
    config = tmp / "c.yaml"
    text = config.read_text()
    worker = next(w for w in app.workers if w.cfg.id == "walkway")
    viewer, admin = Client(base), Client(base)
    assert viewer.login("vera") == 200 and admin.login("ada") == 200
    status, zones, _ = viewer.request("GET", "/api/cameras/walkway/zones")
    assert status == 200 and (zones["zones"], zones["source"], zones["editable"]) == ([], "file", True)

    square = [[0.05, 0.05], [0.95, 0.05], [0.95, 0.95], [0.05, 0.95]]
    for bad, said in (
        ([{"name": "aisle", "polygon": square[:2]}], "zones[0].polygon: List should have at least 3 items"),
        ([{"name": "aisle", "polygon": [[0, 0], [1.2, 0], [1, 1]]}],
         "zones[0].polygon[1][0]: out of range: must be from 0 to 1 (got 1.2)"),
        ([{"name": "aisle", "polygon": square}, {"name": "aisle", "polygon": square}],
         "zones: Value error, zone names must be unique per camera; repeated: aisle"),
        ([{"name": "a/b", "polygon": square}], "zones[0].name: "),
        ([{"name": "aisle", "polygon": square, "colour": "red"}], "zones[0].colour: unknown key"),
    ):  # fmt: skip
        status, answer, _ = admin.request("PUT", "/api/cameras/walkway/zones", {"zones": bad})
        assert status == 400 and answer["error"].startswith(said), (said, answer)
    assert not (tmp / "state" / "zones.yaml").exists() and worker.pipeline.zones is None

    drawn = [{"name": "aisle", "kind": "include", "polygon": square},
             {"name": "door", "kind": "exclude", "polygon": [[0, 0], [0.2, 0], [0.2, 0.2]]}]  # fmt: skip
    status, answer, _ = admin.request("PUT", "/api/cameras/walkway/zones", {"zones": drawn})
    assert status == 200 and answer["source"] == "console", answer
    assert [(z["name"], z["kind"], z["polygon"]) for z in answer["zones"]] == [
        (z["name"], z["kind"], z["polygon"]) for z in drawn
    ]
    # applied at once, the SIGHUP way: the running camera's zones, its alarm points
    assert [z.name for z in worker.pipeline.zones.zones] == ["aisle", "door"]
    points = {(a.camera_id, a.point) for a in app.alarms.messages()}
    assert ("walkway", "aisle") in points and ("walkway", "all") not in points
    # saved beside the configuration, which is not written; a restart loads the same zones
    assert config.read_text() == text
    assert [z.name for z in load_config(config).cameras[0].zones] == ["aisle", "door"]
    notes = [f.message for f in check_files_and_sources(load_config(config, console_zones=False), config)]
    assert any("its zones (aisle, door) come from" in n and "by ada" in n for n in notes), notes
    status, zones, _ = viewer.request("GET", "/api/cameras/walkway/zones")
    assert (zones["source"], zones["saved_by"], len(zones["zones"])) == ("console", "ada", 2)
    status, overview, _ = viewer.request("GET", "/api/overview")
    assert [z["name"] for z in overview["cameras"]["walkway"]["zones"]] == ["aisle", "door"]

    status, answer, _ = admin.request("DELETE", "/api/cameras/walkway/zones")
    assert (status, answer["zones"], answer["source"]) == (200, [], "file")
    assert worker.pipeline.zones is None
    assert ("walkway", "all") in {(a.camera_id, a.point) for a in app.alarms.messages()}
    audit = [json.loads(x) for x in (tmp / "state" / "web" / "audit.jsonl").read_text().splitlines()]
    saves = [a["detail"] for a in audit if a["action"] == "zones" and a["by"] == "ada"]
    assert saves == [
        "walkway: saved: aisle (include, 4 corners), door (exclude, 3 corners)",
        "walkway: back to the configuration file's: none",
    ]
    assert sum(a["action"] == "zones_refused" for a in audit) == 5


def test_the_retained_status_says_where_the_console_serves(running):
    app, base, _ = running
    assert app.status()["console"] == {"state": "serving", "address": base + "/"}


def test_the_demo_prints_the_consoles_address_and_a_user_made_for_that_run(tmp_path):
    """``appliance demo --web PORT``: the address and this run's password on stderr, both cameras in
    the console, and a configuration file written so that zones drawn there reload; Ctrl-C stops it."""
    import re
    import signal
    import subprocess
    import sys
    import threading

    from .conftest import ROOT, free_port

    port = free_port()
    demo = [
        sys.executable,
        "-m",
        "appliance.cli",
        "demo",
        "--web",
        str(port),
        "--out",
        str(tmp_path / "e.jsonl"),
    ]
    proc = subprocess.Popen(demo, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    said: list[str] = []
    reader = threading.Thread(target=lambda: said.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        client = Client(f"http://127.0.0.1:{port}")

        def address() -> re.Match | None:
            return next(
                (
                    m
                    for line in said
                    if (m := re.search(r"console: (\S+) \(user demo, password (\S+);", line))
                ),
                None,
            )

        found = client.wait_for(address, "the console's address on stderr", timeout=120)
        assert found.group(1) == f"http://127.0.0.1:{port}/"

        def logged_in() -> bool:  # the address is printed before the daemon starts serving
            try:
                return client.login("demo", found.group(2)) == 200
            except urllib.error.URLError:
                return False

        client.wait_for(logged_in, "a login with the printed password", timeout=120)
        status, overview = client.wait_for(
            lambda: (r := client.request("GET", "/api/overview"))[0] == 200 and r[:2], "the overview"
        )
        assert set(overview["status"]["cameras"]) == {"walkway", "workcell"}
        assert overview["status"]["console"] == {"state": "serving", "address": f"http://127.0.0.1:{port}/"}
        status, zones, _ = client.request("GET", "/api/cameras/workcell/zones")
        assert status == 200 and zones["editable"] is True
        assert "appliance demo" in (tmp_path / "demo-config.yaml").read_text()
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(60)
        reader.join(10)
    assert code == 0, "".join(said)[-2000:]
    assert "Traceback" not in "".join(said)
