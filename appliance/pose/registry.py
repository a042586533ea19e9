"""Pose backends by the ``type`` of the ``pose`` config section; each imported only when chosen."""

from __future__ import annotations

from appliance.config import BlazePoseConfig, KeypointsPoseConfig, OnnxPoseConfig, PoseConfig
from appliance.pose.base import PoseBackend

BACKENDS = ("blazepose", "onnx", "keypoints")


def create_backend(cfg: PoseConfig) -> PoseBackend:
    if isinstance(cfg, BlazePoseConfig):
        from appliance.pose.blazepose import BlazePoseBackend

        return BlazePoseBackend(**cfg.model_dump(exclude={"type"}))
    if isinstance(cfg, OnnxPoseConfig):
        from appliance.pose.onnx_keypoints import OnnxKeypointBackend

        return OnnxKeypointBackend(**cfg.model_dump(exclude={"type"}))
    if isinstance(cfg, KeypointsPoseConfig):
        from appliance.pose.replay import KeypointReplay

        return KeypointReplay(cfg.path, cfg.layout, cfg.consecutive)
    raise ValueError(f"unknown pose backend {cfg!r}")  # pragma: no cover - config validation prevents it
