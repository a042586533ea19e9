"""The console in a real browser: Debian's headless Chromium driven by chromium-driver through
Selenium, against a running daemon on the two demo clips and a real mosquitto. Log in, see both
cameras and the dancer's live skeleton, acknowledge her alarm and see its retained MQTT state change;
replay the alarm's skeleton clip on the events page; log in as an admin, calibrate a camera from the
page and read the chart back, upload an unsigned bundle and see it refused. Then, on a second
daemon: draw a zone around the dancer and find her next event by it, learn the walkway's site model
and roll it back, and fit every page on a phone's screen.

Screenshots go to ``$TEST_ARTIFACTS`` (default: the test's temporary folder); with
``CONSOLE_SCREENSHOTS=DIR`` every screenshot is also written to DIR (the README shows four of
them).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from appliance.alarms.events import Evidence
from appliance.alarms.evidence import decode_clip
from appliance.service.demo import STARTER_BUNDLE

from .conftest import Broker
from .web_console import PASSWORDS, Client, console_config, start_appliance

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture
def browser():
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("chromium and chromium-driver are not installed (.ci/run installs them with apt)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def shot(driver, name: str, tmp_path: Path) -> None:
    out = Path(os.environ.get("TEST_ARTIFACTS", tmp_path))
    out.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(out / f"console-{name}.png"))
    readme = os.environ.get("CONSOLE_SCREENSHOTS")
    if readme:
        Path(readme).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(readme) / f"console-{name}.png"))


def log_in(browser, wait, user: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    wait.until(ec.visibility_of_element_located((By.ID, "login-form")))
    browser.find_element(By.ID, "user").clear()
    browser.find_element(By.ID, "user").send_keys(user)
    browser.find_element(By.ID, "password").send_keys(PASSWORDS[user])
    browser.find_element(By.ID, "login-button").click()
    wait.until(lambda d: d.find_element(By.ID, "who").text.startswith(f"{user} ("))  # page laid out


def open_camera(browser, wait, camera: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    browser.find_element(By.CSS_SELECTOR, "button[data-view=camera]").click()
    wait.until(ec.visibility_of_element_located((By.ID, "camera")))
    tab = (By.CSS_SELECTOR, f"#camera-tabs button[data-camera={camera}]")
    wait.until(ec.element_to_be_clickable(tab)).click()


def fill(form, values: dict[str, str]) -> None:
    from selenium.webdriver.common.by import By

    for field, value in values.items():
        box = form.find_element(By.ID, field)
        box.clear()
        box.send_keys(value)


def test_an_operator_logs_in_watches_the_dancer_and_acknowledges_her_alarm_in_the_browser(
    browser, broker: Broker, tmp_path
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    mqtt = {"type": "mqtt", "host": broker.host, "port": broker.port}
    config, port = console_config(tmp_path, sinks=[mqtt])
    app = start_appliance(config)
    topic = "appliance/test-box/workcell/alarm/all"
    states = broker.subscribe(topic)
    wait = WebDriverWait(browser, 90, poll_frequency=0.2)
    try:
        browser.get(f"http://127.0.0.1:{port}/")
        log_in(browser, wait, "otto")
        cards = (By.CSS_SELECTOR, "#cameras .card")
        wait.until(
            lambda d: (
                {e.get_attribute("data-camera") for e in d.find_elements(*cards)} == {"walkway", "workcell"}
            )
        )
        assert "otto (operator)" in browser.find_element(By.ID, "who").text

        open_camera(browser, wait, "workcell")
        canvas = browser.find_element(By.ID, "live")
        wait.until(lambda d: int(canvas.get_attribute("data-people") or 0) >= 1)
        first = int(canvas.get_attribute("data-frame"))
        wait.until(lambda d: int(canvas.get_attribute("data-frame")) > first)  # it moves: live
        wait.until(lambda d: int(canvas.get_attribute("data-scored") or 0) >= 1)  # a full window: coloured
        lit = browser.execute_script(
            "const c = document.getElementById('live'); const d = c.getContext('2d')"
            ".getImageData(0, 0, c.width, c.height).data; let n = 0;"
            "for (let i = 0; i < d.length; i += 4) if (d[i] + d[i+1] + d[i+2] > 150) n++; return n;"
        )
        assert lit > 500  # limbs drawn in colour on the dark canvas
        assert browser.find_elements(By.CSS_SELECTOR, "#tracks .track canvas")  # a sparkline per track
        shot(browser, "camera", tmp_path)

        browser.find_element(By.CSS_SELECTOR, "button[data-view=overview]").click()
        row = "#alarms tr[data-point='workcell/all']"
        button = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, f"{row} button.ack")))
        shot(browser, "overview", tmp_path)
        button.click()
        prompt = wait.until(ec.alert_is_present())
        prompt.send_keys("seen from the browser")
        prompt.accept()

        def acknowledged() -> bool:
            seen = [json.loads(p) for p in states.messages(topic)]
            return any(m.get("acknowledged_by") == "otto" for m in seen)

        wait.until(lambda d: acknowledged())

        # the events page replays the start's skeleton clip, decoded in the browser
        browser.find_element(By.CSS_SELECTOR, "button[data-view=events]").click()
        item = wait.until(
            ec.element_to_be_clickable((By.CSS_SELECTOR, "#event-list li[data-type=start] button.replay"))
        )
        event_id = item.find_element(By.XPATH, "..").get_attribute("data-event")
        item.click()
        clip = browser.find_element(By.ID, "replay")
        wait.until(lambda d: clip.get_attribute("data-replayed"))
        api = Client(f"http://127.0.0.1:{port}")
        assert api.login("vera") == 200
        status, start, _ = api.request("GET", f"/api/events/{event_id}?type=start")
        assert status == 200 and start["type"] == "start"
        _, bodies = decode_clip(Evidence.model_validate(start["evidence"]))
        assert int(clip.get_attribute("data-replayed")) == len(bodies) > 1
        drawn = [float(v) for v in clip.get_attribute("data-neck").split(",")]
        assert drawn == pytest.approx(bodies[-1, 1, :2].tolist(), abs=0.01)  # the last frame's neck
        shot(browser, "replay", tmp_path)

        # an admin calibrates the walkway from the page and sees the chart
        browser.find_element(By.ID, "logout").click()
        log_in(browser, wait, "ada")
        assert browser.find_element(By.ID, "who").text == "ada (admin)"
        open_camera(browser, wait, "walkway")
        form = wait.until(ec.visibility_of_element_located((By.ID, "calib-form")))
        fill(form, {"calib-minutes": "0.5", "calib-target": "1200"})
        form.find_element(By.ID, "calib-drift").click()
        form.find_element(By.ID, "calib-start").click()
        wait.until(lambda d: d.find_element(By.ID, "calib-state").text.startswith("calibrating"))
        wait.until(lambda d: not d.find_element(By.ID, "calib-progress").is_displayed())
        assert browser.find_element(By.ID, "calib-error").text == ""
        charts = wait.until(lambda d: d.execute_script(
            "const c = window.calibrationCharts;"
            "const t = (u) => u.root.querySelector('.u-title').textContent;"
            "const h = c && c.hist; if (!h || h.thresholdX === undefined) return null;"
            "const x = h.thresholdX - h.bbox.left;"  # canvas pixels from the plot's left edge
            "return {threshold: c.threshold, counts: h.data[1],"
            " drawnAt: h.posToVal(x / devicePixelRatio, 'x'),"
            " inside: x >= 0 && x <= h.bbox.width, title: t(h), rateTitle: t(c.rate)};"
        ))  # fmt: skip
        report = json.loads((tmp_path / "state" / "calibration" / "walkway-report.json").read_text())
        assert charts["threshold"] == report["threshold"] == report["chart"]["threshold"]
        assert charts["inside"] and charts["drawnAt"] == pytest.approx(report["threshold"], abs=0.02)
        assert [c or 0 for c in charts["counts"]] == report["chart"]["histogram"]["counts"]
        assert charts["title"] == "Score per window on this site's normal footage"
        assert charts["rateTitle"] == "Alarms per hour at this threshold"
        assert browser.find_element(By.ID, "calib-error").text == ""
        browser.execute_script("document.getElementById('calib-hist').scrollIntoView()")
        shot(browser, "calibration", tmp_path)

        # ... uploads the unsigned starter bundle: refused on the page, the model stays
        browser.find_element(By.CSS_SELECTOR, "button[data-view=models]").click()
        wait.until(ec.visibility_of_element_located((By.ID, "upload-form")))
        browser.find_element(By.ID, "bundle-file").send_keys(str(STARTER_BUNDLE))
        browser.find_element(By.ID, "upload-button").click()
        result = browser.find_element(By.ID, "upload-result")
        wait.until(lambda d: result.text.startswith("refused"))
        assert "not signed" in result.text
        assert "running: starter-walking-fused 2.2.0" in browser.find_element(By.ID, "model-running").text
        shot(browser, "models", tmp_path)
    finally:
        states.stop()
        app.stop()
    audit = [json.loads(x) for x in (tmp_path / "state" / "alarms" / "audit.jsonl").read_text().splitlines()]
    assert (audit[-1]["action"], audit[-1]["by"], audit[-1]["comment"]) == (
        "acknowledge", "otto", "seen from the browser",
    )  # fmt: skip


def test_an_admin_draws_a_zone_around_the_dancer_and_her_next_event_carries_it_then_learns_a_site_model(
    browser, tmp_path
):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from appliance.updates.signing import generate_key_pair
    from export.bundle import sign_bundle

    # the clips as fast as they are processed, every frame: the footage learned from does not depend
    # on how busy the machine is (live learning under load is tested in test_site_learning)
    config, port = console_config(tmp_path, realtime=False)
    private, public, key_id = generate_key_pair(tmp_path / "keys" / "acme")
    (tmp_path / "trusted-keys").mkdir()  # the default trusted_keys: beside the configuration
    shutil.copy(public, tmp_path / "trusted-keys" / "acme.pub")
    release, _ = sign_bundle(STARTER_BUNDLE, private, tmp_path / "starter-2.2.1.tar", model_version="2.2.1")
    app = start_appliance(config)
    events_file = tmp_path / "events.jsonl"
    wait = WebDriverWait(browser, 90, poll_frequency=0.2)
    try:
        browser.get(f"http://127.0.0.1:{port}/")
        log_in(browser, wait, "ada")
        open_camera(browser, wait, "workcell")
        canvas = browser.find_element(By.ID, "live")
        wait.until(lambda d: int(canvas.get_attribute("data-people") or 0) >= 1)
        assert "From the configuration file" in browser.find_element(By.ID, "zones-source").text
        wait.until(ec.element_to_be_clickable((By.ID, "zones-edit"))).click()
        name = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "#zones-table .zone-name")))
        name.clear()
        name.send_keys("cell")
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
        width, height = canvas.size["width"], canvas.size["height"]
        corners = [(0.05, 0.05), (0.95, 0.05), (0.95, 0.95), (0.05, 0.95)]
        for fx, fy in corners:  # offsets from the canvas's centre (W3C actions)
            dx, dy = round((fx - 0.5) * width), round((fy - 0.5) * height)
            ActionChains(browser).move_to_element_with_offset(canvas, dx, dy).click().perform()
        cell = browser.find_element(By.CSS_SELECTOR, "#zones-table tr[data-zone='0'] .corners")
        assert cell.text == "4"
        browser.execute_script("document.getElementById('zones-editor').scrollIntoView({block: 'end'})")
        shot(browser, "zones", tmp_path)
        browser.find_element(By.ID, "zones-save").click()
        wait.until(lambda d: "cell (include)" in d.find_element(By.ID, "zones-source").text)
        assert "Saved in the console by ada" in browser.find_element(By.ID, "zones-source").text
        assert browser.find_element(By.ID, "zones-error").text == ""

        saved = yaml.safe_load((tmp_path / "state" / "zones.yaml").read_text())
        polygon = saved["cameras"]["workcell"]["zones"][0]["polygon"]
        flat = [v for corner in polygon for v in corner]
        assert flat == pytest.approx([v for c in corners for v in c], abs=0.01)  # where it was clicked
        assert [z.name for z in app.cfg.cameras[1].zones] == ["cell"]  # applied without a restart

        def zoned_start() -> dict | None:
            lines = events_file.read_text().splitlines() if events_file.exists() else []
            events = [json.loads(x) for x in lines]
            return next((e for e in events if e["type"] == "start" and e.get("zone") == "cell"), None)

        start = wait.until(lambda d: zoned_start())
        assert start["camera_id"] == "workcell" and start["zones"] == ["cell"]
        # ... and the events page finds it by its zone
        browser.find_element(By.CSS_SELECTOR, "button[data-view=events]").click()
        box = wait.until(ec.visibility_of_element_located((By.ID, "filter-zone")))
        box.send_keys("cell")
        browser.find_element(By.CSS_SELECTOR, "#event-filter button[type=submit]").click()
        item = (By.CSS_SELECTOR, f"#event-list li[data-event='{start['event_id']}'][data-type=start]")
        wait.until(ec.visibility_of_element_located(item))
        assert "workcell/cell" in browser.find_element(*item).text
        assert all("/cell" in li.text for li in browser.find_elements(By.CSS_SELECTOR, "#event-list li"))
        since = browser.find_element(By.ID, "filter-since")  # ... and by time: none since 2099
        browser.execute_script("arguments[0].value = arguments[1]", since, "2099-01-01T00:00")
        browser.find_element(By.CSS_SELECTOR, "#event-filter button[type=submit]").click()
        wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, "#event-list li"))
        browser.execute_script("arguments[0].value = ''", since)

        # the walkway learns its own normal from the page (a site model), then is rolled back
        open_camera(browser, wait, "walkway")
        form = wait.until(ec.visibility_of_element_located((By.ID, "learn-form")))
        # a minute of footage: enough windows for both halves even when the machine is busy
        fill(form, {"learn-minutes": "1", "learn-target": "3600"})
        form.find_element(By.ID, "learn-start").click()
        wait.until(lambda d: d.find_element(By.ID, "calib-state").text.startswith("learning a site model"))
        progress = browser.find_element(By.ID, "calib-progress")
        wait.until(lambda d: 0.2 < float(progress.get_attribute("value")) < 1)  # it moves
        wait.until(lambda d: not progress.is_displayed())
        assert browser.find_element(By.ID, "calib-error").text == ""
        wait.until(
            lambda d: d.execute_script(
                "return window.calibrationCharts && window.calibrationCharts.threshold"
            )
        )
        site = app.status()["cameras"]["walkway"]
        assert site["site_model"] == "s1"  # the camera runs it, without a restart
        report = json.loads((tmp_path / "state" / "calibration" / "walkway-report.json").read_text())
        drawn = browser.execute_script("return window.calibrationCharts.threshold")
        assert drawn == report["threshold"] == report["chart"]["threshold"]

        browser.find_element(By.CSS_SELECTOR, "button[data-view=models]").click()
        row = "#site-models tr[data-camera=walkway]"
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, f"{row} .site-active").text == "s1")
        shot(browser, "site-model", tmp_path)
        browser.find_element(By.CSS_SELECTOR, f"{row} button.site-rollback").click()
        wait.until(ec.alert_is_present()).accept()
        wait.until(lambda d: "walkway: now the bundle alone" in d.find_element(By.ID, "site-result").text)
        assert "site_model" not in app.status()["cameras"]["walkway"]
        updates = (By.ID, "model-updates")
        said = "site model rolled back from the console by ada"
        wait.until(lambda d: said in d.find_element(*updates).text)
        audit = [json.loads(x) for x in (tmp_path / "state" / "web" / "audit.jsonl").read_text().splitlines()]
        done = [(a["action"], a["detail"]) for a in audit if a["by"] == "ada" and a["action"] != "login"]
        assert done[0] == ("zones", "workcell: saved: cell (include, 4 corners)"), done
        assert ("learn", "walkway: 1 min, started") in done
        assert any(a == "learn" and d.startswith("walkway: site model s1, threshold") for a, d in done), done
        assert done[-1] == ("site_model_rollback", "walkway: now the bundle alone")

        # a signed bundle uploaded from the page is installed and run; a rollback brings back the first
        running = (By.ID, "model-running")
        assert "fused model made 20" in browser.find_element(By.ID, "model-provenance").text
        assert "measured on vtest-walking" in browser.find_element(By.ID, "model-provenance").text
        browser.find_element(By.ID, "bundle-file").send_keys(str(release))
        browser.find_element(By.ID, "upload-button").click()
        result = browser.find_element(By.ID, "upload-result")
        wait.until(lambda d: result.text and not result.text.startswith("installing"))
        assert "2.2.1" in result.text and "refused" not in result.text, result.text
        browser.find_element(By.CSS_SELECTOR, "button[data-view=models]").click()  # read the list again
        row = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "#model-versions tbody tr")))
        assert f"acme ({key_id})" in row.text and "starter-walking-fused 2.2.1" in row.text
        assert row.get_attribute("data-version") in row.text  # its id
        assert "console upload starter-2.2.1.tar by ada" in row.text  # where it came from
        wait.until(lambda d: app.model.version == "2.2.1")  # the cameras switched between frames
        browser.find_element(By.CSS_SELECTOR, "button[data-view=models]").click()
        wait.until(lambda d: "running: starter-walking-fused 2.2.1" in d.find_element(*running).text)
        shot(browser, "models-signed", tmp_path)
        browser.find_element(By.ID, "rollback-button").click()
        wait.until(ec.alert_is_present()).accept()
        wait.until(lambda d: "rolled back: now factory" in d.find_element(By.ID, "upload-result").text)
        wait.until(lambda d: app.model.version == "2.2.0")

        # a phone's screen: every page fits its width (no sideways scrolling), the live view included
        browser.set_window_size(390, 844)
        for view in ("overview", "camera", "events", "models"):
            browser.find_element(By.CSS_SELECTOR, f"button[data-view={view}]").click()
            wait.until(ec.visibility_of_element_located((By.ID, view)))
            if view == "camera":
                wait.until(lambda d: int(canvas.get_attribute("data-people") or 0) >= 1)
                assert canvas.size["width"] <= 390
                shot(browser, "phone-camera", tmp_path)
            overflow = browser.execute_script(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0, (view, overflow)
    finally:
        app.stop()
