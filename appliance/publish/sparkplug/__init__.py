"""Sparkplug B (Eclipse Sparkplug 3.0) sink: the appliance is an edge node, each camera a device.

``SparkplugSinkConfig`` (``config.py``) is the ``type: sparkplug`` sink section; ``SparkplugNode``
(``node.py``) is the sink; ``metrics.py`` names the node's and devices' metrics and keeps their
values; ``bdseq.py`` numbers the MQTT sessions across restarts; ``payload.py`` holds the protobuf
classes built from ``sparkplug_b.proto``. The node and payload modules are imported on first use,
so reading the configuration needs neither paho-mqtt nor protobuf.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from appliance.errors import ApplianceError

if TYPE_CHECKING:
    from appliance.config.sparkplug import SparkplugSinkConfig
    from appliance.publish.sparkplug.node import SparkplugNode

__all__ = ["SparkplugError", "SparkplugNode", "SparkplugSinkConfig"]


class SparkplugError(ApplianceError):
    """A Sparkplug setting or state file that cannot be used; the message says which and why."""

    exit_code = 2


def __getattr__(name: str) -> Any:
    if name == "SparkplugNode":
        from appliance.publish.sparkplug.node import SparkplugNode

        return SparkplugNode
    if name == "SparkplugSinkConfig":
        from appliance.config.sparkplug import SparkplugSinkConfig

        return SparkplugSinkConfig
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
