"""The model manager: which model each camera scores with, loaded, health-checked and rolled back.

The model is the active version of the model store (field updates, :mod:`appliance.updates.store`),
else the bundle named in the configuration. A new active version is loaded beside the running one
(:meth:`ModelManager.load_version`); one that fails to load, or raises a scoring error in its first
``model.health_window_s``, is rolled back (:meth:`ModelManager.take_health_failure`). A version that
kept killing the daemon at start is marked bad before it is tried again (the boot counter). Each
camera runs the loaded bundle, or its own site model on top of it (:meth:`ModelManager.camera_model`).
The daemon hands what this decides to its cameras between frames.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from appliance.alarms.events import ModelRef, ModelUpdate
from appliance.config import ApplianceConfig
from appliance.errors import ModelError, UpdateRefused
from appliance.models.bundle import Bundle, open_bundle
from appliance.models.runtimes import ScoringRuntime, WindowRuntime
from appliance.models.site import SiteModel, SiteModelError, SiteModelStore
from appliance.updates.boot_guard import BootGuard
from appliance.updates.compatibility import compatibility_problems, policy_for
from appliance.updates.signing import SignaturePolicy
from appliance.updates.store import ModelStore
from appliance.updates.update_log import FACTORY

log = logging.getLogger("appliance")


@dataclass
class LoadedModel:
    """A verified, smoke-tested bundle with its runtime open, ready to hand to the cameras."""

    bundle: Bundle
    runtime: ScoringRuntime | WindowRuntime
    variant: str
    version_id: str  # installed version id, or FACTORY (the configured bundle)

    @property
    def ref(self) -> ModelRef:
        m = self.bundle.manifest["model"]
        return ModelRef(name=str(m["name"]), version=str(m["version"]))

    @property
    def score_scale(self) -> str | None:
        return self.bundle.manifest["score"].get("scale")

    def scorer(self) -> Any:
        return self.bundle.kind.scorer(self.bundle, self.runtime)


@dataclass
class CameraModel:
    """What one camera scores with: the loaded bundle, or its own site model on top of it."""

    scorer: Any
    ref: ModelRef
    site: SiteModel | None = None
    problem: str | None = None  # why the camera's site model is not used (then it is uncalibrated)
    fps: float | None = None  # the time base it is scored at (None: the bundle does not record one)

    @property
    def key(self) -> tuple:
        """Equal for two selections that score alike (no model swap needed between them)."""
        return (self.ref, self.site.id if self.site else None, self.problem)


class ModelManager:
    """Loads versions, keeps the health window after a switch, rolls back, and picks each camera's model."""

    def __init__(
        self,
        cfg: ApplianceConfig,
        scorer_override: Callable[[LoadedModel], Any] | None = None,
        learn_fps: float | None = None,
    ) -> None:
        self.cfg = cfg
        self.scorer_override = scorer_override  # learning records skeletons instead of scoring
        self.learn_fps = learn_fps  # the rate a site model is learned at, when not the bundle's
        self.store = ModelStore(cfg.state_dir)
        self.sites = SiteModelStore(cfg.state_dir)
        self.boot = BootGuard(
            cfg.state_dir, cfg.model.failed_starts_before_bad, cfg.model.failed_starts_window_s
        )
        self.loaded: LoadedModel | None = None
        self.last_update: dict[str, Any] | None = None
        self._health: tuple[str, float] | None = None  # (version, monotonic deadline) after a switch
        self._health_failure: tuple[str, str, bool] | None = None  # (version that failed, why, on probation)
        self._updates_stamp: int | None = None

    # -- loading ----------------------------------------------------------------------------------
    def load_version(self, version_id: str) -> LoadedModel:
        cfg = self.cfg
        if version_id == FACTORY:
            # the configured bundle is trusted like the configuration itself; a signature it carries
            # is still checked, so a tampered factory bundle is refused
            policy = SignaturePolicy(cfg.model.trusted_keys, allow_unsigned=True)
            bundle = open_bundle(cfg.model.bundle, signatures=policy)
        else:
            bundle = self.store.open_version(version_id, policy_for(cfg))
            if problems := compatibility_problems(bundle, cfg):
                raise UpdateRefused(f"version {version_id}: " + "; ".join(problems))
        runtime, variant = bundle.open(
            cfg.model.runtime, cfg.model.variant, cfg.model.threads, cfg.model.placement()
        )
        return LoadedModel(bundle, runtime, variant, version_id)

    def load_initial(self) -> LoadedModel:
        """The active installed version; if it cannot load, roll back until one does (else the factory)."""
        self._mark_crash_looping_version_bad()
        state = self.store.state()
        while state.active is not None:
            try:
                loaded = self.load_version(state.active)
            except ModelError as exc:
                self.auto_rollback(state.active, f"failed to load at start: {exc}")
                if self.store.state().active == state.active:
                    break  # could not roll back: run the configured bundle
                state = self.store.state()
                continue
            if state.switched_at and self.cfg.model.health_window_s > 0:
                age = time.time() - _epoch(state.switched_at)
                if age < self.cfg.model.health_window_s:  # restarted soon after a switch: still on probation
                    self._health = (state.active, time.monotonic() + self.cfg.model.health_window_s - age)
            return loaded
        return self.load_version(FACTORY)

    def camera_model(self, camera_id: str, loaded: LoadedModel) -> CameraModel:
        """The bundle, or the camera's active site model on top of it when it fits the bundle."""
        fps = loaded.bundle.contract.fps
        if self.scorer_override is not None:
            return CameraModel(self.scorer_override(loaded), loaded.ref, fps=self.learn_fps or fps)
        try:
            site = self.sites.active(camera_id)
            if site is None:
                return CameraModel(loaded.scorer(), loaded.ref, fps=fps)
            if (why := site.problem_with(loaded.bundle)) is not None:
                return CameraModel(loaded.scorer(), loaded.ref, problem=why, fps=fps)
            scorer = site.scorer(loaded.bundle, loaded.runtime)
        except SiteModelError as exc:
            log.error("camera %s: %s; running the bundle, uncalibrated", camera_id, exc)
            return CameraModel(loaded.scorer(), loaded.ref, problem=str(exc), fps=fps)
        ref = ModelRef(name=loaded.ref.name, version=site.version_label(loaded.ref.version))
        return CameraModel(scorer, ref, site, fps=site.fps or fps)

    # -- health and rollback ------------------------------------------------------------------------
    def switched(self, target: str) -> None:
        """``target`` now runs: an install is on probation for ``model.health_window_s``, a rollback not."""
        health_s = self.cfg.model.health_window_s
        on_probation = target != FACTORY and health_s > 0 and self.store.state().reason == "install"
        self._health = (target, time.monotonic() + health_s) if on_probation else None
        self._health_failure = None

    def on_scoring_error(self, running: str | None, camera_id: str, exc: Exception) -> bool:
        """From a camera thread: a scoring failure of an installed version rolls it back, at any time
        (within its probation it is also marked bad). The factory model has nothing to fall back to:
        the camera's supervisor restarts its loop and the status says why."""
        if self.loaded is not None and running != self.loaded.version_id:
            return True  # this camera still runs a model being replaced: skip the frame
        if running is None or running == FACTORY:
            return False
        if self._health_failure is None:
            health = self._health
            on_probation = health is not None and running == health[0] and time.monotonic() <= health[1]
            self._health_failure = (running, f"scoring error on camera {camera_id} ({exc})", on_probation)
        return True

    @property
    def failure_pending(self) -> bool:
        return self._health_failure is not None

    def take_health_failure(self) -> None:
        """Between frames: a scoring failure reported by a camera rolls its version back."""
        if (failure := self._health_failure) is None or self.loaded is None:
            return
        self._health_failure = None
        version, why, on_probation = failure
        if version == self.loaded.version_id:  # (not one already replaced)
            if on_probation:
                self.mark_bad(version, f"{why} within its {self.cfg.model.health_window_s:g} s probation")
            self.auto_rollback(version, why)

    def mark_bad(self, version_id: str, why: str) -> None:
        log.error("model version %s marked bad: %s", version_id, why)
        try:
            self.store.bad.mark(version_id, why)
        except Exception as exc:  # the rollback that follows matters more than the mark
            log.error("could not mark model version %s bad: %s", version_id, exc)

    def _mark_crash_looping_version_bad(self) -> None:
        """Boot counter: the active version's last starts all died before becoming healthy."""
        active = self.store.state().active
        if active is None or not self.boot.should_mark_bad(active):
            return
        m = self.cfg.model
        why = (
            f"{self.boot.failed_starts(active)} starts in a row did not become healthy "
            f"(running {m.healthy_after_s:g} s) within {m.failed_starts_window_s / 60:g} min"
        )
        self.mark_bad(active, why)
        self.auto_rollback(active, why)

    def auto_rollback(self, version_id: str, why: str) -> None:
        log.error("model version %s: %s; rolling back", version_id, why)
        try:
            self.store.rollback(self.cfg, reason="auto_rollback", message=f"{version_id} {why}")
        except UpdateRefused as exc:
            log.error("automatic rollback impossible: %s", exc)
        self.refresh_last_update()

    # -- the update log and the inbox ---------------------------------------------------------------
    def refresh_last_update(self) -> bool:
        path = self.store.log.path
        stamp = path.stat().st_mtime_ns if path.exists() else None
        if stamp == self._updates_stamp:
            return False
        self._updates_stamp = stamp
        last = self.store.log.entries(1)
        self.last_update = last[-1] if last else None
        return True

    def last_update_record(self) -> ModelUpdate | None:
        record = self.last_update
        if not record:
            return None
        try:
            return ModelUpdate.model_validate(record)
        except ValueError:
            return None

    def install_from_inbox(self, path, shown: str | None = None) -> str:
        """A bundle from the update inbox or a console upload (``shown`` names it in the log)."""
        result = self.store.install(path, self.cfg, shown=shown)
        signer = f", signed by {result.signer}" if result.signer else ", unsigned"
        return f"installed as {result.version_id}: {result.bundle_name}{signer}"


def _epoch(iso: str) -> float:
    try:
        return datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return 0.0
