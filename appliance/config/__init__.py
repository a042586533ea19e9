"""The appliance's YAML configuration: validated at start, every field described, unknown keys refused.

A mistake is reported as ``FILE:LINE: key.path: what is wrong`` so a technician can fix it without
reading code. Secrets never need to sit in the file: ``password_file`` (e.g. a systemd credential
under ``$CREDENTIALS_DIRECTORY``) or ``${ENV_NAME}`` in any string value.

:mod:`.schema` holds the sections and their rules (:mod:`.pose` the pose backends', :mod:`.sections`
what all sections share), :mod:`.yaml_source` the bounded YAML reading with
line numbers, :mod:`.load` the file loading and the error wording.
"""

from appliance.config.load import key_locator, load_config, parse_config
from appliance.config.pose import BlazePoseConfig, KeypointsPoseConfig, OnnxPoseConfig, PoseConfig
from appliance.config.schema import (
    CONFIG_SCHEMA_VERSION,
    ApplianceConfig,
    BrokerHost,
    CameraConfig,
    ConfigError,
    DetectorConfig,
    JsonlSinkConfig,
    ModelConfig,
    MqttSinkConfig,
    MqttTlsConfig,
    SinkConfig,
    StdoutSinkConfig,
    TrackingConfig,
)
from appliance.config.sections import PixelSize, TopicLevel
from appliance.config.sparkplug import SparkplugSinkConfig
from appliance.config.web import WebConfig
from appliance.config.yaml_source import (
    CREDENTIALS_HINT,
    MAX_CONFIG_BYTES,
    MAX_CONFIG_DEPTH,
    MAX_CONFIG_VALUES,
)
from appliance.config.zones import ScheduleConfig, ZoneConfig

__all__ = [
    "CONFIG_SCHEMA_VERSION",
    "CREDENTIALS_HINT",
    "MAX_CONFIG_BYTES",
    "MAX_CONFIG_DEPTH",
    "MAX_CONFIG_VALUES",
    "ApplianceConfig",
    "BlazePoseConfig",
    "BrokerHost",
    "CameraConfig",
    "ConfigError",
    "DetectorConfig",
    "JsonlSinkConfig",
    "KeypointsPoseConfig",
    "ModelConfig",
    "MqttSinkConfig",
    "MqttTlsConfig",
    "OnnxPoseConfig",
    "PixelSize",
    "PoseConfig",
    "ScheduleConfig",
    "SinkConfig",
    "SparkplugSinkConfig",
    "StdoutSinkConfig",
    "TopicLevel",
    "TrackingConfig",
    "WebConfig",
    "ZoneConfig",
    "key_locator",
    "load_config",
    "parse_config",
]
