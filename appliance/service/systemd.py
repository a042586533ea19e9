"""Running under systemd: readiness, watchdog, status lines and journald.

The notify protocol is one datagram per message to ``$NOTIFY_SOCKET``; ``systemd-python`` sends it
when installed (the ``[systemd]`` extra), otherwise the few lines below do, so a laptop install needs
no libsystemd. Outside systemd (no ``$NOTIFY_SOCKET``) every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
import sys


class Notifier:
    """sd_notify messages: READY=1, STATUS=..., WATCHDOG=1, RELOADING=1, STOPPING=1."""

    def __init__(self) -> None:
        self.address = os.environ.get("NOTIFY_SOCKET")
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        #: how often to ping (half the unit's WatchdogSec), or None without a watchdog
        self.watchdog_interval_s = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 and mine else None
        self._notify = None
        if self.address:
            try:
                from systemd import daemon  # systemd-python

                self._notify = daemon.notify
            except ImportError:
                self._notify = self._send

    @property
    def enabled(self) -> bool:
        return self._notify is not None

    def _send(self, message: str) -> bool:
        assert self.address is not None
        address = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            try:
                sock.sendto(message.encode(), address)
            except OSError:
                return False
        return True

    def notify(self, message: str) -> None:
        if self._notify is not None:
            self._notify(message)

    def ready(self, status: str) -> None:
        self.notify(f"READY=1\nSTATUS={status}")

    def status(self, status: str) -> None:
        self.notify(f"STATUS={status}")

    def watchdog(self) -> None:
        self.notify("WATCHDOG=1")

    def reloading(self) -> None:
        self.notify("RELOADING=1")

    def stopping(self) -> None:
        self.notify("STOPPING=1")


def under_systemd() -> bool:
    return bool(os.environ.get("INVOCATION_ID") or os.environ.get("JOURNAL_STREAM"))


def setup_logging(verbose: bool = False) -> None:
    """journald with structured fields under systemd (when systemd-python is there), else stderr."""
    level = logging.DEBUG if verbose else logging.INFO
    if under_systemd():
        try:
            from systemd.journal import JournalHandler

            handler = JournalHandler(SYSLOG_IDENTIFIER="appliance")
            handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
            logging.basicConfig(level=level, handlers=[handler])
            return
        except ImportError:
            pass
        # journald reads stderr; it stamps the time itself
        logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
        return
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
