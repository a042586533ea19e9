"""What every settings section shares: the base section (unknown keys, inf and nan refused), the
small field types, and where a stage's models may run (the ``accelerator`` fields)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from appliance.accelerators import Accelerator


def _topic_level(v: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", v):
        raise ValueError("use 1-64 letters, digits, '-' or '_' (it becomes an MQTT topic level)")
    return v


TopicLevel = Annotated[str, AfterValidator(_topic_level)]
PixelSize = Annotated[int, Field(ge=32, le=8192)]


class Section(BaseModel):
    # inf and nan are refused everywhere: a threshold or interval of inf makes alarms impossible
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


AcceleratorKind = Literal["cpu", "cuda", "tensorrt", "litert-gpu"]
ACCELERATOR_HELP = (
    "Where these models run: 'cpu'; 'cuda' or 'tensorrt' (onnxruntime's execution providers: needs "
    "runtime onnxruntime (or auto) and the onnxruntime-gpu wheel, or NVIDIA's build on a Jetson); "
    "'litert-gpu' (needs runtime tflite (or auto) and gpu_delegate). An accelerator that is not "
    "there is no error: the models run on the CPU and the log says why (README: accelerators)."
)


def accelerator_fits_runtime(kind: str, info: ValidationInfo) -> str:
    """An accelerator the section's ``runtime`` can use (both declared before ``accelerator``)."""
    runtime, gpu_delegate = info.data.get("runtime"), info.data.get("gpu_delegate")
    if kind in ("cuda", "tensorrt") and runtime not in ("onnxruntime", "auto"):
        raise ValueError(f"accelerator {kind!r} runs onnxruntime graphs: set runtime: onnxruntime")
    if kind == "litert-gpu" and runtime not in ("tflite", "auto"):
        raise ValueError("accelerator 'litert-gpu' runs LiteRT graphs: set runtime: tflite")
    if kind == "litert-gpu" and gpu_delegate is None:
        raise ValueError(
            "accelerator 'litert-gpu' needs gpu_delegate: the path of the LiteRT GPU delegate library"
        )
    return kind


class PlacedSection(Section):
    """A section whose models run somewhere: it declares ``runtime``, then ``gpu_delegate``, then
    ``accelerator`` (in that order, so the accelerator is checked against the other two)."""

    @field_validator("accelerator", check_fields=False)
    @classmethod
    def _accelerator_for_runtime(cls, v: str, info: ValidationInfo) -> str:
        return accelerator_fits_runtime(v, info)

    def placement(self) -> Accelerator:
        """Where this section's models should run."""
        return Accelerator(self.accelerator, self.gpu_delegate)  # type: ignore[attr-defined]
