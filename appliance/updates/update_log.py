"""The update log (``models/updates.jsonl``): every install, refusal, rollback and mark, one JSON line each.

Each line is fsync'd as it is written and echoed to the journal; the file is kept under
:data:`UPDATE_LOG_MAX_LINES` lines by dropping its older half.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance.storage import write_atomic

if TYPE_CHECKING:
    from appliance.models.bundle import Bundle

log = logging.getLogger("appliance.model_store")  # the name journals and log filters know

FACTORY = "factory"  # the configured bundle, active when no installed version is
UPDATE_LOG_MAX_LINES = 1000


def now() -> str:
    """The time stamps the store writes: UTC, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def install_info(versions: Path, version_id: str) -> dict[str, Any]:
    """An installed version's ``install.json`` (who signed it, when, from where); raises if unreadable."""
    info = json.loads((versions / version_id / "install.json").read_text(encoding="utf-8"))
    if not isinstance(info, dict):
        raise ValueError(f"install.json of {version_id} is not an object")
    return info


class UpdateLog:
    """Appends to and reads the update log of one model store."""

    def __init__(self, root: Path, versions: Path) -> None:
        self.root = root
        self.versions = versions
        self.path = root / "updates.jsonl"

    def entries(self, last: int = 20) -> list[dict[str, Any]]:
        """The last ``last`` records, oldest first (unreadable lines skipped)."""
        if not self.path.is_file():
            return []
        lines = self.path.read_text(encoding="utf-8", errors="replace").splitlines()[-last:]
        out = []
        for line in lines:
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

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
        entry: dict[str, Any] = {"time": now(), "action": action, "result": result}
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
                info = install_info(self.versions, version)
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
        lines = self.entries(UPDATE_LOG_MAX_LINES - 1) if self.path.is_file() else []
        if len(lines) >= UPDATE_LOG_MAX_LINES - 1:  # keep the log bounded
            write_atomic(
                self.path, "".join(json.dumps(e) + "\n" for e in lines[-UPDATE_LOG_MAX_LINES // 2 :])
            )
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return entry
