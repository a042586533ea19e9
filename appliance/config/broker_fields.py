"""The field types both broker links share (the JSON ``mqtt`` sink and the ``sparkplug`` edge node):
a broker host name, TLS files, and a size in bytes with a unit."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from appliance.config.sections import Section
from appliance.service.credentials import resolve_password


class MqttTlsConfig(Section):
    """TLS on a broker link: whom to trust, and the client certificate for mutual TLS."""

    ca_file: Path | None = Field(None, description="CA certificate(s) to trust (default: the system's).")
    cert_file: Path | None = Field(None, description="Client certificate (mutual TLS).")
    key_file: Path | None = Field(None, description="Client private key (if not inside cert_file).")
    insecure_skip_hostname_check: bool = Field(
        False, description="Accept a certificate for another host name (test benches only)."
    )


def _broker_host(v: str) -> str:
    """A host name (DNS labels of 1-63 characters, 253 in all) or an IPv4/IPv6 address."""
    if not v or v != v.strip():
        raise ValueError("give the broker's host name or IP address (empty, or spaces around it)")
    try:
        ipaddress.ip_address(v)
        return v
    except ValueError:
        pass
    try:
        name = v.encode("idna").decode("ascii") if not v.isascii() else v
    except UnicodeError:
        raise ValueError(f"{v!r} is not a valid host name") from None
    name = name[:-1] if name.endswith(".") else name
    if len(name) > 253:
        raise ValueError(f"host name is {len(name)} characters; DNS allows at most 253")
    labels = name.split(".")
    for label in labels:
        if not 1 <= len(label) <= 63:
            shown = label if len(label) <= 20 else label[:20] + "..."
            raise ValueError(
                f"host name part {shown!r} is {len(label)} characters; each part between dots must be 1-63"
            )
        if not re.fullmatch(r"[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?", label):
            raise ValueError(f"host name part {label!r}: use letters, digits and '-' (not first or last)")
    if all(label.isdigit() for label in labels):
        raise ValueError(f"{v!r} is not a valid IPv4 address")
    return v


BrokerHost = Annotated[str, AfterValidator(_broker_host)]
_UNITS = {"": 1, "b": 1, "kib": 2**10, "mib": 2**20, "gib": 2**30, "kb": 10**3, "mb": 10**6, "gb": 10**9}


def _byte_size(v: Any) -> Any:
    """``67108864``, ``"64 MiB"`` or ``"500MB"`` -> bytes."""
    if isinstance(v, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", v)
        if not m or m.group(2).lower() not in _UNITS:
            raise ValueError("give bytes as a number or with a unit: B, KiB, MiB, GiB, kB, MB, GB")
        return int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    return v


class BrokerLogin(Section):
    """A broker link's user name and password (from the file, ideally a systemd credential)."""

    username: str | None = Field(None, description="Broker user name.")
    password: str | None = Field(None, description="Broker password (prefer password_file or ${ENV}).")
    password_file: Path | None = Field(
        None, description="File holding the broker password (e.g. ${CREDENTIALS_DIRECTORY}/mqtt-password)."
    )

    @model_validator(mode="after")
    def _one_password_source(self):
        if self.password is not None and self.password_file is not None:
            raise ValueError("give password or password_file, not both")
        return self

    def resolve_password(self) -> str | None:
        """The password, read from ``password_file`` when one is given."""
        return resolve_password(self.password, self.password_file, getattr(self, "type", "mqtt"))


class OutboxBounds(Section):
    """How much a broker link keeps on disk while nobody takes its messages (``appliance.publish.outbox``)."""

    outbox_max_messages: int = Field(
        100_000,
        ge=100,
        le=10_000_000,
        description="Most messages kept on disk while the broker is away (any kind; outbox_max_bytes "
        "says what goes first).",
    )
    outbox_max_age_s: float = Field(
        7 * 86400,
        gt=0,
        le=366 * 86400,
        description="Updates older than this leave the outbox (starts and ends never).",
    )
    outbox_max_bytes: Annotated[int, BeforeValidator(_byte_size)] = Field(
        64 * 2**20,
        ge=2**20,
        le=2**40,
        description="Most space the outbox's messages take ('64 MiB', '1 GiB' or bytes), every kind "
        "counted. When full: oldest updates go first, then the oldest closed anomalies (start and end "
        "together), then the oldest of anything (docs/mqtt.md).",
    )
