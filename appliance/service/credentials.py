"""Secrets read from files (systemd credentials, mounted secrets) rather than written in the config."""

from __future__ import annotations

from pathlib import Path

from appliance.errors import ApplianceError


class CredentialError(ApplianceError):
    """A secret file that cannot be read; the message names the setting and the file."""


def resolve_password(password: str | None, password_file: Path | None, setting: str) -> str | None:
    """``password``, or the first line of ``password_file`` (trailing newline removed)."""
    if password_file is None:
        return password
    try:
        return Path(password_file).read_text().strip()
    except OSError as exc:
        raise CredentialError(f"{setting} password_file {password_file}: {exc.strerror}") from None
