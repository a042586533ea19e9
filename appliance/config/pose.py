"""The ``pose`` section: the pose backend, chosen by ``type`` (BlazePose, a user's ONNX keypoint
model, or a keypoint file replayed)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator

from appliance.config.sections import (
    ACCELERATOR_HELP,
    AcceleratorKind,
    PixelSize,
    PlacedSection,
    Section,
)


class BlazePoseConfig(PlacedSection):
    type: Literal["blazepose"] = "blazepose"
    model_dir: Path | None = Field(
        None, description="Folder with the BlazePose .tflite files (default: installed with the package)."
    )
    threads: int = Field(
        2,
        ge=1,
        le=16,
        description="LiteRT threads for each copy of the pose models (2 halves pose latency on a 2-core "
        "box at about the same CPU; README: one pose engine).",
    )
    model_copies: int = Field(
        1,
        ge=1,
        le=16,
        description="Copies of the pose models that all cameras share, lent one frame at a time in "
        "turn. Each copy costs about 70 MB; with N copies, N cameras run pose at the same moment.",
    )
    min_detection_score: float = Field(0.5, gt=0, lt=1, description="Person detector score threshold.")
    min_presence: float = Field(
        0.5, gt=0, lt=1, description="Landmark presence below which a person is lost."
    )
    max_people: int = Field(
        8, ge=1, le=32, description="Most people followed per frame (each costs one landmark run)."
    )
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
    still_skip: int = Field(
        2,
        ge=0,
        le=10,
        description="Frames in a row a still person's joints may be carried forward instead of running "
        "the landmark model again (0: every person, every frame). A still worker then costs a third.",
    )
    still_change: float = Field(
        0.0075,
        ge=0,
        lt=1,
        description="Mean grey change of a person's crop (fraction of the grey range) under which the "
        "person counts as still (0.0075: about 2 grey levels; camera noise is under 1).",
    )
    frame_budget_ms: Annotated[float, Field(gt=0, le=10_000)] | Literal["auto"] | None = Field(
        None,
        description="Landmark time a frame may spend on the people already followed; over it, those "
        "whose crops changed least keep their last joints (at most 3 frames in a row) rather than the "
        "frame coming late or being dropped. The status counts them (pose_shed). 'auto': each "
        "camera's share of the pose engine, 60% of its model's frame period times model_copies / "
        "cameras (100 ms at 10 fps: 60 ms for one camera, 15 ms each for four); or milliseconds. "
        "Default: no budget. Carried joints stop and then jump, which motion features read as "
        "unusual: on the demo walkway 'auto' raised false alarms (README: a budget).",
    )

    @field_validator("frame_budget_ms", mode="before")
    @classmethod
    def _budget(cls, v: object) -> object:
        """One clear message for the three forms instead of one per form."""
        if v is None or v == "auto":
            return v
        try:
            ms = float(v)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            ms = float("nan")
        if not 0 < ms <= 10_000:
            raise ValueError(f"give milliseconds (more than 0, at most 10000), 'auto' or null, not {v!r}")
        return ms

    landmark_model: Literal["full", "lite"] = Field(
        "full",
        description="BlazePose landmark model: 'full' (the default) or 'lite' (about 1.5x faster per "
        "person, joints a few pixels less exact; README: pose models).",
    )
    runtime: Literal["tflite", "onnxruntime"] = Field(
        "tflite",
        description="Runtime of the landmark model: 'tflite' (LiteRT) or 'onnxruntime' (the model converted "
        "by `appliance-export pose-onnx`, for CUDA/TensorRT). The detector always runs on LiteRT.",
    )
    gpu_delegate: Path | None = Field(
        None, description="LiteRT GPU delegate library (libtensorflowlite_gpu_delegate.so) for 'litert-gpu'."
    )
    accelerator: AcceleratorKind = Field("cpu", description=ACCELERATOR_HELP)


class OnnxPoseConfig(Section):
    type: Literal["onnx"] = "onnx"
    model: Path = Field(description="A COCO-17 keypoint model in ONNX (see README: pose backends).")
    input_size: tuple[PixelSize, PixelSize] = Field(
        (640, 640), description="Model input width, height in pixels."
    )
    min_score: float = Field(0.4, gt=0, lt=1, description="Person score threshold.")
    threads: int = Field(1, ge=1, le=16, description="onnxruntime threads.")
    max_people: int = Field(16, ge=1, le=64, description="Most people kept per frame (highest scores).")


class KeypointsPoseConfig(Section):
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
