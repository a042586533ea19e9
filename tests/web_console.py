"""Shared by the console tests: a running daemon on the two demo clips with the console on a free
port, users made with the real ``appliance web-passwd``, and a small cookie-keeping HTTP client."""

from __future__ import annotations

import http.cookiejar
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from appliance.config import load_config
from appliance.service.demo import DEMO_CLIP, WORKCELL_CLIP

from .conftest import free_port, write_appliance_config

PASSWORDS = {
    "vera": "viewer-pass-1",
    "otto": "operator-pass-2",
    "ada": "admin-pass-3",
    "rita": "locked-out-4",
}
ROLES = {"vera": "viewer", "otto": "operator", "ada": "admin", "rita": "viewer"}  # rita: the limiter test


def add_users(config: Path) -> None:
    for user, password in PASSWORDS.items():
        out = subprocess.run(
            [sys.executable, "-m", "appliance.cli", "web-passwd", user, "--role", ROLES[user],
             "--config", str(config), "--password-stdin"],
            input=password + "\n", capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr


def console_config(
    tmp_path: Path, sinks: list[dict] | None = None, realtime: bool = True, **web: Any
) -> tuple[Path, int]:
    """Both demo clips, looped (``realtime``: paced like live cameras; else as fast as processed)."""
    port = free_port()
    cams = [
        {"id": "walkway", "source": str(DEMO_CLIP), "fps": None, "loop": True, "realtime": realtime},
        {"id": "workcell", "source": str(WORKCELL_CLIP), "fps": None, "loop": True, "realtime": realtime},
    ]
    path = write_appliance_config(
        tmp_path / "c.yaml", cams[0], cameras=cams, detector={"threshold": 2.77, "start_windows": 3},
        web={"enabled": True, "port": port, **web},
        **({"sinks": sinks} if sinks is not None else {}),
    )  # fmt: skip
    add_users(path)
    return path, port


def start_appliance(config: Path):
    from appliance.service.daemon import Appliance
    from calibration.live import register_live_commands

    app = Appliance(load_config(config), config_path=config)  # as `appliance run --config` does
    register_live_commands(app)  # as `appliance run` does: recalibrate and learn
    app.start()
    assert app.console is not None, "the console did not start"
    # the daemon's main loop (model switches, calibrations, shelves that expire), as `appliance run`
    # runs it; it ends when the cameras stop
    threading.Thread(target=app.wait, args=(threading.Event(),), name="main-loop", daemon=True).start()
    return app


class Client:
    """An HTTP client that keeps its cookies (the session) and the CSRF token it was given."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        self.csrf: str | None = None

    def request(
        self, method: str, path: str, body: Any = None, csrf: bool = True, raw: bool = False
    ) -> tuple[int, Any, dict[str, str]]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if csrf and self.csrf and method != "GET":
            req.add_header("X-CSRF-Token", self.csrf)
        try:
            with self.opener.open(req, timeout=20) as resp:
                status, payload, headers = resp.status, resp.read(), dict(resp.headers)
        except urllib.error.HTTPError as err:
            status, payload, headers = err.code, err.read(), dict(err.headers)
        if raw:
            try:
                return status, payload.decode(), headers
            except UnicodeDecodeError:
                return status, payload, headers  # an image
        try:
            return status, json.loads(payload), headers
        except ValueError:
            return status, payload.decode(), headers

    def login(self, user: str, password: str | None = None) -> int:
        status, body, _ = self.request(
            "POST", "/api/login", {"user": user, "password": password or PASSWORDS[user]}
        )
        if status == 200:
            self.csrf = body["csrf"]
        return status

    def wait_for(self, check, what: str, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.2)
