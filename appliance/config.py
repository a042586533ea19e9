"""The appliance's YAML configuration: validated at start, every field described, unknown keys refused.

A mistake is reported as ``FILE:LINE: key.path: what is wrong`` so a technician can fix it without
reading code. Secrets never need to sit in the file: ``password_file`` (e.g. a systemd credential
under ``$CREDENTIALS_DIRECTORY``) or ``${ENV_NAME}`` in any string value.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from appliance.credentials import resolve_password
from appliance.errors import ApplianceError
from appliance.sparkplug.config import SparkplugSinkConfig

CONFIG_SCHEMA_VERSION = 1


class ConfigError(ApplianceError):
    """The configuration cannot be used; the message names the file, line and key."""

    exit_code = 2


def _topic_level(v: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", v):
        raise ValueError("use 1-64 letters, digits, '-' or '_' (it becomes an MQTT topic level)")
    return v


TopicLevel = Annotated[str, AfterValidator(_topic_level)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(_Section):
    bundle: Path = Field(description="Model bundle to score with: a bundle directory or its .tar.")
    runtime: Literal["onnxruntime", "tflite"] = Field(
        "onnxruntime", description="Inference runtime for the scorer graphs."
    )
    variant: str | None = Field(
        None, description="Bundle variant (e.g. onnx-int8); default: the int8 variant for the runtime."
    )
    threads: int = Field(1, ge=1, le=16, description="Inference threads of the scorer.")
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
        description="After a model switch, a scoring error within this many seconds rolls back to the "
        "previous version.",
    )
    watch_inbox: bool = Field(
        True,
        description="Install bundles (.tar) dropped into <state_dir>/inbox (a USB automount or a share).",
    )


class BlazePoseConfig(_Section):
    type: Literal["blazepose"] = "blazepose"
    model_dir: Path | None = Field(
        None, description="Folder with the BlazePose .tflite files (default: installed with the package)."
    )
    threads: int = Field(1, ge=1, le=16, description="LiteRT threads for the pose models.")
    min_detection_score: float = Field(0.5, gt=0, lt=1, description="Person detector score threshold.")
    min_presence: float = Field(
        0.5, gt=0, lt=1, description="Landmark presence below which a person is lost."
    )
    max_people: int = Field(4, ge=1, le=32, description="Most people followed per frame.")
    detect_interval: int = Field(
        10,
        ge=1,
        description="Frames between detector runs that look for new people while others are tracked.",
    )
    small_people: Literal["off", "motion", "tiles"] = Field(
        "motion",
        description="Find people too small for the face-based detector (elevated cameras): 'motion' "
        "(moving blobs; cheap), 'tiles' (detector on zoomed tiles; slow, finds still people) or 'off'.",
    )
    proposal_interval: int = Field(5, ge=1, description="Frames between small-people proposal passes.")
    refine_landmarks: bool = Field(True, description="Refine joints with the landmark model's heatmap.")


class OnnxPoseConfig(_Section):
    type: Literal["onnx"] = "onnx"
    model: Path = Field(description="A COCO-17 keypoint model in ONNX (see README: pose backends).")
    input_size: tuple[int, int] = Field((640, 640), description="Model input width, height in pixels.")
    min_score: float = Field(0.4, gt=0, lt=1, description="Person score threshold.")
    threads: int = Field(1, ge=1, le=16, description="onnxruntime threads.")
    max_people: int = Field(16, ge=1, le=64, description="Most people kept per frame (highest scores).")


class KeypointsPoseConfig(_Section):
    type: Literal["keypoints"] = "keypoints"
    path: Path = Field(
        description="Keypoints to replay in frame order: OpenPose JSON folder, AlphaPose JSON or our CSV/NPZ."
    )
    layout: str | None = Field(None, description="Joint layout of a CSV/NPZ without a layout header.")
    consecutive: bool = Field(
        False,
        description="Play the file's sequences one after another (separate videos) instead of together.",
    )


PoseConfig = Annotated[BlazePoseConfig | OnnxPoseConfig | KeypointsPoseConfig, Field(discriminator="type")]


class CameraConfig(_Section):
    id: TopicLevel = Field(description="Camera id used in events and topics (letters, digits, '-', '_').")
    source: str | int = Field(
        description="Video file, rtsp:// or http:// URL, V4L2 device (0 or /dev/video0), or a "
        "GStreamer pipeline (contains '!')."
    )
    fps: float | None = Field(
        30.0, gt=0, le=120, description="Frames per second processed; None = source rate."
    )
    width: int | None = Field(None, gt=0, description="Frame width to request from a device (None = as is).")
    height: int | None = Field(None, gt=0, description="Frame height to request from a device.")
    loop: bool = Field(False, description="Restart a video file at its end (demos).")
    realtime: bool | None = Field(
        None,
        description="Pace a video file at its frame rate like a live camera (default: files as fast "
        "as processed).",
    )
    stall_timeout_s: float = Field(5.0, gt=0, description="No frame for this long = reopen the camera.")
    threshold: float | None = Field(
        None, description="Alarm threshold for this camera (default: the detector's, then the bundle's)."
    )
    whole_frame: bool = Field(
        False,
        description="Score all skeletons of a frame as one map (single-worker cells) instead of per person.",
    )


class TrackingConfig(_Section):
    min_iou: float = Field(
        0.2, ge=0, lt=1, description="Least box overlap for a detection to continue a track."
    )
    max_missed_frames: int = Field(
        15, ge=0, description="Frames a person may be unseen (occlusion) before the track is closed."
    )
    min_hits: int = Field(3, ge=1, description="Frames before a new track is scored (filters flickers).")


class DetectorConfig(_Section):
    threshold: float | None = Field(
        None, description="Alarm threshold for every camera, overriding calibration (default: calibrated)."
    )
    when_uncalibrated: Literal["suppress", "bundle_default"] = Field(
        "suppress",
        description="A camera without calibration for the active model: 'suppress' (score, publish status "
        "'uncalibrated', raise no events) or 'bundle_default' (alarm at the bundle's default threshold).",
    )
    start_windows: int = Field(
        5, ge=1, description="Consecutive windows above threshold that start an anomaly."
    )
    end_windows: int = Field(15, ge=1, description="Consecutive windows below threshold that end it.")
    update_interval_s: float = Field(
        1.0, gt=0, description="Least time between 'update' events of one anomaly."
    )


class StdoutSinkConfig(_Section):
    type: Literal["stdout"] = "stdout"
    format: Literal["text", "json"] = Field("text", description="One readable line, or the JSON payload.")


class JsonlSinkConfig(_Section):
    type: Literal["jsonl"] = "jsonl"
    path: Path = Field(description="JSON-lines file events are appended to (flushed per event).")


class MqttTlsConfig(_Section):
    ca_file: Path | None = Field(None, description="CA certificate(s) to trust (default: the system's).")
    cert_file: Path | None = Field(None, description="Client certificate (mutual TLS).")
    key_file: Path | None = Field(None, description="Client private key (if not inside cert_file).")
    insecure_skip_hostname_check: bool = Field(
        False, description="Accept a certificate for another host name (test benches only)."
    )


class MqttSinkConfig(_Section):
    type: Literal["mqtt"] = "mqtt"
    host: str = Field("127.0.0.1", description="Broker host name or address.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port (8883 for TLS by convention).")
    protocol: Literal["3.1.1", "5"] = Field("3.1.1", description="MQTT protocol version.")
    topic_prefix: str = Field("appliance", description="First topic level(s): <prefix>/<appliance_id>/...")
    client_id: str | None = Field(
        None, description="MQTT client id, unique per appliance (default: appliance-<appliance_id>)."
    )
    qos: Literal[0, 1, 2] = Field(1, description="QoS of event messages (1 = at least once).")
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keepalive.")
    username: str | None = Field(None, description="Broker user name.")
    password: str | None = Field(None, description="Broker password (prefer password_file or ${ENV}).")
    password_file: Path | None = Field(
        None, description="File holding the broker password (e.g. ${CREDENTIALS_DIRECTORY}/mqtt-password)."
    )
    tls: MqttTlsConfig | None = Field(None, description="TLS settings; absent = plain TCP.")
    status_interval_s: float = Field(30.0, gt=0, description="Seconds between retained status messages.")
    commands: bool = Field(
        False,
        description="Accept commands on <prefix>/<appliance_id>/cmd/<name> (recalibrate, reload, status), "
        "answered on .../cmd/<name>/response; restrict who may publish there with the broker's ACLs.",
    )
    telemetry_interval_s: float | None = Field(
        None, gt=0, description="Publish each camera's peak window scores this often (QoS 0); None = off."
    )
    reconnect_max_s: float = Field(30.0, gt=0, description="Longest wait between reconnection attempts.")
    outbox_max_messages: int = Field(
        100_000, ge=100, description="Events kept on disk while the broker is away (oldest updates go first)."
    )
    outbox_max_age_s: float = Field(
        7 * 86400,
        gt=0,
        description="Updates older than this leave the outbox (starts and ends never).",
    )

    @model_validator(mode="after")
    def _one_password_source(self) -> MqttSinkConfig:
        if self.password is not None and self.password_file is not None:
            raise ValueError("give password or password_file, not both")
        return self

    def resolve_password(self) -> str | None:
        return resolve_password(self.password, self.password_file, "mqtt")


SinkConfig = Annotated[
    StdoutSinkConfig | JsonlSinkConfig | MqttSinkConfig | SparkplugSinkConfig, Field(discriminator="type")
]


class ApplianceConfig(_Section):
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


# --- loading with line numbers -------------------------------------------------------------------

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class _Located:
    """YAML node tree kept beside the data so a validation error can name a line."""

    def __init__(self, node: yaml.Node) -> None:
        self.node = node

    def line_of(self, loc: tuple[Any, ...]) -> int:
        node = self.node
        line = node.start_mark.line + 1
        for key in loc:
            nxt = None
            if isinstance(node, yaml.MappingNode):
                for k, v in node.value:
                    if k.value == key:
                        line, nxt = k.start_mark.line + 1, v
                        break
            elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
                nxt = node.value[key]
                line = nxt.start_mark.line + 1
            if nxt is None:
                break
            node = nxt
        return line


def _expand_env(value: Any, loc: tuple[Any, ...], where: str, located: _Located) -> Any:
    if isinstance(value, dict):
        return {k: _expand_env(v, (*loc, k), where, located) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, (*loc, i), where, located) for i, v in enumerate(value)]
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in os.environ:
                line = located.line_of(loc)
                raise ConfigError(f"{where}:{line}: {_loc_text(loc)}: environment variable {name} is not set")
            return os.environ[name]

        return _ENV.sub(sub, value)
    return value


def _loc_text(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _clean_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    # Discriminated unions add the tag ('blazepose', 'mqtt', ...) as a location level: drop it.
    tags = {"blazepose", "onnx", "keypoints", "stdout", "jsonl", "mqtt", "sparkplug"}
    return tuple(p for i, p in enumerate(loc) if not (isinstance(p, str) and p in tags and i > 0))


def parse_config(text: str, source: str = "<config>", base_dir: Path | None = None) -> ApplianceConfig:
    """Validate YAML text; relative paths resolve against ``base_dir`` (the config file's folder)."""
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{source}{line}: not valid YAML: {problem}") from None
    if not isinstance(data, dict) or node is None:
        raise ConfigError(f"{source}: expected a mapping of settings (schema_version, appliance_id, ...)")
    located = _Located(node)
    data = _expand_env(data, (), source, located)
    try:
        config = ApplianceConfig.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = _clean_loc(tuple(err["loc"]))
            msg = err["msg"]
            if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
                loc = (*loc, "type")
                expected = err.get("ctx", {}).get("expected_tags", "")
                msg = f"unknown or missing type; one of: {expected}"
            elif err["type"] == "extra_forbidden":
                msg = "unknown key (misspelt, or not valid in this section)"
            elif err["type"] == "missing":
                msg = "required key is missing"
            elif err["type"] == "literal_error" and loc == ("schema_version",):
                msg = f"this appliance reads configuration schema version {CONFIG_SCHEMA_VERSION}"
            lines.append(f"{source}:{located.line_of(loc)}: {_loc_text(loc)}: {msg}")
        raise ConfigError("\n".join(lines)) from None
    return _resolve_paths(config, base_dir) if base_dir is not None else config


def _resolve_paths(config: ApplianceConfig, base: Path) -> ApplianceConfig:
    def fix(p: Path | None) -> Path | None:
        return None if p is None or p.is_absolute() else base / p

    def fix_model(m: BaseModel) -> BaseModel:
        updates = {
            name: fix(getattr(m, name))
            for name, info in type(m).model_fields.items()
            if isinstance(getattr(m, name), Path) and info.annotation is not None
        }
        return m.model_copy(update={k: v for k, v in updates.items() if v is not None})

    cameras = []
    for cam in config.cameras:
        src = cam.source
        if isinstance(src, str) and _looks_like_relative_file(src) and (base / src).exists():
            cam = cam.model_copy(update={"source": str(base / src)})
        cameras.append(cam)
    model = fix_model(config.model)
    if model.trusted_keys is None:
        model = model.model_copy(update={"trusted_keys": base / "trusted-keys"})
    return config.model_copy(
        update={
            "state_dir": fix(config.state_dir) or config.state_dir,
            "model": model,
            "pose": fix_model(config.pose),
            "sinks": [fix_model(s) for s in config.sinks],
            "cameras": cameras,
        }
    )


def _looks_like_relative_file(src: str) -> bool:
    return "://" not in src and "!" not in src and not src.startswith("/") and not src.isdigit()


def load_config(path: str | Path) -> ApplianceConfig:
    """Read and validate a config file (see :func:`parse_config`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc})") from None
    return parse_config(text, str(path), path.resolve().parent)
