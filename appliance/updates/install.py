"""One install of a bundle into the model store: stage, verify, check, smoke-test, fsync, rename, switch.

Every step before the rename works in ``staging/``; the version appears in ``versions/`` whole or not
at all, and only then does ``active.json`` name it. The store calls :func:`install_bundle` under its
lock and logs the outcome.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from appliance.config import ApplianceConfig
from appliance.errors import UpdateRefused
from appliance.models.bundle import Bundle, BundleError, open_bundle, safe_copy_dir, safe_extract, sha256_file
from appliance.storage import display_path
from appliance.updates.bad_versions import describe_bad
from appliance.updates.compatibility import compatibility_problems, version_key
from appliance.updates.signing import SignaturePolicy, Signer
from appliance.updates.update_log import FACTORY, install_info, now

if TYPE_CHECKING:
    from appliance.updates.store import ModelStore


@dataclass
class UpdateResult:
    version_id: str
    bundle_name: str
    signer: Signer | None
    smoke_score: float
    already_installed: bool = False


def fsync_dir(path: Path) -> None:
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
        fsync_dir(Path(dirpath))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:60] or "model"


def name_source(staging: Path, message: str, source: str) -> str:
    """One line that names the file the technician gave, once, first (never the staged copy)."""
    staged = re.escape(str(staging)) + r"/install-[^/\s]+/unpacked(/[^/:\s]+)?"
    text = re.sub(staged, lambda _: source, " ".join(message.split()))
    prefix = f"{source}: "
    while text.startswith(prefix + prefix):
        text = text[len(prefix) :]
    return text if text.startswith(prefix) else prefix + text


def install_bundle(
    store: ModelStore,
    source: Path,
    cfg: ApplianceConfig,
    policy: SignaturePolicy,
    allow_downgrade: bool = False,
    force: bool = False,
    shown: str | None = None,
) -> UpdateResult:
    """Install ``source`` (.tar or folder) as a new version and make it active; raises on refusal.

    ``shown``: how the log and messages name the source (default: its path).
    ``store.reached(step)`` is called after each step (logged; tests kill the process there).
    """
    shown = shown or display_path(source)
    if not source.exists():
        raise BundleError(f"{shown}: no such bundle")
    store.staging.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="install-", dir=store.staging))
    unpacked = work / "unpacked"
    unpacked.mkdir()
    # signature and listing checked before anything but the manifest is read, then streamed
    if source.is_dir():
        root = safe_copy_dir(source, unpacked, store.max_bundle_bytes, policy, store.reached)
    else:
        root = safe_extract(source, unpacked, store.max_bundle_bytes, policy, store.reached)
    store.reached("staged")
    bundle = open_bundle(root, signatures=policy)
    store.reached("verified")
    digest = sha256_file(root / "manifest.json")
    forced = ""
    if (mark := store.bad.of(digest=digest)) is not None:
        if not force:
            raise UpdateRefused(
                f"{shown}: {bundle.name} ({mark.get('version', 'an earlier install')}) was "
                f"{describe_bad(mark)}; use `appliance update --force` to install it anyway"
            )
        forced = f"installed with --force although {describe_bad(mark)}"
    if not allow_downgrade and (older := _downgrade(store, bundle, cfg)):
        raise UpdateRefused(
            f"{shown}: {bundle.name} is older than the active model ({older}); refusing a downgrade. "
            "Use `appliance update --allow-downgrade` to install it anyway "
            "(`appliance rollback --to VERSION` returns to an installed version)"
        )
    if problems := compatibility_problems(bundle, cfg):
        raise BundleError(f"{shown}: not compatible with this appliance: " + "; ".join(problems))
    store.reached("compatible")
    runtime, variant = bundle.open(cfg.model.runtime, cfg.model.variant, cfg.model.threads)
    smoke = bundle.smoke_test(runtime, variant)  # open() ran it too; this gives the score for the log
    del runtime
    store.reached("smoke_tested")
    if forced:
        store.bad.clear(digest)

    for existing in store.installed():
        if install_info(store.versions, existing.id).get("manifest_sha256") == digest:
            store.switch(existing.id, "install")  # same bundle again: switch to it, no second copy
            note = "; ".join(filter(None, ["already installed; activated", forced]))
            store.log.record("install", "ok", version=existing.id, bundle=bundle, source=shown, message=note)
            return UpdateResult(existing.id, bundle.name, bundle.signer, smoke, already_installed=True)

    model = bundle.manifest["model"]
    version_id = (
        f"{_next_number(store.versions):04d}-{_slug(str(model['name']))}-{_slug(str(model['version']))}"
    )
    final = work / "version"
    final.mkdir()
    root.rename(final / "bundle")
    info = {
        "model": {"name": model["name"], "version": model["version"]},
        "signer": bundle.signer.__dict__ if bundle.signer else None,
        "installed_at": now(),
        "source": shown,
        "manifest_sha256": digest,
        "variant": variant,
        "smoke_score": smoke,
    }
    (final / "install.json").write_text(json.dumps(info, indent=2) + "\n")
    _fsync_tree(final)
    store.versions.mkdir(parents=True, exist_ok=True)
    final.rename(store.versions / version_id)  # atomic: a version is complete or absent
    fsync_dir(store.versions)
    store.reached("unpacked")
    store.switch(version_id, "install")
    store.reached("switched")
    store.prune(cfg.model.keep_versions)
    store.reached("pruned")
    store.match_owner()
    store.log.record("install", "ok", version=version_id, bundle=bundle, source=shown, message=forced)
    return UpdateResult(version_id, bundle.name, bundle.signer, smoke)


def _downgrade(store: ModelStore, bundle: Bundle, cfg: ApplianceConfig) -> str | None:
    """The active model's description when ``bundle`` is a lower version of the same model, else None.

    Only models of the same name are compared (another model is a replacement, not a downgrade),
    by their numeric release (``version_key``); versions without one are not compared."""
    active = store.active_model(cfg)
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


def _next_number(versions: Path) -> int:
    numbers = [int(d.name.split("-", 1)[0]) for d in versions.glob("[0-9]*-*")] if versions.is_dir() else []
    return max(numbers, default=0) + 1
