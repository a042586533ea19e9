"""Anomaly event payloads: the one definition the sinks publish and the JSON Schema is generated from.

An anomaly of one tracked person (or of a whole frame) produces ``start``, rate-limited ``update``
and ``end`` messages that share one ``event_id``; subscribers de-duplicate on (event_id, type, seq).
Payloads carry skeletons, scores and metadata, never pixels.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

EVENT_SCHEMA_VERSION = 1


def iso_utc(epoch_s: float) -> str:
    """ISO-8601 UTC with milliseconds, e.g. 2026-11-25T08:00:00.123Z."""
    return (
        datetime.fromtimestamp(epoch_s, tz=timezone.utc)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


class Skeleton(BaseModel):
    """Keypoints of one person in one frame, in image pixels."""

    model_config = ConfigDict(extra="forbid")

    layout: str = Field(description="Joint layout (coco17, blazepose33, body25, urfd13).")
    image_size: tuple[int, int] = Field(description="Width and height of the frame the pixels refer to.")
    frame_index: int = Field(description="Camera frame counter of this skeleton.")
    points: list[tuple[float, float, float]] = Field(
        description="Per joint in layout order: x, y (pixels), confidence (0 = not seen)."
    )


class ModelRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    version: str


class Evidence(BaseModel):
    """The skeletons behind an anomaly: the person's body-graph joints over the frames before and
    during the window that raised it (or ended it), compact (``appliance/alarms/evidence.py``).
    Keypoints only: no image ever leaves the device."""

    model_config = ConfigDict(extra="forbid")

    graph: Literal["body15"] = Field(
        "body15",
        description="Joint order: nose, neck, shoulder/elbow/wrist (right, left), mid-hip, hip/knee/ankle.",
    )
    image_size: tuple[int, int] = Field(description="Width and height of the frames the pixels refer to.")
    frames: int = Field(description="Frames in the clip.")
    t0_ms: int = Field(description="Epoch milliseconds of the first frame.")
    times_ms: list[int] = Field(description="Each frame's time after the first, in milliseconds.")
    points: str = Field(
        description="base64 of zlib-compressed little-endian uint16 (frames, 15, 2): x, y in quarter pixels."
    )
    confidence: str = Field(description="base64 of zlib-compressed uint8 (frames, 15): confidence x 255.")


class AnomalyEvent(BaseModel):
    """One message about one anomaly."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = EVENT_SCHEMA_VERSION
    type: Literal["start", "update", "end"] = Field(description="Phase of the anomaly.")
    event_id: str = Field(description="Stable id shared by the start, updates and end of one anomaly.")
    seq: int = Field(ge=0, description="Message number within the event (start = 0).")
    appliance_id: str
    camera_id: str
    track_id: int = Field(description="Person track within the camera (-1 = whole frame).")
    time: str = Field(description="When this message's window ended, ISO-8601 UTC.")
    time_ms: int = Field(description="Same instant, epoch milliseconds.")
    started_at: str = Field(description="When the anomaly started (its first window above threshold ended).")
    started_at_ms: int
    ended_at: str | None = Field(None, description="Set on 'end'.")
    ended_at_ms: int | None = None
    end_reason: (
        Literal[
            "below_threshold",
            "track_lost",
            "stream_ended",
            "camera_lost",
            "shutdown",
            "model_changed",
            "restart",
            "left_zone",
        ]
        | None
    ) = Field(
        None,
        description="Why an 'end' ended: back below threshold, person lost, stream or camera gone (or its "
        "processing restarted), stop, a new model version took over (its scores are not comparable), "
        "restart: the appliance was killed while the anomaly was open (power cut, kill -9, watchdog) and "
        "ended it when it started again, or left_zone: the person left the zone the anomaly was raised "
        "in (or the zone went out of service).",
    )
    zone: str | None = Field(
        None,
        description="The camera zone whose rule raised this anomaly (absent: the camera has no include "
        "zones and the whole image counts).",
    )
    zones: list[str] | None = Field(
        None, description="Every zone the person's feet were in at this window (absent: none)."
    )
    score: float = Field(
        description="Score of the latest window, higher is more anomalous; its definition is the bundle "
        "manifest's score section (a z-score on normal windows for the default fused model, "
        "reconstruction error in nats per frame for the LSTM-VAE)."
    )
    peak_score: float = Field(description="Highest window score of this anomaly so far.")
    threshold: float = Field(description="Threshold in force for this camera (or its zone).")
    frames_above: int = Field(description="Windows above threshold in this anomaly so far.")
    model: ModelRef
    peak_skeleton: Skeleton | None = Field(None, description="Skeleton of the frame with the peak score.")
    evidence: Evidence | None = Field(
        None,
        description="On 'start' and 'end' with detector.evidence 'clip' (the default): the person's "
        "skeletons over the frames before and during the window (appliance render-event draws them).",
    )

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=True)


