"""Who may log in to the console: a user name, a role, and a salted scrypt hash of the password.

The file (``web.users_file``, default ``<state_dir>/web/users.json``, mode 0600) is written by
``appliance web-passwd`` and read by the daemon at each login, so adding a user needs no restart.
Roles, each including the ones before it: ``viewer`` reads, ``operator`` acknowledges and shelves
alarms, ``admin`` edits zones, calibrates and updates models. scrypt is the standard library's
(``hashlib.scrypt``, n=2**14, r=8, p=1: 16 MiB and about 50 ms per check), so a stolen file costs
an attacker that much per guess; there is no default user and no default password.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from pathlib import Path

from appliance.alarms.events import iso_utc
from appliance.errors import ApplianceError
from appliance.storage import write_atomic

ROLES = ("viewer", "operator", "admin")
N, R, P = 2**14, 8, 1
MIN_PASSWORD = 10
_DUMMY = "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 44  # checked for unknown users: same cost


class UsersError(ApplianceError):
    """The users file cannot be read or written, or a user name or password is not acceptable."""

    exit_code = 2


def hash_password(password: str) -> str:
    """``scrypt$N$r$p$salt$hash`` (base64), with a fresh 16-byte salt."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=N, r=R, p=P, dklen=32)
    return f"scrypt${N}${R}${P}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    try:
        kind, n, r, p, salt, digest = encoded.split("$")
        if kind != "scrypt":
            return False
        want = base64.b64decode(digest)
        got = hashlib.scrypt(
            password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=len(want)
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


class UserStore:
    """The users file: read on every check, written atomically with mode 0600."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def users(self) -> dict[str, dict[str, str]]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text())
            users = data["users"]
            if not isinstance(users, dict):
                raise TypeError
            return users
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UsersError(f"users file {self.path}: unreadable ({type(exc).__name__})") from None

    def set(self, name: str, role: str, password: str) -> None:
        """Add a user or change their role and password."""
        if (
            not name
            or len(name) > 64
            or not name.replace("-", "").replace("_", "").replace(".", "").isalnum()
        ):
            raise UsersError("user names are 1-64 letters, digits, '-', '_' or '.'")
        if role not in ROLES:
            raise UsersError(f"role must be one of {', '.join(ROLES)}")
        if len(password) < MIN_PASSWORD:
            raise UsersError(f"use a password of at least {MIN_PASSWORD} characters")
        users = self.users()
        users[name] = {"role": role, "hash": hash_password(password), "changed": iso_utc(time.time())}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps({"format": 1, "users": users}, indent=1) + "\n"
        write_atomic(self.path, body.encode())  # mkstemp: mode 0600 from the start
        os.chmod(self.path, 0o600)

    def check(self, name: str, password: str) -> str | None:
        """The user's role when the password is right, else None (same cost for unknown users)."""
        try:
            user = self.users().get(name)
        except UsersError:
            user = None
        encoded = user.get("hash", _DUMMY) if isinstance(user, dict) else _DUMMY
        ok = verify_password(password, encoded)
        role = user.get("role") if isinstance(user, dict) else None
        return role if ok and role in ROLES else None
