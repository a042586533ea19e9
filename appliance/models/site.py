"""Site models: a camera's own normal, learned on the device (``appliance learn``), kept beside the bundles.

A site model is an overlay on a signed base bundle (``posture_motion`` or ``fused``): the
posture-motion part refitted on this camera's footage (:mod:`appliance.models.posture_motion_fit`), for a
fused base the map part's calibration onto the site's scale (the LSTM-VAE weights stay as the
publisher signed them), and the threshold chosen on held-out footage. Layout under
``<state_dir>/models/site/<camera>``::

    versions/<id>/site.json    provenance, base bundle (name, version, manifest SHA-256, contract),
                               map calibration, threshold, and the SHA-256 of params.npz
    versions/<id>/params.npz   the fitted arrays (numpy, no pickle)
    active.json                the active site model id (null: the base bundle) and the history

Trust: the base bundle's signature covers what the publisher shipped; a site model is trusted because
the device made it, in its own state directory (owned by the service user, mode 0700). It never
arrives through the inbox (which takes signed bundles only), it names the base bundle's manifest
SHA-256, and it is used only on top of a base that declares the same input contract (and, for a fused
base, the very same map part); the params' SHA-256 in ``site.json`` catches a damaged file. A site
model that does not fit the running base is not used: the camera runs the base bundle, uncalibrated
until ``appliance learn`` runs again, and the status says why.
"""

from __future__ import annotations

import io
import json
import logging
import re
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from appliance.errors import ModelError
from appliance.models.bundle import Bundle, sha256_file
from appliance.models.posture_motion_fit import NumpyPostureMotionRuntime, PostureMotionParams
from appliance.storage import write_atomic

if TYPE_CHECKING:
    from appliance.updates.update_log import UpdateLog

log = logging.getLogger("appliance.site_model")  # the name journals and log filters know

FORMAT = 1
MAX_PARAMS_BYTES = 16 * 1024 * 1024


class SiteModelError(ModelError):
    """A site model that cannot be saved, read or used; the message says which and why."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def base_identity(bundle: Bundle) -> dict[str, Any]:
    """What ties a site model to its base: name, version, manifest hash and the inputs it reads."""
    c = bundle.contract
    ident: dict[str, Any] = {
        "name": str(bundle.manifest["model"]["name"]),
        "version": str(bundle.manifest["model"]["version"]),
        "type": bundle.model_type,
        "manifest_sha256": sha256_file(bundle.root / "manifest.json"),
        "features": c.features,
        "window": c.window,
        "fps": getattr(c, "fps", None),  # the learning frame rate, where the bundle records it
    }
    ident.update(bundle.kind.identity(bundle))
    return ident


@dataclass
class SiteModel:
    """One learned site model, read and verified."""

    id: str
    camera: str
    params: PostureMotionParams
    map_calibration: tuple[float, float] | None  # (loc, scale) of log map scores, fused bases only
    threshold: dict[str, Any]  # the calibration summary (``threshold`` key in it)
    base: dict[str, Any]
    provenance: dict[str, Any]

    @property
    def fps(self) -> float | None:
        """The frame rate its windows were learned at (the camera is scored at this rate)."""
        value = self.provenance.get("fps")
        return float(value) if value else None

    @property
    def threshold_value(self) -> float:
        return float(self.threshold["threshold"])

    def version_label(self, base_version: str) -> str:
        """The model version events and the status carry: the base's, with this site model."""
        return f"{base_version}+site.{self.id}"

    def runtime(self) -> NumpyPostureMotionRuntime:
        return NumpyPostureMotionRuntime(self.params)

    def scorer(self, bundle: Bundle, runtime):
        """A streaming scorer of this site model on top of ``bundle`` (whose opened runtime is given:
        on a fused base the map part's runtime is shared, not opened again)."""
        return bundle.kind.site_scorer(bundle, runtime, self)

    def problem_with(self, bundle: Bundle) -> str | None:
        """Why this site model cannot run on ``bundle`` (None: it can)."""
        if not bundle.kind.site_learnable:
            return f"the base model is now a {bundle.model_type} bundle, which site models do not extend"
        now = base_identity(bundle)
        if now["manifest_sha256"] == self.base.get("manifest_sha256"):
            return None
        for key in ("type", "features", "window", "fps", "map_part_sha256"):
            if now.get(key) != self.base.get(key):
                what = "map part" if key == "map_part_sha256" else key
                return (
                    f"base bundle {now['name']} {now['version']} has another {what} than the one site model "
                    f"{self.id} was learned on ({self.base.get('name')} {self.base.get('version')})"
                )
        return None


