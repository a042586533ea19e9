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
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from appliance.config import ApplianceConfig, BlazePoseConfig, OnnxPoseConfig
from appliance.errors import ModelError
from appliance.models.bundle import (
    Bundle,
    BundleError,
    open_bundle,
    peek_manifest,
    safe_copy_dir,
    safe_extract,
    sha256_file,
)
from appliance.models.bundle_files import MAX_BUNDLE_BYTES
from appliance.storage import write_atomic
from appliance.updates.signing import SignaturePolicy, Signer

log = logging.getLogger("appliance.model_store")  # the name journals and log filters know

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
FACTORY = "factory"  # the configured bundle, active when no installed version is
BAD_FILE = "bad.json"
UPDATE_LOG_MAX_LINES = 1000


class UpdateRefused(ModelError):
    """A bundle that was not installed; the active model is unchanged."""


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


def display_path(path: str | Path) -> str:
    """A path as messages show it: absolute and without ``..`` (symbolic links are left as named)."""
    return os.path.abspath(path)


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


@dataclass
class UpdateResult:
    version_id: str
    bundle_name: str
    signer: Signer | None
    smoke_score: float
    already_installed: bool = False


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:60] or "model"


class ModelStore:
    """The versions installed under a state directory; installs, switches, rollbacks and their log."""

    def __init__(self, state_dir: Path, max_bundle_bytes: int = MAX_BUNDLE_BYTES) -> None:
        self.root = Path(state_dir) / "models"
        self.versions = self.root / "versions"
        self.pointer = self.root / "active.json"
        self.log_path = self.root / "updates.jsonl"
        self.staging = self.root / "staging"
        self.bad_path = self.root / BAD_FILE
        self.max_bundle_bytes = max_bundle_bytes

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
        bad = self.bad_versions()
        out = []
        for d in sorted(self.versions.glob("*")) if self.versions.is_dir() else []:
            try:
                info = json.loads((d / "install.json").read_text(encoding="utf-8"))
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

    # -- versions marked bad ----------------------------------------------------------------------
    def bad_versions(self) -> dict[str, dict]:
        """Manifest SHA-256 -> mark ({version, model, reason, marked_at, failed_starts?})."""
        if not self.bad_path.is_file():
            return {}
        try:
            data = json.loads(self.bad_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.error("list of bad model versions %s is unreadable (%s); ignoring it", self.bad_path, exc)
            return {}
        return {k: v for k, v in data.items() if isinstance(v, dict)} if isinstance(data, dict) else {}

    def _digest_of(self, version_id: str) -> str:
        try:
            info = json.loads((self.versions / version_id / "install.json").read_text(encoding="utf-8"))
            return str(info["manifest_sha256"])
        except (OSError, ValueError, KeyError, TypeError):
            return sha256_file(self.bundle_dir(version_id) / "manifest.json")  # raises if it is gone

    def mark_bad(self, version_id: str, reason: str, failed_starts: int | None = None) -> dict:
        """Record that an installed version must not run again (the daemon's boot counter calls this).

        Kept by the bundle's manifest SHA-256, so the same bundle installed again later, under any
        file name or version id, is recognised; survives the version being pruned. Returns the mark.
        """
        if version_id == FACTORY:
            raise UpdateRefused("the configured bundle (factory) cannot be marked bad; it is the last resort")
        try:
            digest = self._digest_of(version_id)
            info = json.loads((self.versions / version_id / "install.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UpdateRefused(f"model version {version_id} is not installed ({exc})") from None
        mark: dict[str, Any] = {
            "version": version_id,
            "model": info.get("model"),
            "reason": " ".join(str(reason).split()),
            "marked_at": _now(),
        }
        if failed_starts is not None:
            mark["failed_starts"] = int(failed_starts)
        bad = self.bad_versions()
        bad[digest] = mark
        self.root.mkdir(parents=True, exist_ok=True)
        write_atomic(self.bad_path, json.dumps(bad, indent=2) + "\n")
        self.record("mark_bad", "ok", version=version_id, message=mark["reason"])
        return mark

    def is_bad(self, version_id: str | None = None, *, digest: str | None = None) -> dict | None:
        """The mark of an installed version (or of a manifest SHA-256), None if it is not marked bad."""
        if digest is None:
            if version_id is None or version_id == FACTORY:
                return None
            try:
                digest = self._digest_of(version_id)
            except OSError:
                return None
        return self.bad_versions().get(digest)

    @staticmethod
    def describe_bad(mark: dict) -> str:
        """'marked bad after 3 failed starts on 2026-01-02 10:00 UTC: why' (one line)."""
        when = str(mark.get("marked_at", "?")).replace("T", " ").replace("+00:00", " UTC")
        after = f" after {mark['failed_starts']} failed starts" if mark.get("failed_starts") else ""
        return f"marked bad{after} on {when}: {mark.get('reason', 'no reason recorded')}"

    def open_version(self, version_id: str, policy: SignaturePolicy) -> Bundle:
        """Re-verify an installed version (signature, hashes) before it is run."""
        d = self.bundle_dir(version_id)
        if not d.is_dir():
            raise BundleError(f"installed model version {version_id} is missing ({d})")
        return open_bundle(d, signatures=policy)

    def updates(self, last: int = 20) -> list[dict[str, Any]]:
        if not self.log_path.is_file():
            return []
        lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-last:]
        out = []
        for line in lines:
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    # -- changing ---------------------------------------------------------------------------------
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

    def _step(self, name: str) -> None:
        """An install step finished (logged; tests interrupt the install here)."""
        log.debug("model update: %s", name)

    def install(
        self, source: Path, cfg: ApplianceConfig, *, allow_downgrade: bool = False, force: bool = False
    ) -> UpdateResult:
        """Install and activate a bundle (.tar or directory); refusals leave the active model as it was.

        ``allow_downgrade``: accept a lower version of the active model. ``force``: accept a bundle
        marked bad. The inbox passes neither; the technician does, on the command line.
        """
        source = Path(source)
        shown = display_path(source)
        policy = policy_for(cfg)
        with self.locked():
            self.recover()
            try:
                result = self._install(source, cfg, policy, allow_downgrade, force)
            except ModelError as exc:
                message = self._name_source(str(exc), shown)
                self.record("install", "refused", source=shown, message=message)
                raise UpdateRefused(message) from None
            except OSError as exc:
                message = self._name_source(f"install failed ({exc}); the active model is unchanged", shown)
                self.record("install", "failed", source=shown, message=message)
                raise UpdateRefused(message) from None
            finally:
                self.recover()
        return result

    def _name_source(self, message: str, source: str) -> str:
        """One line that names the file the technician gave, once, first (never the staged copy)."""
        staged = re.escape(str(self.staging)) + r"/install-[^/\s]+/unpacked(/[^/:\s]+)?"
        text = re.sub(staged, lambda _: source, " ".join(message.split()))
        prefix = f"{source}: "
        while text.startswith(prefix + prefix):
            text = text[len(prefix) :]
        return text if text.startswith(prefix) else prefix + text

    def _install(
        self,
        source: Path,
        cfg: ApplianceConfig,
        policy: SignaturePolicy,
        allow_downgrade: bool = False,
        force: bool = False,
    ) -> UpdateResult:
        shown = display_path(source)
        if not source.exists():
            raise BundleError(f"{shown}: no such bundle")
        self.staging.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="install-", dir=self.staging))
        unpacked = work / "unpacked"
        unpacked.mkdir()
        # signature and listing checked before anything but the manifest is read, then streamed
        if source.is_dir():
            root = safe_copy_dir(source, unpacked, self.max_bundle_bytes, policy, self._step)
        else:
            root = safe_extract(source, unpacked, self.max_bundle_bytes, policy, self._step)
        self._step("staged")
        bundle = open_bundle(root, signatures=policy)
        self._step("verified")
        digest = sha256_file(root / "manifest.json")
        forced = ""
        if (mark := self.is_bad(digest=digest)) is not None:
            if not force:
                raise UpdateRefused(
                    f"{shown}: {bundle.name} ({mark.get('version', 'an earlier install')}) was "
                    f"{self.describe_bad(mark)}; use `appliance update --force` to install it anyway"
                )
            forced = f"installed with --force although {self.describe_bad(mark)}"
        if not allow_downgrade and (older := self._downgrade(bundle, cfg)):
            raise UpdateRefused(
                f"{shown}: {bundle.name} is older than the active model ({older}); refusing a downgrade. "
                "Use `appliance update --allow-downgrade` to install it anyway "
                "(`appliance rollback --to VERSION` returns to an installed version)"
            )
        if problems := compatibility_problems(bundle, cfg):
            raise BundleError(f"{shown}: not compatible with this appliance: " + "; ".join(problems))
        self._step("compatible")
        runtime, variant = bundle.open(cfg.model.runtime, cfg.model.variant, cfg.model.threads)
        smoke = bundle.smoke_test(runtime, variant)  # open() ran it too; this gives the score for the log
        del runtime
        self._step("smoke_tested")
        if forced:
            self._clear_bad(digest)

        for existing in self.installed():
            info = json.loads((self.versions / existing.id / "install.json").read_text(encoding="utf-8"))
            if info.get("manifest_sha256") == digest:  # same bundle again: switch to it, no second copy
                self._switch(existing.id, "install")
                note = "; ".join(filter(None, ["already installed; activated", forced]))
                self.record("install", "ok", version=existing.id, bundle=bundle, source=shown, message=note)
                return UpdateResult(existing.id, bundle.name, bundle.signer, smoke, already_installed=True)

        model = bundle.manifest["model"]
        version_id = f"{self._next_number():04d}-{_slug(str(model['name']))}-{_slug(str(model['version']))}"
        final = work / "version"
        final.mkdir()
        root.rename(final / "bundle")
        info = {
            "model": {"name": model["name"], "version": model["version"]},
            "signer": bundle.signer.__dict__ if bundle.signer else None,
            "installed_at": _now(),
            "source": shown,
            "manifest_sha256": digest,
            "variant": variant,
            "smoke_score": smoke,
        }
        (final / "install.json").write_text(json.dumps(info, indent=2) + "\n")
        _fsync_tree(final)
        self.versions.mkdir(parents=True, exist_ok=True)
        final.rename(self.versions / version_id)  # atomic: a version is complete or absent
        _fsync_dir(self.versions)
        self._step("unpacked")
        self._switch(version_id, "install")
        self._step("switched")
        self.prune(cfg.model.keep_versions)
        self._step("pruned")
        self._match_owner()
        self.record("install", "ok", version=version_id, bundle=bundle, source=shown, message=forced)
        return UpdateResult(version_id, bundle.name, bundle.signer, smoke)

    def _clear_bad(self, digest: str) -> None:
        """A forced install: the technician vouches for the bundle again (the daemon may mark it anew)."""
        bad = self.bad_versions()
        if bad.pop(digest, None) is not None:
            write_atomic(self.bad_path, json.dumps(bad, indent=2) + "\n")

    def active_model(self, cfg: ApplianceConfig) -> tuple[str, dict] | None:
        """(label, {"name", "version"}) of the active model: an installed version's, or the factory
        bundle's read from its manifest (None if that cannot be read)."""
        active = self.state().active
        if active is not None:
            try:
                info = json.loads((self.versions / active / "install.json").read_text(encoding="utf-8"))
                return active, dict(info["model"])
            except (OSError, ValueError, KeyError, TypeError):
                return None
        try:
            manifest = peek_manifest(Path(cfg.model.bundle))
        except (ModelError, OSError) as exc:
            log.warning("factory bundle %s unreadable for the version check (%s)", cfg.model.bundle, exc)
            return None
        return FACTORY, dict(manifest["model"])

    def _downgrade(self, bundle: Bundle, cfg: ApplianceConfig) -> str | None:
        """The active model's description when ``bundle`` is a lower version of the same model, else None.

        Only models of the same name are compared (another model is a replacement, not a downgrade),
        by their numeric release (``version_key``); versions without one are not compared."""
        active = self.active_model(cfg)
        if active is None:
            return None
        label, model = active
        new = bundle.manifest["model"]
        if str(model.get("name")) != str(new.get("name")):
            return None
        old_key, new_key = version_key(model.get("version")), version_key(new.get("version"))
        if old_key is None or new_key is None or new_key >= old_key:
            return None
        where = "the configured bundle" if label == FACTORY else label
        return f"{model.get('name')} {model.get('version')}, {where}"

    def _next_number(self) -> int:
        numbers = (
            [int(d.name.split("-", 1)[0]) for d in self.versions.glob("[0-9]*-*")]
            if self.versions.is_dir()
            else []
        )
        return max(numbers, default=0) + 1

    def _switch(self, version_id: str | None, reason: str) -> None:
        state = self.state()
        if state.active == version_id:
            return
        history = [v for v in state.history if v != version_id]
        if state.active is not None or history:
            history.append(state.active or FACTORY)
        self.root.mkdir(parents=True, exist_ok=True)
        new = ActiveState(version_id, history, _now(), reason)
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
            if to is not None and not force and (mark := self.is_bad(to)) is not None:
                raise UpdateRefused(
                    f"{to} was {self.describe_bad(mark)}; use `appliance rollback --to {to} --force` "
                    "to run it anyway"
                )
            if to is not None:
                candidates = [to]
            else:
                candidates = [v for v in reversed(state.history) if v == FACTORY or self.is_bad(v) is None]
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
                new = ActiveState(None if target == FACTORY else target, history, _now(), reason)
                write_atomic(self.pointer, new.to_json())
                self._match_owner()
                note = f"from {previous or FACTORY}" + (f": {message}" if message else "")
                if errors:
                    note += f" (skipped {'; '.join(errors)})"
                self.record(reason, "ok", version=target, message=note)
                return target
            failure = "no earlier version can be loaded: " + "; ".join(errors)
            self.record(reason, "failed", message=failure)
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

    def record(
        self,
        action: str,
        result: str,
        *,
        version: str | None = None,
        bundle: Bundle | None = None,
        source: str | None = None,
        message: str = "",
    ) -> dict[str, Any]:
        """Append one line to the update log (fsync'd) and the journal; returns the record."""
        entry: dict[str, Any] = {"time": _now(), "action": action, "result": result}
        if version is not None:
            entry["version"] = version
        if bundle is not None:
            entry["model"] = {
                "name": bundle.manifest["model"]["name"],
                "version": bundle.manifest["model"]["version"],
            }
            entry["signer"] = bundle.signer.__dict__ if bundle.signer else None
        elif version and version != FACTORY:
            with contextlib.suppress(OSError, ValueError, KeyError):
                info = json.loads((self.versions / version / "install.json").read_text(encoding="utf-8"))
                entry["model"], entry["signer"] = info["model"], info.get("signer")
        if source is not None:
            entry["source"] = source
        if message:
            entry["message"] = message
        self.root.mkdir(parents=True, exist_ok=True)
        level = logging.INFO if result == "ok" else logging.ERROR
        log.log(
            level,
            "model %s %s: %s%s",
            action,
            result,
            version or source or "",
            f" ({message})" if message else "",
        )
        lines = self.updates(UPDATE_LOG_MAX_LINES - 1) if self.log_path.is_file() else []
        if len(lines) >= UPDATE_LOG_MAX_LINES - 1:  # keep the log bounded
            write_atomic(
                self.log_path, "".join(json.dumps(e) + "\n" for e in lines[-UPDATE_LOG_MAX_LINES // 2 :])
            )
        with self.log_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return entry

    def _match_owner(self) -> None:
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
