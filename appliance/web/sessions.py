"""Console logins: sessions held in memory (a restart logs everyone out), a CSRF token per session,
and a limit on failed logins per address and per user name."""

from __future__ import annotations

import secrets
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field

COOKIE = "appliance_session"
RANK = {"viewer": 0, "operator": 1, "admin": 2}
MAX_SESSIONS = 1000


@dataclass
class Session:
    user: str
    role: str
    csrf: str
    last_seen: float = field(default_factory=time.monotonic)

    def may(self, role: str) -> bool:
        """Whether this session's role includes ``role``."""
        return RANK[self.role] >= RANK[role]


class SessionStore:
    """Random 256-bit session ids -> :class:`Session`; idle ones expire."""

    def __init__(self, idle_s: float) -> None:
        self.idle_s = idle_s
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self, user: str, role: str) -> tuple[str, Session]:
        sid = secrets.token_urlsafe(32)
        session = Session(user, role, secrets.token_urlsafe(32))
        with self._lock:
            self._expire()
            if len(self._sessions) >= MAX_SESSIONS:  # the oldest idle one goes
                oldest = min(self._sessions, key=lambda k: self._sessions[k].last_seen)
                del self._sessions[oldest]
            self._sessions[sid] = session
        return sid, session

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        with self._lock:
            session = self._sessions.get(sid)
            now = time.monotonic()
            if session is None or now - session.last_seen > self.idle_s:
                self._sessions.pop(sid, None)
                return None
            session.last_seen = now
            return session

    def drop(self, sid: str | None) -> None:
        with self._lock:
            self._sessions.pop(sid or "", None)

    def _expire(self) -> None:
        now = time.monotonic()
        for sid in [k for k, s in self._sessions.items() if now - s.last_seen > self.idle_s]:
            del self._sessions[sid]


ADDRESS_FACTOR = 4
"""An address may fail this many times more often than one user name (several people behind one
proxy or NAT address should not lock each other out; one guesser still runs into the user's limit)."""


class LoginLimiter:
    """At most ``per_minute`` failed logins in any minute per user name, and ``ADDRESS_FACTOR`` times
    that per address (keys ``user:...`` and ``addr:...``)."""

    def __init__(self, per_minute: float) -> None:
        self.per_minute = per_minute
        self._failures: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def blocked(self, *keys: str) -> bool:
        now = time.monotonic()
        with self._lock:
            for key in keys:
                q = self._failures[key]
                while q and now - q[0] > 60.0:
                    q.popleft()
                limit = self.per_minute * (ADDRESS_FACTOR if key.startswith("addr:") else 1)
                if len(q) >= limit:
                    return True
        return False

    def failed(self, *keys: str) -> None:
        now = time.monotonic()
        with self._lock:
            for key in keys:
                self._failures[key].append(now)
            if len(self._failures) > 10_000:  # a flood of names: forget the quiet ones
                for k in [k for k, q in self._failures.items() if not q or now - q[-1] > 60.0]:
                    del self._failures[k]