class SiteModelStore:
    """The site models of every camera under one state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.root = Path(state_dir) / "models" / "site"

    def _camera_dir(self, camera: str) -> Path:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", camera):
            raise SiteModelError(f"camera id {camera!r} cannot name a site model folder")
        return self.root / camera

    def pointer(self, camera: str) -> Path:
        return self._camera_dir(camera) / "active.json"

    def _state(self, camera: str) -> dict[str, Any]:
        path = self.pointer(camera)
        if not path.is_file():
            return {"active": None, "history": []}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return {"active": data.get("active"), "history": list(data.get("history", []))}
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            log.error(
                "site model pointer %s is unreadable (%s); camera %s runs its base bundle", path, exc, camera
            )
            return {"active": None, "history": []}

    def active_id(self, camera: str) -> str | None:
        return self._state(camera)["active"]

    def stamp(self) -> tuple:
        """Changes whenever any camera's active site model or its threshold changes (cheap to poll)."""
        if not self.root.is_dir():
            return ()
        out = []
        for d in sorted(self.root.iterdir()):
            p = d / "active.json"
            if p.is_file():
                out.append((d.name, p.stat().st_mtime_ns))
                active = self._state(d.name)["active"]
                site = d / "versions" / str(active) / "site.json"
                if active and site.is_file():
                    out.append((d.name, active, site.stat().st_mtime_ns))
        return tuple(out)

    def cameras(self) -> list[str]:
        return sorted(d.name for d in self.root.iterdir() if d.is_dir()) if self.root.is_dir() else []

    def versions(self, camera: str) -> list[dict[str, Any]]:
        """Each site model of a camera (its site.json), oldest first, with ``active`` set."""
        vdir = self._camera_dir(camera) / "versions"
        active = self.active_id(camera)
        out = []
        for d in sorted(vdir.iterdir()) if vdir.is_dir() else []:
            try:
                info = json.loads((d / "site.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            out.append({**info, "active": d.name == active})
        return out

    # -- reading --------------------------------------------------------------------------------
    def load(self, camera: str, site_id: str) -> SiteModel:
        d = self._camera_dir(camera) / "versions" / site_id
        try:
            info = json.loads((d / "site.json").read_text(encoding="utf-8"))
            params_path = d / "params.npz"
            if params_path.stat().st_size > MAX_PARAMS_BYTES:
                raise SiteModelError(
                    f"site model {site_id}: params.npz is larger than {MAX_PARAMS_BYTES} bytes"
                )
            if sha256_file(params_path) != info["params_sha256"]:
                raise SiteModelError(f"site model {site_id}: params.npz does not match its SHA-256 (damaged)")
            with np.load(params_path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
            params = PostureMotionParams.from_arrays(info["posture_motion"], arrays)
            cal = info.get("map_calibration")
            map_cal = (float(cal["loc"]), float(cal["scale"])) if cal else None
            if map_cal is not None and not (np.isfinite(map_cal).all() and map_cal[1] > 0):
                raise SiteModelError(f"site model {site_id}: map calibration is not finite and positive")
            threshold = dict(info["threshold"])
            float(threshold["threshold"])
            return SiteModel(site_id, camera, params, map_cal, threshold, info["base"], info["provenance"])
        except SiteModelError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SiteModelError(f"site model {site_id} of camera {camera} is unreadable ({exc})") from None

    def active(self, camera: str) -> SiteModel | None:
        """The camera's active site model, or None (none learned, rolled back, or unreadable: logged)."""
        site_id = self.active_id(camera)
        if site_id is None:
            return None
        return self.load(camera, site_id)

    # -- changing -------------------------------------------------------------------------------
    def save(
        self,
        camera: str,
        params: PostureMotionParams,
        map_calibration: tuple[float, float] | None,
        threshold: dict[str, Any],
        base: dict[str, Any],
        provenance: dict[str, Any],
    ) -> str:
        """Write a new site model and make it the camera's active one; returns its id."""
        cam_dir = self._camera_dir(camera)
        vdir = cam_dir / "versions"
        vdir.mkdir(parents=True, exist_ok=True)
        numbers = [int(m.group(1)) for d in vdir.iterdir() if (m := re.fullmatch(r"s(\d+)", d.name))]
        site_id = f"s{max(numbers, default=0) + 1}"
        stage = vdir / f".{site_id}.partial"
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir()
        buf = io.BytesIO()
        np.savez(buf, **params.to_arrays())
        write_atomic(stage / "params.npz", buf.getvalue())
        info = {
            "format": FORMAT,
            "id": site_id,
            "camera": camera,
            "base": base,
            "posture_motion": params.describe(),
            "fit": params.info,
            "map_calibration": (
                {"loc": map_calibration[0], "scale": map_calibration[1]} if map_calibration else None
            ),
            "threshold": threshold,
            "provenance": {**provenance, "learned_at": _now()},
            "params_sha256": sha256_file(stage / "params.npz"),
        }
        write_atomic(stage / "site.json", json.dumps(info, indent=2, allow_nan=False) + "\n")
        (stage).rename(vdir / site_id)
        self._switch(camera, site_id)
        return site_id

    def set_threshold(self, camera: str, site_id: str, threshold: dict[str, Any]) -> Path:
        """Recalibration of a site model (``appliance calibrate`` on a camera that runs one)."""
        path = self._camera_dir(camera) / "versions" / site_id / "site.json"
        info = json.loads(path.read_text(encoding="utf-8"))
        info["threshold"] = threshold
        write_atomic(path, json.dumps(info, indent=2, allow_nan=False) + "\n")
        return path

    def _switch(self, camera: str, site_id: str | None) -> None:
        state = self._state(camera)
        history = [h for h in state["history"] if h != site_id]
        if state["active"] is not None and state["active"] != site_id:
            history.append(state["active"])
        data = {"active": site_id, "history": history[-20:], "switched_at": _now()}
        write_atomic(self.pointer(camera), json.dumps(data, indent=2, allow_nan=False) + "\n")

    def rollback_logged(self, camera: str, log: UpdateLog, by: str) -> str | None:
        """:meth:`rollback`, written in the appliance's update log as ``site:<camera>/<now active>``."""
        previous = self.rollback(camera)
        log.record("rollback", "ok", version=f"site:{camera}/{previous or 'bundle'}",
                   message=f"site model rolled back {by}")  # fmt: skip
        return previous

    def rollback(self, camera: str) -> str | None:
        """Deactivate the camera's site model: the one before it, or the base bundle (None)."""
        state = self._state(camera)
        if state["active"] is None:
            raise SiteModelError(f"camera {camera} runs no site model; nothing to roll back")
        previous = None
        for candidate in reversed(state["history"]):
            try:
                self.load(camera, candidate)
            except SiteModelError:
                continue
            previous = candidate
            break
        history = [h for h in state["history"] if h != previous]
        data = {"active": previous, "history": history, "switched_at": _now(), "rolled_back": state["active"]}
        write_atomic(self.pointer(camera), json.dumps(data, indent=2, allow_nan=False) + "\n")
        return previous
