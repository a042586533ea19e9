"""What a kind of model is to the appliance: the interface each model kind implements.

A bundle's ``model.type`` names its kind (:mod:`appliance.models.registry`). Everything that differs
between kinds lives behind this interface, so the daemon, ``appliance score``, ``appliance learn``
and the model store never compare type names: the inputs a kind needs per frame, how its runtimes
open and are smoke-tested, its streaming scorer, its whole-sequence scorer, and its site fit where it
has one. Adding a kind is one module with one subclass, and one line in the registry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from appliance.accelerators import CPU, Accelerator
from appliance.errors import ModelError

if TYPE_CHECKING:
    from appliance.keypoints.sequence import KeypointSequence
    from appliance.models.bundle import Bundle
    from appliance.models.site import SiteModel

INPUT_KINDS = ("maps", "body", "both")  # skeleton maps, body-graph keypoints, or both per track and frame


class ModelKind:
    """One kind of model. Subclasses set the class attributes and implement the methods."""

    type: ClassVar[str]  # the manifest's ``model.type``
    input_kind: ClassVar[str]  # what the pipeline builds per track and frame (one of INPUT_KINDS)
    site_learnable: ClassVar[bool] = False  # whether ``appliance learn`` can fit a site model on it
    variant_files: ClassVar[tuple[str, ...]] = ()  # the keys of a variant that name its model files
    #: runtimes in the order ``model.runtime: auto`` tries them, the faster first (README: runtimes)
    runtime_preference: ClassVar[tuple[str, ...]] = ("onnxruntime", "tflite")

    def open(
        self, bundle: Bundle, runtime: str, variant: str, threads: int, accelerator: Accelerator = CPU
    ) -> Any:
        """The variant's runtime(s), opened and checked against the input contract (not smoke-tested:
        :meth:`Bundle.open` runs :meth:`smoke_score` on what this returns)."""
        raise NotImplementedError

    def smoke_score(self, bundle: Bundle, runtime: Any) -> float:
        """The score of the manifest's reference window (compared with the variant's expected one)."""
        raise NotImplementedError

    def scorer(self, bundle: Bundle, runtime: Any) -> Any:
        """A streaming scorer for many tracks (``push`` per frame, ``drop``, ``clear``, ``take_over``)."""
        raise NotImplementedError

    def sequence_scores(self, bundle: Bundle, runtime: Any, seq: KeypointSequence) -> np.ndarray:
        """(N - T + 1,) window scores of a recorded sequence of at least T frames (``appliance score``)."""
        raise NotImplementedError

    def site_scorer(self, bundle: Bundle, runtime: Any, site: SiteModel) -> Any:
        """A streaming scorer of a site model learned on top of ``bundle`` (whose runtime is shared)."""
        raise ModelError(f"{self.type} models have no site model")

    def identity(self, bundle: Bundle) -> dict[str, Any]:
        """What besides its own manifest identifies the bundle's behaviour (a site model is tied to it)."""
        return {}
