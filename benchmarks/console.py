"""What the web console costs on the device: the daemon's CPU and RSS with the console on but nobody
watching, against the same daemon with one headless Chromium logged in and watching the camera's
live skeletons (server-sent events at up to 10 frames a second), and against the console off.

One camera (the dancing clip, looped in real time at the model's 10 fps, one person), so the
machine is not saturated and the console's cost shows as CPU time, not as lost frames. Each
condition runs ``--rounds`` times in turn (off, idle, watched, off, ...) for ``--seconds``; the
figures are medians over rounds, and the ratios are taken within the run.

    .venv/bin/python benchmarks/console.py --seconds 60 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from appliance.service.demo import STARTER_BUNDLE, WORKCELL_CLIP  # noqa: E402
from appliance.web.users import UserStore  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_daemon(folder: Path, web: bool) -> tuple[subprocess.Popen, int]:
    port = free_port()
    cfg = {
        "schema_version": 1, "appliance_id": "bench", "state_dir": str(folder / "state"),
        "model": {"bundle": str(STARTER_BUNDLE), "watch_inbox": False}, "pose": {"type": "blazepose"},
        "cameras": [
            {"id": "workcell", "source": str(WORKCELL_CLIP), "fps": None, "loop": True, "realtime": True}
        ],
        "detector": {"threshold": 2.77}, "sinks": [{"type": "jsonl", "path": str(folder / "events.jsonl")}],
        "web": {"enabled": web, "port": port},
    }  # fmt: skip
    path = folder / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen(
        [str(ROOT / ".venv/bin/appliance"), "run", "--config", str(path)],
        stdout=subprocess.DEVNULL, stderr=(folder / "daemon.log").open("w"),
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if web:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                pass
        elif "camera workcell" in (folder / "daemon.log").read_text():
            break
        time.sleep(0.2)
    time.sleep(5)  # past start-up: models loaded, first windows scored
    return proc, port


def browser_watching(port: int):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(
        service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=options
    )
    driver.get(f"http://127.0.0.1:{port}/")
    wait = WebDriverWait(driver, 60)
    wait.until(lambda d: d.find_element(By.ID, "login-form").is_displayed())
    driver.find_element(By.ID, "user").send_keys("bench")
    driver.find_element(By.ID, "password").send_keys("bench-password-1")
    driver.find_element(By.ID, "login-button").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#cameras .card"))
    driver.find_element(By.CSS_SELECTOR, "button[data-view=camera]").click()
    wait.until(lambda d: int(d.find_element(By.ID, "live").get_attribute("data-people") or 0) >= 1)
    return driver


def measure(pid: int, seconds: float) -> tuple[float, float]:
    """(CPU as % of one core, median RSS in MB) over ``seconds``."""
    c0, t0, rss = cpu_s(pid), time.monotonic(), []
    while time.monotonic() - t0 < seconds:
        time.sleep(1.0)
        rss.append(rss_mb(pid))
    return 100 * (cpu_s(pid) - c0) / (time.monotonic() - t0), statistics.median(rss)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    results: dict[str, list[tuple[float, float]]] = {"console off": [], "console on, nobody watching": [],
                                                      "console on, one browser watching": []}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for web in (False, True):
                folder = Path(tmp) / f"r{r}-{web}"
                folder.mkdir()
                if web:
                    UserStore(folder / "state" / "web" / "users.json").set(
                        "bench", "viewer", "bench-password-1"
                    )
                proc, port = start_daemon(folder, web)
                try:
                    if not web:
                        results["console off"].append(measure(proc.pid, args.seconds))
                        continue
                    results["console on, nobody watching"].append(measure(proc.pid, args.seconds))
                    driver = browser_watching(port)
                    try:
                        results["console on, one browser watching"].append(measure(proc.pid, args.seconds))
                    finally:
                        driver.quit()
                finally:
                    proc.terminate()
                    proc.wait(30)
    base_cpu = statistics.median(c for c, _ in results["console off"])
    base_rss = statistics.median(m for _, m in results["console off"])
    print(
        f"daemon, one camera (dancing clip, 10 fps, one person), {args.rounds} rounds of {args.seconds:.0f} s"
    )
    print(f"{'condition':36} {'CPU % of a core':>16} {'RSS MB':>8} {'CPU vs off':>11} {'RSS vs off':>11}")
    for name, rows in results.items():
        cpu = statistics.median(c for c, _ in rows)
        rss = statistics.median(m for _, m in rows)
        print(f"{name:36} {cpu:16.1f} {rss:8.0f} {cpu / base_cpu:10.2f}x {rss - base_rss:+10.0f}")


if __name__ == "__main__":
    main()
