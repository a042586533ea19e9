"""The update inbox: a folder where a technician (or a USB automount) drops model bundles.

A ``.tar`` in ``<state_dir>/inbox`` is installed once its size and modification time have stopped
changing for a few seconds (a copy in progress is left alone; names starting with ``.`` or ending in
``.part``/``.tmp`` are ignored, so ``cp x.tar inbox/x.tar.part && mv`` is the safest way). Installed
files move to ``inbox/installed/``, refused ones to ``inbox/refused/`` with a ``.txt`` saying why.
Installs run in a background thread so the cameras keep running; one at a time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("appliance.inbox")  # the name journals and log filters know

SETTLE_S = 3.0
IGNORED_SUFFIXES = (".part", ".tmp", ".partial")


class Inbox:
    def __init__(self, folder: Path, install: Callable[[Path], str], settle_s: float = SETTLE_S) -> None:
        """``install(path)`` installs a bundle and returns a summary, or raises with the refusal."""
        self.folder = Path(folder)
        self.install = install
        self.settle_s = settle_s
        self._seen: dict[str, tuple[int, int, float]] = {}  # name -> (size, mtime_ns, unchanged since)
        self._done: set[tuple[str, int, int]] = set()  # processed but could not be moved away
        self._thread: threading.Thread | None = None

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def poll(self) -> None:
        """Look for settled bundles; start installing the oldest one (unless an install is running)."""
        if self.busy:
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            entries = [p for p in self.folder.iterdir() if p.is_file() and self._candidate(p.name)]
        except OSError as exc:
            log.warning("update inbox %s is unreadable: %s", self.folder, exc)
            return
        now = time.monotonic()
        ready = []
        for p in entries:
            try:
                st = p.stat()
            except OSError:
                continue
            key = (st.st_size, st.st_mtime_ns)
            if (p.name, *key) in self._done:
                continue
            seen = self._seen.get(p.name)
            if seen is None or seen[:2] != key:
                self._seen[p.name] = (*key, now)
            elif now - seen[2] >= self.settle_s:
                ready.append((st.st_mtime_ns, p))
        self._seen = {k: v for k, v in self._seen.items() if (self.folder / k).exists()}
        if ready:
            path = min(ready)[1]
            self._thread = threading.Thread(
                target=self._process, args=(path,), name="model-inbox", daemon=True
            )
            self._thread.start()

    def wait(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    @staticmethod
    def _candidate(name: str) -> bool:
        return name.endswith(".tar") and not name.startswith(".") and not name.endswith(IGNORED_SUFFIXES)

    def _process(self, path: Path) -> None:
        try:
            st = path.stat()
        except OSError:  # taken away again (the stick was pulled) before the install began
            self._seen.pop(path.name, None)
            return
        log.info("update inbox: installing %s", path.name)
        try:
            summary, outcome = self.install(path), "installed"
        except Exception as exc:  # refusals are ModelErrors; anything else is refused just the same
            summary, outcome = str(exc), "refused"
        target = self.folder / outcome
        try:
            target.mkdir(exist_ok=True)
            path.rename(target / path.name)
            (target / f"{path.name}.txt").write_text(summary + "\n")
        except OSError as exc:  # a read-only USB stick: remember it instead
            log.warning("update inbox: cannot move %s to %s/ (%s)", path.name, outcome, exc)
            self._done.add((path.name, st.st_size, st.st_mtime_ns))
        self._seen.pop(path.name, None)
