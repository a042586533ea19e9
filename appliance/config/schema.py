"""The settings sections and their rules: every field described, unknown keys refused, inf and nan refused.

Each section is a frozen pydantic model; the pose backend and the sinks are chosen by their ``type``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from appliance.config.broker_fields import BrokerHost, BrokerLogin, MqttTlsConfig, OutboxBounds
from appliance.config.pose import BlazePoseConfig, KeypointsPoseConfig, PoseConfig
from appliance.config.sections import (
    ACCELERATOR_HELP,
    AcceleratorKind,
    PlacedSection,
    Section,
    TopicLevel,
)
from appliance.config.sparkplug import SparkplugSinkConfig
from appliance.config.web import WebConfig
from appliance.config.zones import ZoneConfig, unique_zone_names
from appliance.errors import ApplianceError

CONFIG_SCHEMA_VERSION = 1


class ConfigError(ApplianceError):
    """The configuration cannot be used; the message names the file, line and key."""

    exit_code = 2


class ModelConfig(PlacedSection):
    bundle: Path = Field(description="Model bundle to score with: a bundle directory or its .tar.")
    runtime: Literal["auto", "onnxruntime", "tflite"] = Field(
        "auto",
        description="Inference runtime for the scorer graphs: 'auto' (default) takes the faster one for "
        "the bundle's kind of model among those installed: onnxruntime for maps and fused models when "
        "the [onnx] extra is installed (it batches a frame's tracks in one call), LiteRT otherwise and "
        "for posture-motion models; or 'onnxruntime' / 'tflite' (README: runtimes).",
    )
    variant: str | None = Field(
        None, description="Bundle variant (e.g. onnx-int8); default: the int8 variant for the runtime."
    )
    threads: int = Field(1, ge=1, le=16, description="Inference threads of the scorer.")
    gpu_delegate: Path | None = Field(
        None, description="LiteRT GPU delegate library (libtensorflowlite_gpu_delegate.so) for 'litert-gpu'."
    )
    accelerator: AcceleratorKind = Field("cpu", description=ACCELERATOR_HELP)
    trusted_keys: Path | None = Field(
        None,
        description="Folder of the Ed25519 public keys (*.pub) whose signed bundles this appliance accepts "
        "as field updates (default: 'trusted-keys' beside this config file).",
    )
    allow_unsigned: bool = Field(
        False,
        description="Development only: accept unsigned bundles and bundles signed by unknown keys. "
        "The status reports it.",
    )
    keep_versions: int = Field(
        3, ge=2, le=20, description="Installed model versions kept for rollback (the active one included)."
    )
    health_window_s: float = Field(
        300.0,
        ge=0,
        le=86400,
        description="Probation after a model switch: a scoring error within this many seconds rolls back "
        "and marks the version bad (it is not installed again without `appliance update --force`); "
        "a scoring error later rolls back without marking it.",
    )
    failed_starts_before_bad: int = Field(
        3,
        ge=1,
        le=100,
        description="Boot counter: this many starts of one installed version in a row that never became "
        "healthy (ran healthy_after_s, or stopped cleanly) within failed_starts_window_s mark it bad, "
        "and the appliance starts the previous or the factory version instead.",
    )
    failed_starts_window_s: float = Field(
        600.0, gt=0, le=86400, description="Window of the boot counter, in seconds."
    )
    healthy_after_s: float = Field(
        60.0, gt=0, le=3600, description="A start counts as healthy after running this long."
    )
    watch_inbox: bool = Field(
        True,
        description="Install bundles (.tar) dropped into <state_dir>/inbox (a USB automount or a share).",
    )


class CameraConfig(Section):
    id: TopicLevel = Field(description="Camera id used in events and topics (letters, digits, '-', '_').")
    source: str | int = Field(
        description="Video file, rtsp:// or http:// URL, V4L2 device (0 or /dev/video0), or a "
        "GStreamer pipeline (contains '!')."
    )
    fps: float | None = Field(
        30.0, gt=0, le=120, description="Frames per second processed; None = source rate."
    )
    width: int | None = Field(
        None, gt=0, le=16384, description="Frame width to request from a device (None = as is)."
    )
    height: int | None = Field(None, gt=0, le=16384, description="Frame height to request from a device.")
    loop: bool = Field(
        False, description="Restart a video file or a keypoint replay at its end (demos, tests)."
    )
    realtime: bool | None = Field(
        None,
        description="Pace a video file at its frame rate like a live camera (default: files as fast "
        "as processed).",
    )
    stall_timeout_s: float = Field(
        5.0, gt=0, le=600, description="No frame for this long = reopen the camera."
    )
    threshold: float | None = Field(
        None, description="Alarm threshold for this camera (default: the detector's, then the bundle's)."
    )
    whole_frame: bool = Field(
        False,
        description="Score all skeletons of a frame as one map (single-worker cells) instead of per person.",
    )
    zones: list[ZoneConfig] = Field(
        [],
        max_length=32,
        description="Named polygons where anomalies count ('include') or never count ('exclude'), each "
        "with its own threshold, dwell and schedule (README: zones). None: the whole image counts.",
    )

    _unique_zone_names = field_validator("zones")(unique_zone_names)


class TrackingConfig(Section):
    min_iou: float = Field(
        0.2, ge=0, lt=1, description="Least box overlap for a detection to continue a track."
    )
    max_missed_frames: int = Field(
        15, ge=0, le=1000, description="Frames a person may be unseen (occlusion) before the track is closed."
    )
    min_hits: int = Field(
        3, ge=1, le=300, description="Frames before a new track is scored (filters flickers)."
    )


class DetectorConfig(Section):
    threshold: float | None = Field(
        None, description="Alarm threshold for every camera, overriding calibration (default: calibrated)."
    )
    when_uncalibrated: Literal["suppress", "bundle_default"] = Field(
        "suppress",
        description="A camera without calibration for the active model: 'suppress' (score, publish status "
        "'uncalibrated', raise no events) or 'bundle_default' (alarm at the bundle's default threshold).",
    )
    start_windows: int = Field(
        5, ge=1, le=900, description="Consecutive windows above threshold that start an anomaly."
    )
    end_windows: int = Field(
        15, ge=1, le=3600, description="Consecutive windows below threshold that end it."
    )
    update_interval_s: float = Field(
        1.0, gt=0, le=3600, description="Least time between 'update' events of one anomaly."
    )
    evidence: Literal["off", "peak", "clip"] = Field(
        "clip",
        description="What skeletons events carry: 'clip' (the person's skeletons over evidence_frames "
        "frames on 'start' and 'end', a few kB; appliance render-event draws them), 'peak' (the peak "
        "frame's skeleton only) or 'off' (none). Never images.",
    )
    evidence_frames: int = Field(
        60,
        ge=1,
        le=600,
        description="Frames of skeletons in a clip: 60 at the starter's 10 fps is its 3 s window and 3 s "
        "before.",
    )


class StdoutSinkConfig(Section):
    type: Literal["stdout"] = "stdout"
    format: Literal["text", "json"] = Field("text", description="One readable line, or the JSON payload.")


class JsonlSinkConfig(Section):
    type: Literal["jsonl"] = "jsonl"
    path: Path = Field(description="JSON-lines file events are appended to (flushed per event).")


class MqttSinkConfig(BrokerLogin, OutboxBounds):
    type: Literal["mqtt"] = "mqtt"
    host: BrokerHost = Field("127.0.0.1", description="Broker host name or IPv4/IPv6 address.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port (8883 for TLS by convention).")
    protocol: Literal["3.1.1", "5"] = Field("3.1.1", description="MQTT protocol version.")
    topic_prefix: str = Field("appliance", description="First topic level(s): <prefix>/<appliance_id>/...")
    client_id: str | None = Field(
        None, description="MQTT client id, unique per appliance (default: appliance-<appliance_id>)."
    )
    qos: Literal[0, 1, 2] = Field(1, description="QoS of event messages (1 = at least once).")
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keepalive.")
    tls: MqttTlsConfig | None = Field(None, description="TLS settings; absent = plain TCP.")
    status_interval_s: float = Field(
        30.0, gt=0, le=3600, description="Seconds between retained status messages."
    )
    commands: bool = Field(
        False,
        description="Accept commands on <prefix>/<appliance_id>/cmd/<name> (recalibrate, reload, status), "
        "answered on .../cmd/<name>/response; restrict who may publish there with the broker's ACLs.",
    )
    command_secret_file: Path | None = Field(
        None,
        description="File holding a shared secret (16+ characters, first line); when set, recalibrate and "
        "reload must carry an HMAC-SHA256 signature, a timestamp and a nonce (docs/mqtt.md, Commands).",
    )
    commands_max_bytes: int = Field(
        4096, ge=256, le=1_048_576, description="Larger command payloads are refused unread."
    )
    commands_per_minute: float = Field(
        30.0, gt=0, le=6000, description="Commands accepted per minute (bursts of 10); the rest are dropped."
    )
    command_max_age_s: float = Field(
        60.0, gt=0, le=3600, description="A signed command older (or newer) than this is refused as a replay."
    )
    telemetry_interval_s: float | None = Field(
        None,
        gt=0,
        le=3600,
        description="Publish each camera's peak window scores this often (QoS 0); None = off.",
    )
    reconnect_max_s: float = Field(
        30.0, gt=0, le=3600, description="Longest wait between reconnection attempts."
    )


SinkConfig = Annotated[
    StdoutSinkConfig | JsonlSinkConfig | MqttSinkConfig | SparkplugSinkConfig, Field(discriminator="type")
]


class ApplianceConfig(Section):
    schema_version: Literal[1] = Field(description="Configuration schema version; this appliance reads 1.")
    appliance_id: TopicLevel = Field(description="Unique name of this appliance (MQTT topic level).")
    state_dir: Path = Field(
        Path("/var/lib/appliance"), description="Where the appliance keeps its state (outbox, thresholds)."
    )
    model: ModelConfig
    pose: PoseConfig = Field(default_factory=BlazePoseConfig, description="Pose backend, chosen by 'type'.")
    cameras: list[CameraConfig] = Field(min_length=1, description="Cameras this appliance watches.")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    sinks: list[SinkConfig] = Field(
        default_factory=lambda: [StdoutSinkConfig()], description="Where events go (stdout, jsonl, mqtt)."
    )
    web: WebConfig = Field(default_factory=WebConfig, description="The local web console and /metrics.")

    @model_validator(mode="after")
    def _replay_needs_replay_source(self) -> ApplianceConfig:
        replay = isinstance(self.pose, KeypointsPoseConfig)
        for cam in self.cameras:
            if replay != (cam.source == "replay"):
                raise ValueError(
                    "pose type 'keypoints' replays a file and needs every camera's source to be 'replay'; "
                    "'replay' is only valid with pose type 'keypoints'"
                )
        if replay and len(self.cameras) != 1:
            raise ValueError("a keypoint replay feeds exactly one camera")
        return self

    @field_validator("cameras")
    @classmethod
    def _unique_camera_ids(cls, v: list[CameraConfig]) -> list[CameraConfig]:
        ids = [c.id for c in v]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"camera ids must be unique; repeated: {', '.join(dup)}")
        return v
