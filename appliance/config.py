"""The appliance's YAML configuration: validated at start, every field described, unknown keys refused.

A mistake is reported as ``FILE:LINE: key.path: what is wrong`` so a technician can fix it without
reading code. Secrets never need to sit in the file: ``password_file`` (e.g. a systemd credential
under ``$CREDENTIALS_DIRECTORY``) or ``${ENV_NAME}`` in any string value.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import annotated_types
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from appliance.errors import ApplianceError
from appliance.publish.sparkplug.config import SparkplugSinkConfig
from appliance.redact import redact
from appliance.service.credentials import resolve_password

CONFIG_SCHEMA_VERSION = 1


class ConfigError(ApplianceError):
    """The configuration cannot be used; the message names the file, line and key."""

    exit_code = 2


def _topic_level(v: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", v):
        raise ValueError("use 1-64 letters, digits, '-' or '_' (it becomes an MQTT topic level)")
    return v


TopicLevel = Annotated[str, AfterValidator(_topic_level)]
PixelSize = Annotated[int, Field(ge=32, le=8192)]


class _Section(BaseModel):
    # inf and nan are refused everywhere: a threshold or interval of inf makes alarms impossible
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


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
        le=1000,
        description="Frames between detector runs that look for new people while others are tracked.",
    )
    small_people: Literal["off", "motion", "tiles"] = Field(
        "motion",
        description="Find people too small for the face-based detector (elevated cameras): 'motion' "
        "(moving blobs; cheap), 'tiles' (detector on zoomed tiles; slow, finds still people) or 'off'.",
    )
    proposal_interval: int = Field(
        5, ge=1, le=1000, description="Frames between small-people proposal passes."
    )
    refine_landmarks: bool = Field(True, description="Refine joints with the landmark model's heatmap.")


class OnnxPoseConfig(_Section):
    type: Literal["onnx"] = "onnx"
    model: Path = Field(description="A COCO-17 keypoint model in ONNX (see README: pose backends).")
    input_size: tuple[PixelSize, PixelSize] = Field(
        (640, 640), description="Model input width, height in pixels."
    )
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


class TrackingConfig(_Section):
    min_iou: float = Field(
        0.2, ge=0, lt=1, description="Least box overlap for a detection to continue a track."
    )
    max_missed_frames: int = Field(
        15, ge=0, le=1000, description="Frames a person may be unseen (occlusion) before the track is closed."
    )
    min_hits: int = Field(
        3, ge=1, le=300, description="Frames before a new track is scored (filters flickers)."
    )


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
        5, ge=1, le=900, description="Consecutive windows above threshold that start an anomaly."
    )
    end_windows: int = Field(
        15, ge=1, le=3600, description="Consecutive windows below threshold that end it."
    )
    update_interval_s: float = Field(
        1.0, gt=0, le=3600, description="Least time between 'update' events of one anomaly."
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


class MqttSinkConfig(_Section):
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
    username: str | None = Field(None, description="Broker user name.")
    password: str | None = Field(None, description="Broker password (prefer password_file or ${ENV}).")
    password_file: Path | None = Field(
        None, description="File holding the broker password (e.g. ${CREDENTIALS_DIRECTORY}/mqtt-password)."
    )
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

MAX_CONFIG_BYTES = 1 << 20  #: a configuration file is a few kB; refuse anything near this
MAX_CONFIG_VALUES = 10_000  #: YAML nodes after alias expansion (a 16-camera config has ~400)
MAX_CONFIG_DEPTH = 32  #: nesting of mappings and lists (the schema needs 5)
CREDENTIALS_HINT = (
    " (systemd sets it for the unit's LoadCredential= entries: start the appliance with systemctl, or "
    "export CREDENTIALS_DIRECTORY=<folder holding the credential files> to run it by hand)"
)


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


def _expand_env(
    value: Any, loc: tuple[Any, ...], where: str, located: _Located, env: Mapping[str, str]
) -> Any:
    if isinstance(value, dict):
        return {k: _expand_env(v, (*loc, k), where, located, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, (*loc, i), where, located, env) for i, v in enumerate(value)]
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in env:
                line = located.line_of(loc)
                hint = CREDENTIALS_HINT if name == "CREDENTIALS_DIRECTORY" else ""
                raise ConfigError(
                    f"{where}:{line}: {_loc_text(loc)}: environment variable {name} is not set{hint}"
                )
            return env[name]

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


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing nesting deeper than :data:`MAX_CONFIG_DEPTH` as it composes."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_CONFIG_DEPTH:
                raise yaml.YAMLError(f"nested deeper than {MAX_CONFIG_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _compose(text: str, source: str) -> tuple[yaml.Node | None, Any]:
    """The YAML node graph and the data built from it, refused when aliases would blow it up."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{source}: {len(text)} characters; a configuration is at most {MAX_CONFIG_BYTES}")
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        _check_expansion(node, source)
        return node, loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or _mark_of(loader)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{source}{line}: not valid YAML: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{source}: not valid YAML: nested too deeply") from None
    finally:
        loader.dispose()


