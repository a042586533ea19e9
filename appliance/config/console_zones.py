"""Zones drawn in the web console: ``<state_dir>/zones.yaml``, laid over the configuration file.

The configuration file stays the technician's: the service cannot write ``/etc/appliance`` (its
unit keeps it read-only), and an editor bug must never be able to break the file the daemon starts
from. A camera listed here takes these zones instead of its ``cameras[].zones``; every other setting,
and every camera not listed, comes from the file. ``check-config`` says which cameras' zones come
from here, and the console's "use the file's zones" removes a camera's entry.

The zones go through the same :class:`~appliance.config.zones.ZoneConfig` rules as the file's, and
errors name the key (and, read back from disk, the line) like any configuration error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError, field_validator

from appliance.config.schema import ApplianceConfig, ConfigError
from appliance.config.sections import Section, TopicLevel
from appliance.config.yaml_source import Located, compose, read_config_text
from appliance.config.zones import ZoneConfig, unique_zone_names
from appliance.storage import write_atomic

FILE_NAME = "zones.yaml"
HEADER = (
    "# Zones saved from the web console. A camera listed here uses these zones instead of the\n"
    '# cameras[].zones of the configuration file; remove its entry (or press "Use the configuration\n'
    "# file's zones\" in the console) to go back. Same rules as the file's zones (README: zones).\n"
)


class CameraZoneEdit(Section):
    """One camera's zones as an admin saved them in the console."""

    zones: list[ZoneConfig] = Field(max_length=32, description="The camera's zones (empty: no zones).")
    saved_by: str = Field(min_length=1, max_length=64, description="The console user who saved them.")
    saved_at: str = Field(description="When, ISO-8601 UTC.")

    _unique = field_validator("zones")(unique_zone_names)


class ConsoleZones(Section):
    """The whole ``zones.yaml``."""

    schema_version: Literal[1] = 1
    cameras: dict[TopicLevel, CameraZoneEdit] = Field(
        default_factory=dict, description="Camera id -> the zones saved for it in the console."
    )


def console_zones_path(state_dir: Path) -> Path:
    return state_dir / FILE_NAME


def read_console_zones(state_dir: Path) -> ConsoleZones:
    """The saved zones (none when the file does not exist); :class:`ConfigError` naming the key and
    line for a file that does not validate, or that cannot be read."""
    from appliance.config.load import validation_lines

    path = console_zones_path(state_dir)
    try:
        text = read_config_text(path, "the console's zones")
    except FileNotFoundError:
        return ConsoleZones()
    node, data = compose(text, str(path))
    if data is None:
        return ConsoleZones()
    try:
        return ConsoleZones.model_validate(data)
    except ValidationError as exc:
        lines = validation_lines(exc, str(path), Located(node) if node is not None else None, ConsoleZones)
        raise ConfigError("\n".join(lines)) from None


def write_console_zones(state_dir: Path, zones: ConsoleZones) -> None:
    """Replace ``zones.yaml`` atomically (a power cut leaves the old or the new)."""
    data = {"schema_version": 1, "cameras": {
        cam: edit.model_dump(mode="json", exclude_none=True) for cam, edit in zones.cameras.items()
    }}  # fmt: skip
    body = yaml.safe_dump(data, sort_keys=False)
    write_atomic(console_zones_path(state_dir), HEADER + body)


def apply_console_zones(cfg: ApplianceConfig, zones: ConsoleZones) -> ApplianceConfig:
    """``cfg`` with each listed camera's zones replaced by the saved ones (entries for cameras the
    file no longer has are kept on disk, unused)."""
    if not zones.cameras:
        return cfg
    cameras = [
        cam.model_copy(update={"zones": zones.cameras[cam.id].zones}) if cam.id in zones.cameras else cam
        for cam in cfg.cameras
    ]
    return cfg.model_copy(update={"cameras": cameras})
