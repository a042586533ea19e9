"""Versions marked bad (``models/bad.json``): bundles that kept failing to start, refused when offered again.

A mark is kept by the bundle's manifest SHA-256, so the same bundle dropped again under any file name
or version id is recognised, and the mark outlives the version being pruned.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from appliance.errors import UpdateRefused
from appliance.models.bundle import sha256_file
from appliance.storage import write_atomic
from appliance.updates.update_log import FACTORY, UpdateLog, install_info, now

log = logging.getLogger("appliance.model_store")

BAD_FILE = "bad.json"


def describe_bad(mark: dict) -> str:
    """'marked bad after 3 failed starts on 2026-01-02 10:00 UTC: why' (one line)."""
    when = str(mark.get("marked_at", "?")).replace("T", " ").replace("+00:00", " UTC")
    after = f" after {mark['failed_starts']} failed starts" if mark.get("failed_starts") else ""
    return f"marked bad{after} on {when}: {mark.get('reason', 'no reason recorded')}"


class BadVersions:
    """Reads and changes the marks of one model store; each change is written atomically and logged."""

    def __init__(self, root: Path, versions: Path, update_log: UpdateLog) -> None:
        self.root = root
        self.versions = versions
        self.path = root / BAD_FILE
        self.update_log = update_log

    def all(self) -> dict[str, dict]:
        """Manifest SHA-256 -> mark ({version, model, reason, marked_at, failed_starts?})."""
        if not self.path.is_file():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.error("list of bad model versions %s is unreadable (%s); ignoring it", self.path, exc)
            return {}
        return {k: v for k, v in data.items() if isinstance(v, dict)} if isinstance(data, dict) else {}

    def digest_of(self, version_id: str) -> str:
        """The manifest SHA-256 of an installed version (from install.json, else from the manifest)."""
        try:
            return str(install_info(self.versions, version_id)["manifest_sha256"])
        except (OSError, ValueError, KeyError, TypeError):
            return sha256_file(self.versions / version_id / "bundle" / "manifest.json")  # raises if gone

    def mark(self, version_id: str, reason: str, failed_starts: int | None = None) -> dict:
        """Record that an installed version must not run again (the daemon's boot counter calls this)."""
        if version_id == FACTORY:
            raise UpdateRefused("the configured bundle (factory) cannot be marked bad; it is the last resort")
        try:
            digest = self.digest_of(version_id)
            info = install_info(self.versions, version_id)
        except (OSError, ValueError) as exc:
            raise UpdateRefused(f"model version {version_id} is not installed ({exc})") from None
        mark: dict[str, Any] = {
            "version": version_id,
            "model": info.get("model"),
            "reason": " ".join(str(reason).split()),
            "marked_at": now(),
        }
        if failed_starts is not None:
            mark["failed_starts"] = int(failed_starts)
        bad = self.all()
        bad[digest] = mark
        self.root.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, json.dumps(bad, indent=2) + "\n")
        self.update_log.record("mark_bad", "ok", version=version_id, message=mark["reason"])
        return mark

    def of(self, version_id: str | None = None, *, digest: str | None = None) -> dict | None:
        """The mark of an installed version (or of a manifest SHA-256), None if it is not marked bad."""
        if digest is None:
            if version_id is None or version_id == FACTORY:
                return None
            try:
                digest = self.digest_of(version_id)
            except OSError:
                return None
        return self.all().get(digest)

    def clear(self, digest: str) -> None:
        """A forced install: the technician vouches for the bundle again (the daemon may mark it anew)."""
        bad = self.all()
        if bad.pop(digest, None) is not None:
            write_atomic(self.path, json.dumps(bad, indent=2) + "\n")
