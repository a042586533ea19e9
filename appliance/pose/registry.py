"""Pose backends by the ``type`` of the ``pose`` config section; each imported only when chosen.

:func:`create_engine` builds the models every camera shares (once per daemon); :func:`create_backend`
builds one camera's backend (its own tracking state) on that engine.
"""

from __future__ import annotations

from typing import Any

from appliance.config import BlazePoseConfig, KeypointsPoseConfig, OnnxPoseConfig, PoseConfig
from appliance.pose.base import PoseBackend

BACKENDS = ("blazepose", "onnx", "keypoints")


def create_engine(cfg: PoseConfig) -> Any | None:
    """The shared pose models of a backend that has models to share (BlazePose), else None.

    Close it with :func:`close_engine` after every camera's backend is closed.
    """
    if isinstance(cfg, BlazePoseConfig):
        from appliance.pose.blazepose import blazepose_models

        return blazepose_models(
            cfg.model_dir, cfg.threads, cfg.min_detection_score, cfg.model_copies, cfg.refine_landmarks,
            cfg.landmark_model, cfg.runtime, cfg.placement(),
        )  # fmt: skip
    return None


def close_engine(engine: Any | None) -> None:
    if engine is not None:
        from appliance.pose.blazepose import BlazePoseModels

        engine.close(BlazePoseModels.close)


def create_backend(cfg: PoseConfig, engine: Any | None = None) -> PoseBackend:
    """One camera's backend; with ``engine`` (from :func:`create_engine`) it uses the shared models."""
    if isinstance(cfg, BlazePoseConfig):
        from appliance.pose.blazepose import BlazePoseBackend

        options = cfg.model_dump(exclude={"type", "model_copies"})
        if options["frame_budget_ms"] == "auto":  # set per camera by the daemon (engine_share_ms)
            options["frame_budget_ms"] = None
        return BlazePoseBackend(**options, models=engine)
    if isinstance(cfg, OnnxPoseConfig):
        from appliance.pose.onnx_keypoints import OnnxKeypointBackend

        return OnnxKeypointBackend(**cfg.model_dump(exclude={"type"}))
    if isinstance(cfg, KeypointsPoseConfig):
        from appliance.pose.replay import KeypointReplay

        return KeypointReplay(cfg.path, cfg.layout, cfg.consecutive)
    raise ValueError(f"unknown pose backend {cfg!r}")  # pragma: no cover - config validation prevents it
