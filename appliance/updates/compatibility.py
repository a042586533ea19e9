"""Whether this appliance can run a bundle: its kind, input contract, joint layout and runtime variant.

Also the rule for comparing model versions (downgrades) and the signature policy a configuration sets.
"""

from __future__ import annotations

import re

from appliance.config import ApplianceConfig, BlazePoseConfig, OnnxPoseConfig
from appliance.errors import ModelError
from appliance.models.bundle import Bundle, BundleError
from appliance.updates.signing import SignaturePolicy

FEATURE_SETS = ("posture-motion-v1",)  # body feature definitions it computes (appliance.features.motion)
CONTRACT_KEYS = {
    "window",
    "feature_dim",
    "joint_layouts",
    "map_size",
    "crop_fraction",
    "limb_thickness",
    "binarize_threshold",
    "min_confidence",
    "features",
    "fps",
}


def version_key(version: object) -> tuple[int, ...] | None:
    """The numeric release of a model version ("v1.2.0-rc1" -> (1, 2)), trailing zeros dropped so that
    1.2 == 1.2.0; None when it does not start with a number (such versions are never compared)."""
    m = re.match(r"\s*[vV]?(\d+(?:\.\d+)*)", str(version))
    if m is None:
        return None
    parts = [int(x) for x in m.group(1).split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def policy_for(cfg: ApplianceConfig) -> SignaturePolicy:
    return SignaturePolicy(cfg.model.trusted_keys, cfg.model.allow_unsigned)


def pose_layout(cfg: ApplianceConfig) -> str | None:
    """The joint layout the configured pose backend produces (None: known only from the replayed file)."""
    if isinstance(cfg.pose, BlazePoseConfig):
        return "blazepose33"
    if isinstance(cfg.pose, OnnxPoseConfig):
        return "coco17"
    return None


def compatibility_problems(bundle: Bundle, cfg: ApplianceConfig) -> list[str]:
    """Why this appliance cannot run ``bundle`` with ``cfg`` ([] if it can)."""
    problems = []
    try:
        bundle.kind  # noqa: B018  (a kind this software does not know is refused here, by name)
    except ModelError as exc:
        problems.append(str(exc))
    contract = bundle.manifest["input_contract"]
    unknown = sorted(set(contract) - CONTRACT_KEYS)
    if unknown:
        problems.append(
            f"input contract asks for {', '.join(unknown)}, which this appliance software cannot produce"
        )
    c = bundle.contract
    if not 2 <= c.window <= 300:
        problems.append(f"input contract window {c.window} is outside 2-300 frames")
    if c.map_spec is not None and not 8 <= c.map_spec.map_size <= 128:
        problems.append(f"input contract map_size {c.map_spec.map_size} is outside 8-128")
    if c.features is not None and c.features not in FEATURE_SETS:
        problems.append(
            f"input features {c.features!r} are unknown to this appliance software ({FEATURE_SETS})"
        )
    layout = pose_layout(cfg)
    if layout is not None and layout not in c.joint_layouts:
        problems.append(
            f"input contract joint layouts {list(c.joint_layouts)} do not include {layout!r}, which the "
            f"configured pose backend ({cfg.pose.type}) produces"
        )
    try:
        bundle.choose_variant(cfg.model.runtime, cfg.model.variant)
    except BundleError as exc:
        problems.append(str(exc))
    return problems
