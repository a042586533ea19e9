"""Installed model versions and which one is active: field updates that never leave a camera without a model.

Layout under ``<state_dir>/models``::

    versions/<id>/bundle/      a verified, smoke-tested bundle; never changed after install
    versions/<id>/install.json who signed it, when and where it came from
    active.json                the active version and the rollback history (replaced atomically)
    bad.json                   versions marked bad (by their manifest's SHA-256), why and when
    updates.jsonl              every install, refusal and rollback, one JSON object a line
    staging/                   an install in progress (what a crash leaves here is removed next time)

An install stages the bundle (tar extraction or directory copy that refuses links, devices,
traversal and oversized content), verifies the signature and every hash, checks that this appliance
can run it, smoke-tests it with the configured runtime, fsyncs it, renames it into ``versions/`` and
only then replaces ``active.json`` (temporary file, fsync, rename, fsync of the folder). Power lost
at any point leaves ``active.json`` naming a complete version: the old one or the new one. With no
active version the appliance runs the bundle named in its configuration (the factory model).

Installs refuse a downgrade: a bundle whose model has the active model's name (installed version or
factory bundle) and a lower version number, unless the technician allows it (``--allow-downgrade``;
a rollback is explicit and always allowed). A version the daemon marks bad (it kept failing to start)
is recorded by its manifest's SHA-256, so the same bundle dropped again is refused whatever its file
name, unless forced (``--force``); rollbacks skip bad versions.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from appliance.config import ApplianceConfig
from appliance.errors import ModelError, UpdateRefused
from appliance.models.bundle import Bundle, BundleError, open_bundle, peek_manifest
from appliance.models.bundle_files import MAX_BUNDLE_BYTES
from appliance.storage import display_path, write_atomic
from appliance.updates.bad_versions import BadVersions, describe_bad
from appliance.updates.compatibility import policy_for
from appliance.updates.install import UpdateResult, install_bundle, name_source
from appliance.updates.signing import SignaturePolicy
from appliance.updates.update_log import FACTORY, UpdateLog, install_info, now

log = logging.getLogger("appliance.model_store")  # the name journals and log filters know


@dataclass
class ActiveState:
    """Contents of ``active.json``: the active version (None: the factory bundle) and the ones before it."""

    active: str | None = None
    history: list[str] = field(default_factory=list)  # previously active versions, oldest first
    switched_at: str | None = None
    reason: str | None = None

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2) + "\n"


@dataclass
class InstalledVersion:
    id: str
    name: str
    version: str
    signer: dict | None
    installed_at: str
    source: str
    active: bool
    bad: dict | None = None  # the mark (reason, marked_at, ...) when the daemon marked it bad


class ModelStore:
    """The versions installed under a state directory; installs, switches and rollbacks.

    ``log`` is the update log, ``bad`` the versions marked bad; both live under the same folder.
    """

    def __init__(self, state_dir: Path, max_bundle_bytes: int = MAX_BUNDLE_BYTES) -> None:
        self.root = Path(state_dir) / "models"
        self.versions = self.root / "versions"
        self.pointer = self.root / "active.json"
        self.staging = self.root / "staging"
        self.max_bundle_bytes = max_bundle_bytes
        self.log = UpdateLog(self.root, self.versions)
        self.bad = BadVersions(self.root, self.versions, self.log)

    # -- reading ----------------------------------------------------------------------------------
    def state(self) -> ActiveState:
        if not self.pointer.is_file():
            return ActiveState()
        try:
            data = json.loads(self.pointer.read_text(encoding="utf-8"))
            return ActiveState(data.get("active"), list(data.get("history", [])), data.get("switched_at"),
                               data.get("reason"))  # fmt: skip
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            # written atomically, so this is outside damage: fall back to the factory model, loudly
            log.error("model pointer %s is unreadable (%s); running the configured bundle", self.pointer, exc)
            return ActiveState()

    def bundle_dir(self, version_id: str) -> Path:
        return self.versions / version_id / "bundle"

    def installed(self) -> list[InstalledVersion]:
        active = self.state().active
        bad = self.bad.all()
        out = []
        for d in sorted(self.versions.glob("*")) if self.versions.is_dir() else []:
            try:
                info = install_info(self.versions, d.name)
            except (OSError, ValueError):
                continue
            out.append(
                InstalledVersion(
                    d.name,
                    info["model"]["name"],
                    info["model"]["version"],
                    info.get("signer"),
                    info["installed_at"],
                    info.get("source", ""),
                    d.name == active,
                    bad.get(str(info.get("manifest_sha256"))),
                )
            )
        return out

    def open_version(self, version_id: str, policy: SignaturePolicy) -> Bundle:
        """Re-verify an installed version (signature, hashes) before it is run."""
        d = self.bundle_dir(version_id)
        if not d.is_dir():
            raise BundleError(f"installed model version {version_id} is missing ({d})")
        return open_bundle(d, signatures=policy)

    @contextlib.contextmanager
    def locked(self, timeout_s: float = 60.0) -> Iterator[None]:
        """One install or rollback at a time (the CLI and the daemon's inbox may both try)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("a") as fh:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise UpdateRefused("another model update is in progress; try again later") from None
                    time.sleep(0.1)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def recover(self) -> None:
        """Remove what an interrupted install left in staging (never touches versions/ or the pointer)."""
        if self.staging.is_dir():
            shutil.rmtree(self.staging, ignore_errors=True)

    def reached(self, name: str) -> None:
        """An install step finished (logged; tests interrupt the install here)."""
        log.debug("model update: %s", name)

    def install(
        self,
        source: Path,
        cfg: ApplianceConfig,
        *,
        allow_downgrade: bool = False,
        force: bool = False,
        shown: str | None = None,
    ) -> UpdateResult:
        """Install and activate a bundle (.tar or directory); refusals leave the active model as it was.

        ``allow_downgrade``: accept a lower version of the active model. ``force``: accept a bundle
        marked bad. The inbox passes neither; the technician does, on the command line. ``shown``:
        how the log names the source (a console upload: its file name and who sent it).
        """
        source = Path(source)
        shown = shown or display_path(source)
        policy = policy_for(cfg)
        with self.locked():
            self.recover()
            try:
                result = install_bundle(self, source, cfg, policy, allow_downgrade, force, shown)
            except ModelError as exc:
                message = name_source(self.staging, str(exc), shown)
                self.log.record("install", "refused", source=shown, message=message)
                raise UpdateRefused(message) from None
            except OSError as exc:
                message = name_source(
                    self.staging, f"install failed ({exc}); the active model is unchanged", shown
                )
                self.log.record("install", "failed", source=shown, message=message)
                raise UpdateRefused(message) from None
            finally:
                self.recover()
        return result

    def active_model(self, cfg: ApplianceConfig) -> tuple[str, dict] | None:
        """(label, {"name", "version"}) of the active model: an installed version's, or the factory
        bundle's read from its manifest (None if that cannot be read)."""
        active = self.state().active
        if active is not None:
            try:
                info = install_info(self.versions, active)
                return active, dict(info["model"])
            except (OSError, ValueError, KeyError, TypeError):
                return None
        try:
            manifest = peek_manifest(Path(cfg.model.bundle))
        except (ModelError, OSError) as exc:
            log.warning("factory bundle %s unreadable for the version check (%s)", cfg.model.bundle, exc)
            return None
        return FACTORY, dict(manifest["model"])

    def switch(self, version_id: str | None, reason: str) -> None:
        state = self.state()
        if state.active == version_id:
            return
        history = [v for v in state.history if v != version_id]
        if state.active is not None or history:
            history.append(state.active or FACTORY)
        self.root.mkdir(parents=True, exist_ok=True)
        new = ActiveState(version_id, history, now(), reason)
        write_atomic(self.pointer, new.to_json())

    def rollback(
        self,
        cfg: ApplianceConfig,
        to: str | None = None,
        reason: str = "rollback",
        message: str = "",
        force: bool = False,
    ) -> str:
        """Make the previous version (or ``to``) active again; returns its id.

        ``factory`` stands for the bundle named in the configuration (active when no version is).
        Versions marked bad are skipped; when no earlier version is left (or loads), the factory
        bundle is the last resort. ``to`` a version marked bad is refused unless ``force``."""
        with self.locked():
            state = self.state()
            if to is not None and not force and (mark := self.bad.of(to)) is not None:
                raise UpdateRefused(
                    f"{to} was {describe_bad(mark)}; use `appliance rollback --to {to} --force` "
                    "to run it anyway"
                )
            if to is not None:
                candidates = [to]
            else:
                candidates = [v for v in reversed(state.history) if v == FACTORY or self.bad.of(v) is None]
                if state.active is not None and FACTORY not in candidates:
                    candidates.append(FACTORY)  # the last resort
            if not candidates:
                raise UpdateRefused("nothing to roll back to: no earlier model version is installed")
            errors = []
            for target in candidates:
                if target == state.active:
                    raise UpdateRefused(f"{target} is already the active model")
                try:
                    if target != FACTORY:
                        self.open_version(target, policy_for(cfg))
                except ModelError as exc:
                    errors.append(f"{target}: {exc}")
                    continue
                previous = state.active
                history = [v for v in state.history if v != target]
                if to is not None and previous is not None:
                    history.append(previous)  # an explicit choice can be undone
                new = ActiveState(None if target == FACTORY else target, history, now(), reason)
                write_atomic(self.pointer, new.to_json())
                self.match_owner()
                note = f"from {previous or FACTORY}" + (f": {message}" if message else "")
                if errors:
                    note += f" (skipped {'; '.join(errors)})"
                self.log.record(reason, "ok", version=target, message=note)
                return target
            failure = "no earlier version can be loaded: " + "; ".join(errors)
            self.log.record(reason, "failed", message=failure)
            raise UpdateRefused(failure)

    def prune(self, keep: int) -> list[str]:
        """Delete versions beyond the active one and the ``keep - 1`` most recent before it."""
        state = self.state()
        kept = {state.active, *state.history[-(keep - 1) :]} - {None}
        removed = []
        for d in self.versions.glob("*") if self.versions.is_dir() else []:
            if d.name not in kept:
                shutil.rmtree(d, ignore_errors=True)
                removed.append(d.name)
        trimmed = [v for v in state.history if v in kept or v == FACTORY][-(keep - 1) :]
        if trimmed != state.history:
            write_atomic(
                self.pointer, ActiveState(state.active, trimmed, state.switched_at, state.reason).to_json()
            )
        return removed

    def match_owner(self) -> None:
        """Run as root (a technician's sudo), hand what was written to the state folder's owner."""
        if os.geteuid() != 0:
            return
        st = self.root.parent.stat()
        if st.st_uid == 0:
            return
        for dirpath, dirs, files in os.walk(self.root):
            for name in [*dirs, *files, ""]:
                with contextlib.suppress(OSError):
                    os.chown(os.path.join(dirpath, name) if name else dirpath, st.st_uid, st.st_gid)
