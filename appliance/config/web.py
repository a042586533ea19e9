"""The ``web`` section: the local console (``appliance/web``) and its Prometheus ``/metrics``."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from appliance.config.sections import Section


class WebConfig(Section):
    """The console the daemon serves to the people who install and run it (README: web console)."""

    enabled: bool = Field(False, description="Serve the console and /metrics (needs the [web] extra).")
    bind: str = Field(
        "127.0.0.1",
        description="Address to listen on: 127.0.0.1 for this machine only, 0.0.0.0 (with TLS) for the "
        "plant network.",
    )
    port: int = Field(8080, ge=1, le=65535, description="TCP port of the console.")
    tls_cert_file: Path | None = Field(
        None, description="TLS certificate (PEM); with tls_key_file the console speaks HTTPS only."
    )
    tls_key_file: Path | None = Field(None, description="TLS private key (PEM), e.g. a systemd credential.")
    users_file: Path | None = Field(
        None,
        description="Who may log in (written by `appliance web-passwd`); default <state_dir>/web/users.json. "
        "There is no default user and no default password.",
    )
    session_minutes: float = Field(480, gt=0, le=7 * 24 * 60, description="A login lasts this long idle.")
    login_attempts_per_minute: float = Field(
        5,
        gt=0,
        le=600,
        description="Failed logins allowed per minute per user name (4 times as many per "
        "address); more are refused until the minute is over.",
    )
    setup_image: bool = Field(
        False,
        description="Let admins see one still camera frame for aiming (never stored, never sent elsewhere); "
        "off: the console shows skeletons only.",
    )
    metrics: bool = Field(True, description="Serve Prometheus metrics at /metrics (no login; read only).")

    @model_validator(mode="after")
    def _tls_pair(self) -> WebConfig:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("give tls_cert_file and tls_key_file together (or neither)")
        return self
