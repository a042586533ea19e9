"""The model kinds this appliance runs, keyed on a bundle's ``model.type``: the only place that
tells kinds apart (the rest asks :func:`kind_of` and uses the :class:`~appliance.models.kind.ModelKind`).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from appliance.errors import ModelError
from appliance.models.kind import ModelKind

DEFAULT_TYPE = "lstm_vae"  # what a manifest without ``model.type`` holds (the first bundles did not say)


@cache
def kinds() -> dict[str, ModelKind]:
    """Every kind, by type. Imported on first use: the kinds import the bundle code that asks for them."""
    from appliance.models.fused import FusedKind
    from appliance.models.lstm_vae import LstmVaeKind
    from appliance.models.posture_motion import PostureMotionKind

    return {k.type: k for k in (LstmVaeKind(), PostureMotionKind(), FusedKind())}


def known_types() -> tuple[str, ...]:
    return tuple(kinds())


def type_of(manifest: dict[str, Any]) -> str:
    return str(manifest.get("model", {}).get("type", DEFAULT_TYPE))


def kind_of(bundle_or_type: Any) -> ModelKind:
    """The kind of a bundle (anything with a ``manifest``), a manifest dict, or a type name."""
    if isinstance(bundle_or_type, str):
        name = bundle_or_type
    elif isinstance(bundle_or_type, dict):
        name = type_of(bundle_or_type)
    else:
        name = type_of(bundle_or_type.manifest)
    try:
        return kinds()[name]
    except KeyError:
        raise ModelError(
            f"model type {name!r} is not supported by this appliance software (it runs "
            f"{', '.join(known_types())}); update the appliance software first"
        ) from None


def site_learnable_types() -> tuple[str, ...]:
    """The kinds a site model can be learned on top of (``appliance learn``)."""
    return tuple(t for t, k in kinds().items() if k.site_learnable)
