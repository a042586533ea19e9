"""Boot counter: a model version that keeps killing the daemon at start is marked bad, as A/B firmware does.

A scoring error is caught and rolled back while the daemon runs; a crash of the process itself (a
native fault in a runtime, memory exhausted while loading, a watchdog kill) is not, and systemd would
restart it into the same version until its start limit left the unit failed. So each start of an
installed version is counted in ``<state_dir>/boot.json`` and the count is cleared once that start
becomes healthy (it ran ``healthy_after_s``, or stopped cleanly). When ``failed_starts_before_bad``
starts in a row within ``failed_starts_window_s`` never became healthy, the next start marks the
version bad and starts the previous (or the factory) version.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from appliance.storage import write_atomic

log = logging.getLogger("appliance.boot_guard")  # the name journals and log filters know


class BootGuard:
    def __init__(self, state_dir: Path, failed_starts_before_bad: int, window_s: float) -> None:
        self.path = Path(state_dir) / "boot.json"
        self.limit, self.window_s = failed_starts_before_bad, window_s
        self.version: str | None = None

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def failed_starts(self, version: str) -> int:
        """Starts of ``version`` within the window that never became healthy (this one not counted)."""
        data = self._read()
        if data.get("version") != version:
            return 0
        now = time.time()
        return sum(
            1 for t in data.get("starts", []) if isinstance(t, (int, float)) and now - t < self.window_s
        )

    def should_mark_bad(self, version: str) -> bool:
        return self.failed_starts(version) >= self.limit

    def starting(self, version: str) -> None:
        """Count this start of ``version`` until it becomes healthy."""
        data = self._read()
        now = time.time()
        starts = data.get("starts", []) if data.get("version") == version else []
        starts = [t for t in starts if isinstance(t, (int, float)) and now - t < self.window_s] + [now]
        self.version = version
        self._write({"version": version, "starts": starts})

    def healthy(self) -> None:
        """This start is healthy: the count starts over."""
        if self.version is not None and self.path.exists():
            self._write({"version": self.version, "starts": []})
        self.version = None

    def _write(self, data: dict) -> None:
        try:
            write_atomic(self.path, json.dumps(data))
        except OSError as exc:
            log.error("boot counter %s not written: %s", self.path, exc)
