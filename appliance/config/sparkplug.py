"""The ``type: sparkplug`` sink section: where the Sparkplug B edge node connects, what it is called,
whom it waits for (the primary host), and how much it stores while nobody listens.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from appliance.config.broker_fields import BrokerHost, BrokerLogin, MqttTlsConfig, OutboxBounds


def _sparkplug_id(v: str) -> str:
    # Sparkplug 3.0: group, edge node and device ids are UTF-8 strings without '+', '/' or '#'.
    if not v or len(v) > 128 or re.search(r"[+/#\s]", v):
        raise ValueError("use 1-128 characters without '+', '/', '#' or spaces (it becomes a topic level)")
    return v


SparkplugId = Annotated[str, AfterValidator(_sparkplug_id)]


class SparkplugSinkConfig(BrokerLogin, OutboxBounds):
    """Sparkplug B over MQTT 3.1.1: the appliance is the edge node, each camera one of its devices."""

    type: Literal["sparkplug"] = Field("sparkplug", description="Selects this sink.")
    host: BrokerHost = Field("127.0.0.1", description="Broker host name or address.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port (8883 for TLS by convention).")
    tls: MqttTlsConfig | None = Field(None, description="TLS settings; absent = plain TCP.")
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

    primary_host_id: SparkplugId | None = Field(
        None,
        description="The host application id of the primary host (the SCADA that must see every alarm). "
        "With it, births wait for its STATE online=true, and while it is offline the node stays silent "
        "and stores its data, sent with is_historical=true when the host is back (docs/mqtt.md).",
    )
    aliases: bool = Field(
        True, description="Births give each metric an alias; data messages carry the alias, not the name."
    )
    commands: bool = Field(
        False,
        description="Honour DCMD writes to the alarm points (acknowledge, shelve) and the operator "
        "metrics; restrict who may publish DCMD with the broker's ACLs. Rebirth requests (NCMD) are "
        "always honoured.",
    )
    commands_per_minute: float = Field(
        30.0, gt=0, le=6000, description="DCMD messages handled per minute (bursts of 10); the rest dropped."
    )

    def node_id(self, appliance_id: str) -> str:
        """The edge node id in force: ``edge_node_id``, else the appliance id."""
        return self.edge_node_id or appliance_id
