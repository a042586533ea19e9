"""Talking to an MQTT broker: the TLS context, a paho client, failures in words, the link's health.

:class:`LinkHealth` is what the retained status says about a link (state and since when, the last
problem in words, reconnections, failed attempts in a row); each problem is logged once, not once
per retry.
"""

from __future__ import annotations

import logging
import sqlite3
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from appliance.alarms.events import iso_utc
from appliance.config import MqttSinkConfig, SparkplugSinkConfig
from appliance.errors import ApplianceError

LinkState = Literal["connecting", "connected", "error", "stopped"]


def tls_context(cfg: MqttSinkConfig | SparkplugSinkConfig, sink: str = "mqtt") -> ssl.SSLContext | None:
    """The TLS settings of the sink as a context (None without ``tls``); raises naming a bad file."""
    tls = cfg.tls
    if tls is None:
        return None
    try:
        ctx = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
        if tls.cert_file:
            ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise ApplianceError(f"{sink} tls: cannot load certificates ({exc})") from None
    if tls.insecure_skip_hostname_check:
        ctx.check_hostname = False
    return ctx


CONNACK_WAIT_S = 10.0


def open_session(
    client, host: str, port: int, keepalive: int, health: LinkHealth, client_id: str,
    stop: threading.Event | None = None,
) -> bool:  # fmt: skip
    """CONNECT ``client`` (a fresh paho client, loop not started) and run its network loop until the
    broker answers, at most :data:`CONNACK_WAIT_S`: whether the session is open. A failure is said
    once, in words, through ``health`` (a refusal that smells of credentials says to check them)."""
    answer: dict[str, Any] = {}
    client.on_connect = lambda c, userdata, flags, rc, props: answer.setdefault("rc", rc)
    try:
        client.connect(host, port, keepalive=keepalive)
    except (OSError, ValueError) as exc:  # ssl errors are OSErrors; paho and IDNA raise ValueError
        health.error(connect_failure(exc, host) or str(exc))
        return False
    deadline = time.monotonic() + CONNACK_WAIT_S
    while "rc" not in answer and time.monotonic() < deadline and not (stop is not None and stop.is_set()):
        if client.loop(timeout=0.1) != 0:
            break
    rc = answer.get("rc")
    if rc is not None and not rc.is_failure:
        health.connected(client_id)
        return True
    why = "no answer to CONNECT" if rc is None else str(rc)
    if rc is not None and ("authori" in why.lower() or "password" in why.lower()):
        why += "; check username and password"
    health.error(f"broker refused the connection: {why}")
    client.disconnect()
    return False


def host_text(host: str) -> str:
    """A broker host for a log line: quoted when empty, shortened when absurdly long."""
    return repr(host) if not host else f"'{host[:24]}...{host[-16:]}'" if len(host) > 60 else host


def connect_failure(exc: Exception, host: str) -> str | None:
    """Words for an exception ``client.connect`` raised (None: not a connection failure)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted ({exc.verify_message}); check tls.ca_file"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed ({exc.reason or exc})"
    if isinstance(exc, OSError):
        return f"cannot reach the broker ({exc.strerror or exc})"
    if isinstance(exc, ValueError):  # paho: empty host; the IDNA codec (UnicodeError): a label over 63
        why = (
            "a part between dots is empty or over 63 characters"
            if isinstance(exc, UnicodeError)
            else "it is empty"
            if not host
            else str(exc)
        )
        return f"invalid broker host {host_text(host)}: {why}; check host in the mqtt sink"
    return None


def unexpected_failure(exc: Exception, outbox_path: Path) -> str:
    """Words for an error the link did not expect (it is retried like any other)."""
    if isinstance(exc, sqlite3.Error):
        return f"outbox error ({exc}); check {outbox_path} and the free disk space"
    return f"unexpected error in the MQTT link ({type(exc).__name__}: {exc})"


class LinkHealth:
    """State, last problem and counters of one broker link, for the log and the retained status."""

    def __init__(
        self,
        host: str,
        port: int,
        log: logging.Logger,
        label: str = "MQTT",
        kept: str = "events are kept in the outbox",
    ) -> None:
        self.host, self.port, self.log = host, port, log
        self.label, self.kept = label, kept  # how the log names the link, and what it keeps while down
        self.state: LinkState = "connecting"
        self.state_since = time.time()
        self.last_error: str | None = None  # the latest problem in words; kept after reconnecting
        self.last_error_at: float | None = None
        self.reconnects = 0
        self.failed_attempts = 0  # since the last successful connection
        self._connections = 0
        self._said: str | None = None  # the error logged last: each is said once, not once per retry
        self._said_guarded: set[str] = set()

    def set_state(self, state: LinkState) -> None:
        if state != self.state:
            self.state, self.state_since = state, time.time()

    def error(self, message: str) -> None:
        """A link problem in words: logged once (until the next connection), kept for the status."""
        if message != self._said:
            self.log.error(
                "%s %s:%s: %s; retrying with backoff", self.label, host_text(self.host), self.port, message
            )
            self._said = message
        self.last_error, self.last_error_at = message, time.time()
        self.set_state("error")

    def connected(self, client_id: str) -> None:
        self._connections += 1
        if self._connections > 1:
            self.reconnects += 1
            self.log.info("%s %s:%s: connected again", self.label, self.host, self.port)
        else:
            self.log.info("%s %s:%s: connected as %s", self.label, self.host, self.port, client_id)
        self._said = None
        self.failed_attempts = 0
        self.set_state("connected")

    def lost(self) -> None:
        self.log.warning("%s %s:%s: connection lost; %s", self.label, self.host, self.port, self.kept)
        self.last_error, self.last_error_at = "connection lost", time.time()
        self.set_state("error")

    def guarded(self, what: str, fn: Callable[..., Any], *args: Any) -> None:
        """Run a status/telemetry step; an error there is said once and does not end the session."""
        try:
            fn(*args)
        except Exception as exc:
            message = f"MQTT: {what} not published: {type(exc).__name__}: {exc}"
            if message not in self._said_guarded:
                self._said_guarded.add(message)
                self.log.error("%s", message)
            self.log.debug("MQTT %s failed", what, exc_info=True)

    def status(self) -> dict[str, Any]:
        """The ``link`` entry of the retained status (:class:`appliance.alarms.events.LinkStatus`)."""
        out: dict[str, Any] = {
            "state": self.state,
            "since": iso_utc(self.state_since),
            "broker": f"{self.host}:{self.port}",
            "reconnects": self.reconnects,
            "failed_attempts": self.failed_attempts,
        }
        if self.last_error is not None and self.last_error_at is not None:
            out["last_error"] = self.last_error
            out["last_error_at"] = iso_utc(self.last_error_at)
        return out
