"""Calibrated thresholds on disk: one file per appliance, tagged with the model they belong to.

``<state_dir>/calibration/thresholds.json`` holds, per camera, the threshold learnt on site and how
(method, windows, minutes, target and expected alarms per hour). It names the model (name and
version) whose scores it was learnt on: a file for another model is ignored (the camera is then
uncalibrated), because a new model's scores have another scale. Writes are atomic (temporary file
in the same folder, fsync, rename, fsync of the folder): a power cut leaves the old file or the new.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.storage import write_atomic

log = logging.getLogger(__name__)

FORMAT = 1


def thresholds_path(state_dir: Path) -> Path:
    return Path(state_dir) / "calibration" / "thresholds.json"


@dataclass(frozen=True)
class CameraCalibration:
    threshold: float
    summary: dict[str, Any]


def load_thresholds(
    state_dir: Path, model_name: str, model_version: str, score_scale: str | None = None
) -> dict[str, CameraCalibration]:
    """Calibrated thresholds per camera for this model, or {} (none yet, or learnt on another model).

    A file learnt on another model version still holds when both bundles declare the same
    ``score_scale`` (the publisher's statement that their scores are comparable).
    """
    path = thresholds_path(state_dir)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        model = data["model"]
        cameras = data["cameras"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.error("calibration file %s is unreadable (%s); cameras are uncalibrated", path, exc)
        return {}
    same_model = (model.get("name"), model.get("version")) == (model_name, model_version)
    same_scale = score_scale is not None and model.get("score_scale") == score_scale
    if not (same_model or same_scale):
        log.warning(
            "calibration file %s was learnt on model %s %s, not %s %s: not used (recalibrate)",
            path, model.get("name"), model.get("version"), model_name, model_version,
        )  # fmt: skip
        return {}
    return {cam: CameraCalibration(float(c["threshold"]), c) for cam, c in cameras.items()}


def save_threshold(
    state_dir: Path,
    model_name: str,
    model_version: str,
    camera_id: str,
    summary: dict[str, Any],
    score_scale: str | None = None,
) -> Path:
    """Record one camera's calibration (keeping the other cameras' if they belong to the same model)."""
    path = thresholds_path(state_dir)
    model = {"name": model_name, "version": model_version}
    if score_scale is not None:
        model["score_scale"] = score_scale
    data: dict[str, Any] = {"format": FORMAT, "model": model}
    current = load_thresholds(state_dir, model_name, model_version, score_scale)
    data["cameras"] = {cam: c.summary for cam, c in current.items()}
    data["cameras"][camera_id] = summary
    write_atomic(path, json.dumps(data, indent=2) + "\n")
    return path