class CameraStatus(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state: Literal[
        "starting", "streaming", "reconnecting", "restarting", "stalled", "failed", "ended", "stopped"
    ] = Field(
        description="What the camera is doing: starting (first connection), streaming (watching), "
        "reconnecting (source lost or not up yet, retried with backoff), restarting (its processing "
        "crashed and is being restarted), stalled (its processing hangs in one call; the service "
        "watchdog will restart the appliance), failed (crashed repeatedly or gave up; still retried "
        "slowly), ended (a file source reached its end), stopped. Only streaming means watching."
    )
    error: str | None = Field(
        None, description="Why the camera is not streaming, in words (None while streaming)."
    )
    restarts: int = Field(0, description="Times its processing loop crashed and was restarted since start.")
    fps: float = Field(
        description="Frames processed per second over the last few seconds (0 unless streaming)."
    )
    frames: int = Field(description="Frames processed since start.")
    pose_carried: int = Field(
        0, description="People whose joints were carried from the frame before because they stood still."
    )
    pose_shed: int = Field(
        0, description="People whose joints were carried because the frame was over pose.frame_budget_ms."
    )
    tracks: int = Field(description="People tracked now.")
    windows: int = Field(description="Windows scored since start.")
    events: int = Field(description="Event messages emitted since start.")
    active_anomalies: int = Field(description="Anomalies open now.")
    threshold: float | None = Field(description="Alarm threshold in force (None: uncalibrated, no events).")
    threshold_source: Literal["camera", "detector", "site_model", "calibration", "bundle", "uncalibrated"] = (
        Field(
            description="Where the threshold comes from: the config (camera, detector), the camera's site "
            "model (`appliance learn`), on-site calibration, the bundle's default, or none yet (events "
            "suppressed until calibrated)."
        )
    )
    model_fps: float | None = Field(
        None,
        description="The frame rate the camera is scored at: the model's learning rate (its time base; "
        "frames in between are dropped before pose). None: the bundle does not record one, every frame "
        "is scored.",
    )
    rate_warning: str | None = Field(
        None, description="A live camera delivering fewer frames per second than its model needs, in words."
    )
    site_model: str | None = Field(
        None,
        description="The camera's own site model id (`appliance learn`) it scores with; None: the bundle.",
    )
    site_model_problem: str | None = Field(
        None,
        description="Why the camera's site model is not used (it does not fit the running base bundle, or "
        "is damaged): the camera runs the bundle, uncalibrated until `appliance learn` runs again.",
    )


class OutboxStatus(BaseModel):
    model_config = ConfigDict(extra="forbid")

    depth: int = Field(description="Events stored, not yet acknowledged by the broker.")
    oldest_age_s: float = Field(description="Age of the oldest stored event.")
    dropped: int = Field(
        description="Messages dropped because the outbox was full or too old, since its file was created "
        "(kept across restarts)."
    )
    dropped_by_kind: dict[str, int] = Field(
        default_factory=dict, description="The same by message kind (update, start, end, response)."
    )
    dropped_by_age: int = Field(0, description="Of them, updates older than outbox_max_age_s.")
    bytes: int | None = Field(
        None, description="Space the stored messages count against the bound (topic, payload, row overhead)."
    )
    max_bytes: int | None = Field(None, description="The bound (outbox_max_bytes).")


class LinkStatus(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state: Literal["connecting", "connected", "error", "stopped"] = Field(
        description="The MQTT link: connecting (first attempt), connected, error (the last attempt failed "
        "or the connection was lost; retried with backoff), stopped."
    )
    since: str = Field(description="When it entered this state, ISO-8601 UTC.")
    broker: str = Field(description="host:port of the broker.")
    reconnects: int = Field(description="Connections made again after the first since start.")
    failed_attempts: int = Field(description="Connection attempts failed since the last successful one.")
    last_error: str | None = Field(
        None, description="The latest link problem in words (kept after reconnecting)."
    )
    last_error_at: str | None = Field(None, description="When it happened, ISO-8601 UTC.")


class Signer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key_id: str = Field(description="First 16 hex digits of the SHA-256 of the Ed25519 public key.")
    name: str = Field(description="Name of the trusted key file that verified the signature.")


class ModelUpdate(BaseModel):
    """The latest model install, refusal or rollback (from the appliance's update log)."""

    model_config = ConfigDict(extra="ignore")

    time: str = Field(description="When it happened, ISO-8601 UTC.")
    action: Literal["install", "rollback", "auto_rollback", "load"] = Field(
        description="install (appliance update or the inbox), rollback (by a technician), auto_rollback "
        "(the new model failed to load or to score), load (the daemon switching models)."
    )
    result: Literal["ok", "refused", "failed"]
    version: str | None = Field(
        None, description="Installed version id, or 'factory' (the configured bundle)."
    )
    model: ModelRef | None = None
    signer: Signer | None = Field(None, description="Who signed the bundle (None: unsigned).")
    source: str | None = Field(None, description="The file or folder installed from.")
    message: str | None = Field(None, description="Why it was refused or rolled back.")


class SiteModelInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="Site model id (per camera), as `appliance models` lists it.")
    learned_at: str = Field(description="When `appliance learn` made it, ISO-8601 UTC.")
    footage_minutes: float = Field(description="Minutes of the camera's own footage it was learned from.")
    base: str = Field(description="The base bundle it extends: name and version.")


class ActiveModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version_id: str = Field(
        description="Installed version id, or 'factory' (the bundle in the configuration)."
    )
    signer: Signer | None = Field(
        None, description="Verified signer (None: unsigned or not signed by a trusted key)."
    )
    allow_unsigned: bool = Field(description="Development setting: unsigned bundles are accepted.")
    variant: str = Field(description="Bundle variant in use, e.g. onnx-int8.")
    site_models: dict[str, SiteModelInfo] = Field(
        default_factory=dict,
        description="Per camera, the site model learned on the device on top of this bundle (if any).",
    )


class ConsoleStatus(BaseModel):
    """The local web console (``web.enabled``)."""

    model_config = ConfigDict(extra="forbid")

    state: Literal["starting", "serving", "not_started"]
    address: str | None = Field(None, description="Where it serves, e.g. https://10.0.0.5:8080/.")
    error: str | None = Field(None, description="Why it is not serving (the appliance watches on).")


class ApplianceStatus(BaseModel):
    """Retained status message: everything a SCADA screen shows about the appliance."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = EVENT_SCHEMA_VERSION
    appliance_id: str
    version: str = Field(description="Appliance software version.")
    time: str = Field(description="When this status was made, ISO-8601 UTC.")
    uptime_s: float
    model: ModelRef
    model_install: ActiveModel | None = Field(None, description="Where the running model came from.")
    last_model_update: ModelUpdate | None = Field(
        None, description="The latest model install, refusal or rollback on this appliance."
    )
    runtime: str = Field(description="Scorer runtime and bundle variant, e.g. 'onnxruntime onnx-int8'.")
    cameras: dict[str, CameraStatus]
    outbox: OutboxStatus | None = Field(None, description="Store-and-forward state (MQTT link).")
    link: LinkStatus | None = Field(None, description="Connection state of the MQTT link.")
    console: ConsoleStatus | None = Field(None, description="The web console, when it is enabled.")


class ScoreTelemetry(BaseModel):
    """Low-rate score telemetry of one camera: the highest window score of each track in the interval."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = EVENT_SCHEMA_VERSION
    appliance_id: str
    camera_id: str
    time: str = Field(description="End of the interval, ISO-8601 UTC.")
    time_ms: int
    interval_s: float
    threshold: float | None = Field(description="Threshold in force (None: uncalibrated).")
    tracks: dict[str, float] = Field(description="Track id -> highest window score in the interval.")
    max_score: float | None = Field(description="Highest of them (None: nobody was scored).")


CAMERA_POINT = "all"  # the alarm point of a camera without include zones
AlarmState = Literal[
    "normal",
    "active_unacknowledged",
    "active_acknowledged",
    "returned_unacknowledged",
    "shelved",
    "out_of_service",
]


class AlarmPointState(BaseModel):
    """The retained message of one alarm point (``<prefix>/<appliance>/<camera>/alarm/<point>``)."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    appliance_id: str
    camera_id: str
    point: str = Field(description=f"The zone, or {CAMERA_POINT!r} for a camera without include zones.")
    state: AlarmState
    since: str = Field(description="When the point entered this state (ISO-8601 UTC).")
    active_anomalies: int = Field(description="Track anomalies open now.")
    anomalies: int = Field(description="Anomalies since the point was last normal (0 when normal).")
    peak_score: float | None = Field(None, description="Highest score since the point was last normal.")
    tracks: list[int] = Field([], description="Tracks with an anomaly since the point was last normal.")
    acknowledged_by: str | None = None
    acknowledged_at: str | None = None
    comment: str | None = Field(None, description="The last operator comment on this point.")
    shelved_until: str | None = Field(None, description="When the shelf ends by itself (shelved only).")
    shelved_by: str | None = None
    out_of_service: str | None = Field(None, description="Why the point is out of service, in words.")
    time: str = Field(description="When this message was made.")


SCHEMAS = {
    "event": AnomalyEvent,
    "status": ApplianceStatus,
    "telemetry": ScoreTelemetry,
    "alarm": AlarmPointState,
}


def json_schemas() -> dict[str, dict]:
    """JSON Schemas of the published payloads, generated from the models the code publishes with."""
    out = {}
    for name, model in SCHEMAS.items():
        schema = model.model_json_schema()
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://ceiling-appliance.invalid/schemas/{name}.schema.json"
        out[name] = schema
    return out
