"""Primary host awareness (Sparkplug 3.0, section 5): whether the SCADA named ``primary_host_id`` is
online, read from its retained ``spBv1.0/STATE/<host id>`` message ``{"online": bool, "timestamp": ms}``.

The rules kept here: only the configured host's topic counts; an online message older than the last
valid message is ignored, and so is an offline message older than the last *online* one (a late
death of an earlier host session); with no earlier message, the flag is taken as it is. What
follows from a verdict (births, or NDEATH and a new connection) is the link's business.
"""

from __future__ import annotations

import json
import logging

log = logging.getLogger("appliance.sparkplug.node")

NAMESPACE = "spBv1.0"


class PrimaryHost:
    """The primary host's last valid STATE."""

    def __init__(self, host_id: str) -> None:
        self.host_id = host_id
        self.topic = f"{NAMESPACE}/STATE/{host_id}"
        self.online = False
        self._online_ts: int | None = None  # timestamp of the last online STATE
        self._last_ts: int | None = None  # timestamp of the last valid STATE of either kind

    def on_state(self, topic: str, payload: bytes) -> str | None:
        """``"online"`` or ``"offline"`` when this message changes or confirms the host's state,
        None when it does not count (another host, not a STATE payload, or older than the last online)."""
        if topic != self.topic:
            return None
        try:
            doc = json.loads(payload)
            online, ts = doc["online"], doc["timestamp"]
            if not isinstance(online, bool) or isinstance(ts, bool) or not isinstance(ts, int):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            log.warning(
                "Sparkplug: ignoring a STATE message of %s that is not {online, timestamp}", self.host_id
            )
            return None
        before = self._last_ts if online else self._online_ts
        if before is not None and ts < before:
            log.info("Sparkplug: ignoring a STATE of %s older than the one it follows", self.host_id)
            return None
        self._last_ts = ts
        self.online = online
        if online:
            self._online_ts = ts
        return "online" if online else "offline"
