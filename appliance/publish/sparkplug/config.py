"""The ``type: sparkplug`` sink section: where the Sparkplug B edge node connects and what it is called.

Kept free of imports from ``appliance.config`` so that module can import this one into its sink union.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from appliance.service.credentials import resolve_password


def _sparkplug_id(v: str) -> str:
    # Sparkplug 3.0: group, edge node and device ids are UTF-8 strings without '+', '/' or '#'.
    if not v or len(v) > 128 or re.search(r"[+/#\s]", v):
        raise ValueError("use 1-128 characters without '+', '/', '#' or spaces (it becomes a topic level)")
    return v


SparkplugId = Annotated[str, AfterValidator(_sparkplug_id)]


class SparkplugSinkConfig(BaseModel):
    """Sparkplug B over MQTT 3.1.1: the appliance is the edge node, each camera one of its devices."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["sparkplug"] = Field("sparkplug", description="Selects this sink.")
    host: str = Field("127.0.0.1", description="Broker host name or address.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port.")
    group_id: SparkplugId = Field(
        description="Sparkplug group id, the first level after spBv1.0 (e.g. the site or line)."
    )
    edge_node_id: SparkplugId | None = Field(
        None, description="Sparkplug edge node id (default: the appliance_id)."
    )
    client_id: str | None = Field(
        None, description="MQTT client id (default: sparkplug-<group_id>-<edge_node_id>)."
    )
    keepalive_s: int = Field(
        30, ge=5, le=3600, description="MQTT keepalive; the broker sends the NDEATH after 1.5 x this silence."
    )
    username: str | None = Field(None, description="Broker user name.")
    password: str | None = Field(None, description="Broker password (prefer password_file or ${ENV}).")
    password_file: Path | None = Field(None, description="File holding the broker password.")

    @model_validator(mode="after")
    def _one_password_source(self) -> SparkplugSinkConfig:
        if self.password is not None and self.password_file is not None:
            raise ValueError("give password or password_file, not both")
        return self

    def node_id(self, appliance_id: str) -> str:
        """The edge node id in force: ``edge_node_id``, else the appliance id."""
        return self.edge_node_id or appliance_id

    def resolve_password(self) -> str | None:
        """The password, read from ``password_file`` when one is given."""
        return resolve_password(self.password, self.password_file, "sparkplug")