def _mark_of(loader: yaml.SafeLoader) -> yaml.Mark | None:
    """Where the loader stands (for errors raised by :class:`_BoundedLoader` itself)."""
    try:
        return loader.peek_event().start_mark
    except yaml.YAMLError:
        return None


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_expansion(root: yaml.Node, source: str) -> None:
    """Refuse a document whose aliases (``*name``) expand it past :data:`MAX_CONFIG_VALUES` values.

    PyYAML shares an anchored node between its aliases, so nine lines can stand for 10^9 values that
    every later walk (environment expansion, validation) would visit one by one: 52 s of CPU and
    1.2 GB for the classic alias bomb. The expanded size is counted per distinct node, without
    expanding anything; a node that contains itself through an alias is refused too.
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            line = node.start_mark.line + 1
            raise ConfigError(f"{source}:{line}: a YAML alias refers to the node that contains it (a cycle)")
        open_nodes.add(key)
        total = 1
        for child in _children(node):
            total += size(child)
            if total > MAX_CONFIG_VALUES:
                break  # enough to refuse; stops the count from costing what the expansion would
        open_nodes.discard(key)
        sizes[key] = total
        return total

    if size(root) <= MAX_CONFIG_VALUES:
        return
    node = root  # name the smallest part that is still too big: where the alias use explodes
    while True:
        big = [c for c in _children(node) if sizes.get(id(c), 0) > MAX_CONFIG_VALUES]
        if not big:
            break
        node = big[0]
    raise ConfigError(
        f"{source}:{node.start_mark.line + 1}: YAML aliases (*name) expand the configuration past "
        f"{MAX_CONFIG_VALUES} values; write the settings out instead"
    )


_TAGGED: dict[str, type[BaseModel]] = {
    "blazepose": BlazePoseConfig,
    "onnx": OnnxPoseConfig,
    "keypoints": KeypointsPoseConfig,
    "stdout": StdoutSinkConfig,
    "jsonl": JsonlSinkConfig,
    "mqtt": MqttSinkConfig,
    "sparkplug": SparkplugSinkConfig,
}


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The one settings section an annotation holds (``X``, ``X | None``, ``list[X]``), else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    found = {m for arg in get_args(annotation) if (m := _model_in(arg)) is not None}
    return found.pop() if len(found) == 1 else None


def _constraints(raw_loc: tuple[Any, ...]) -> list[Any]:
    """The ge/gt/le/lt metadata of the field a validation error points at (raw pydantic location)."""
    model: type[BaseModel] | None = ApplianceConfig
    annotation: Any = None
    metadata: list[Any] = []
    for part in raw_loc:
        if isinstance(part, str) and model is not None and part in model.model_fields:
            info = model.model_fields[part]
            annotation, metadata = info.annotation, list(info.metadata)
            model = _model_in(annotation)
        elif isinstance(part, str) and part in _TAGGED:
            model = _TAGGED[part]
        elif isinstance(part, int) and get_origin(annotation) is tuple and part < len(get_args(annotation)):
            annotation = get_args(annotation)[part]
            extra = getattr(annotation, "__metadata__", ())
            metadata = [m for f in extra for m in getattr(f, "metadata", [f])]
        elif not isinstance(part, int):
            break
    return metadata


def _range_text(raw_loc: tuple[Any, ...]) -> str:
    """``from 1 to 900``, ``more than 0 and at most 3600``, ``at least 1``..., or "" without bounds."""
    lo = hi = None
    lo_open = hi_open = False
    for m in _constraints(raw_loc):
        if isinstance(m, annotated_types.Ge | annotated_types.Gt):
            lo, lo_open = (m.ge, False) if isinstance(m, annotated_types.Ge) else (m.gt, True)
        elif isinstance(m, annotated_types.Le | annotated_types.Lt):
            hi, hi_open = (m.le, False) if isinstance(m, annotated_types.Le) else (m.lt, True)
    lower = None if lo is None else (f"more than {lo:g}" if lo_open else f"at least {lo:g}")
    upper = None if hi is None else (f"less than {hi:g}" if hi_open else f"at most {hi:g}")
    if lower and upper:
        return f"from {lo:g} to {hi:g}" if not (lo_open or hi_open) else f"{lower} and {upper}"
    return lower or upper or ""


def _range_message(err: Any) -> str | None:
    """A numeric error restated with the whole allowed range and the value given."""
    kind = err["type"]
    allowed = _range_text(tuple(err["loc"]))
    value = err.get("input")
    got = f"{value:g}" if isinstance(value, int | float) and not isinstance(value, bool) else str(value)[:40]
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal") and allowed:
        return f"out of range: must be {allowed} (got {got})"
    if kind == "finite_number":
        return f"must be a finite number{' ' + allowed if allowed else ''} (got {got})"
    if allowed and kind.startswith(("int_", "float_")):  # '1e20' or 1.5 for a whole number
        return f"{err['msg']} (got {got}); allowed: {allowed}"
    return None


def parse_config(
    text: str,
    source: str = "<config>",
    base_dir: Path | None = None,
    env_defaults: Mapping[str, str] | None = None,
) -> ApplianceConfig:
    """Validate YAML text; relative paths resolve against ``base_dir`` (the config file's folder).

    ``${NAME}`` in string values expands from the environment, else from ``env_defaults`` (how
    ``check-config`` stands in for systemd's ``CREDENTIALS_DIRECTORY`` outside the unit).
    """
    node, data = _compose(text, source)
    if not isinstance(data, dict) or node is None:
        raise ConfigError(f"{source}: expected a mapping of settings (schema_version, appliance_id, ...)")
    located = _Located(node)
    data = _expand_env(data, (), source, located, {**(env_defaults or {}), **os.environ})
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
            else:
                msg = _range_message(err) or msg
            lines.append(redact(f"{source}:{located.line_of(loc)}: {_loc_text(loc)}: {msg}"))
        raise ConfigError("\n".join(lines)) from None
    return _resolve_paths(config, base_dir) if base_dir is not None else config


def _resolve_paths(config: ApplianceConfig, base: Path) -> ApplianceConfig:
    def fix(p: Path | None) -> Path | None:
        return None if p is None or p.is_absolute() else base / p

    def fix_model(m: BaseModel) -> BaseModel:
        updates: dict[str, Any] = {}
        for name in type(m).model_fields:
            value = getattr(m, name)
            if isinstance(value, Path):
                updates[name] = fix(value)
            elif isinstance(value, BaseModel):  # nested sections (mqtt tls: ca_file, cert_file, ...)
                updates[name] = fix_model(value)
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


def key_locator(path: str | Path) -> Callable[[tuple[Any, ...]], str]:
    """``where(("cameras", 0, "source"))`` -> ``FILE:LINE: cameras[0].source`` for a file that loads."""
    try:
        node, _ = _compose(Path(path).read_text(encoding="utf-8"), str(path))
    except (OSError, UnicodeDecodeError, ConfigError):
        node = None
    located = _Located(node) if node is not None else None

    def where(loc: tuple[Any, ...]) -> str:
        line = f":{located.line_of(loc)}" if located is not None else ""
        return f"{path}{line}: {_loc_text(loc)}"

    return where


def load_config(path: str | Path, env_defaults: Mapping[str, str] | None = None) -> ApplianceConfig:
    """Read and validate a config file (see :func:`parse_config`); at most 1 MiB."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes; not a configuration file")
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc})") from None
    return parse_config(text, str(path), path.resolve().parent, env_defaults)
