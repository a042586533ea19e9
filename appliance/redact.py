"""Secrets out of anything a person or a log will read: camera URLs, pipelines, error messages.

A camera source such as ``rtsp://admin:SuperSecret123@10.0.0.5/stream`` carries its password; so
may a query (``?password=...``, ``&token=...``) or a GStreamer property (``user-pw=...``). Every
string that leaves the process as a log line, a status field, an error or a printed summary goes
through :func:`redact` first, which keeps what identifies the source (scheme, user, host, path) and
replaces the secret with ``***``. It is idempotent and never raises.
"""

from __future__ import annotations

import logging
import re
from typing import Any

MASK = "***"

# scheme://userinfo@ ... : the userinfo runs to the last '@' before whitespace or a quote, so a
# password holding an unencoded '@' or '/' is still covered (over-redacting a rare path '@' is safe).
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^\s'\"<>]*)@")

# scheme://user:password/... without the '@' (a forgotten host): what stands where the port goes is
# not a number, so it is taken for a password. Bracketed IPv6 hosts are left alone.
_NOT_A_PORT = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://(?!\[)[^/\s:@'\"<>\[]*):"
    r"(?P<port>[^/\s@'\"<>?#]*[^\d/\s@'\"<>?#][^/\s@'\"<>?#]*)"
)

# key=value where the key names a secret: URL query parameters (?password=, &token=) and
# GStreamer/ffmpeg properties (user-pw=, proxy-pw=, passphrase=).
_SECRET_KEY = (
    r"(?:[A-Za-z0-9_]*-pw|[A-Za-z0-9_-]*pass(?:word|wd|phrase)?|pwd|[A-Za-z0-9_-]*token|auth|authorization"
    r"|[A-Za-z0-9_-]*secret|api[-_]?key|apikey|key|sig|signature|credentials?)"
)
_KEY_VALUE = re.compile(rf"(?P<key>(?:^|(?<=[?&;\s,(]))(?:{_SECRET_KEY})=)(?P<value>[^&;\s'\"#<>)]*)", re.I)


def _userinfo(m: re.Match[str]) -> str:
    info = m.group("userinfo")
    if ":" in info:  # user:password -> keep the user, it helps find the camera
        user = info.split(":", 1)[0]
        return f"{m.group('scheme')}{user}:{MASK}@"
    return f"{m.group('scheme')}{MASK}@" if info and info != MASK else m.group(0)


def redact(value: Any) -> str:
    """``str(value)`` with URL passwords and secret-named parameters replaced by ``***``."""
    text = value if isinstance(value, str) else str(value)
    if "@" in text:
        text = _USERINFO.sub(_userinfo, text)
    if "://" in text:
        text = _NOT_A_PORT.sub(lambda m: f"{m.group('head')}:{MASK}", text)
    if "=" in text:
        text = _KEY_VALUE.sub(lambda m: m.group("key") + (MASK if m.group("value") else ""), text)
    return text


class RedactingFilter(logging.Filter):
    """A handler filter that redacts each record's message, arguments and traceback text.

    Attached to handlers (not loggers) so that records propagated from every ``appliance.*`` logger
    pass through it, whatever module formatted the secret into its message.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed call: leave it to the handler to report
            return True
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Add a :class:`RedactingFilter` to every handler of ``logger`` (default: the root logger)."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
