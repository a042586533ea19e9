"""``bdSeq``: the Sparkplug session number, one up per MQTT session, kept across restarts.

A host tells a late NDEATH of an old session from the current one by it. The number of the *next*
session is saved before a session starts, so a restart never reuses one.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from appliance.publish.sparkplug import SparkplugError

log = logging.getLogger("appliance.sparkplug.node")  # the name journals and log filters know


class BdSeqCounter:
    """Hands out bdSeq values (mod 256), persisted in ``path`` when one is given."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._next = self._load()

    def _load(self) -> int:
        if self.path is None:
            return 0
        try:
            text = self.path.read_text().strip()
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise SparkplugError(
                f"sparkplug: cannot read {self.path} ({exc.strerror}); check the state_dir"
            ) from None
        try:
            value = int(text)
        except ValueError:
            log.warning("Sparkplug: %s holds %r, not a number; starting bdSeq at 0", self.path, text)
            return 0
        return value % 256

    def take(self, strict: bool) -> int:
        """The bdSeq for the next MQTT session; the one after it is saved first, so a restart skips it."""
        value = self._next
        self._next = (value + 1) % 256
        if self.path is not None:
            tmp = self.path.with_name(self.path.name + ".tmp")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                tmp.write_text(f"{self._next}\n")
                os.replace(tmp, self.path)
            except OSError as exc:
                if strict:
                    raise SparkplugError(
                        f"sparkplug: cannot write {self.path} ({exc.strerror}); give a writable state_dir"
                    ) from None
                log.warning("Sparkplug: cannot save bdSeq to %s (%s)", self.path, exc.strerror)
        return value
