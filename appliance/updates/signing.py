"""Ed25519 signatures of model bundles: who may change what an appliance runs.

A bundle's manifest lists the SHA-256 of every file, so signing the manifest's exact bytes signs the
whole bundle. The signature travels inside the bundle as ``manifest.sig`` (JSON: algorithm, key id,
base64 signature). The appliance trusts the public keys (``*.pub``, PEM) in its trusted-keys folder;
a key id is the first 16 hex digits of the SHA-256 of the raw 32-byte public key, printed by
``appliance-export keygen`` so a technician can compare it with what the publisher announced.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from appliance.errors import ModelError

log = logging.getLogger("appliance.signing")  # the name journals and log filters know

SIGNATURE_FILE = "manifest.sig"
ALGORITHM = "ed25519"


class SignatureError(ModelError):
    """A bundle whose signature is missing, unknown or wrong; the message says which."""


@dataclass(frozen=True)
class Signer:
    """Who signed a bundle: the key id and the trusted key file's name (without .pub)."""

    key_id: str
    name: str

    def __str__(self) -> str:
        return f"{self.name} ({self.key_id})"


def _crypto():
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise ModelError(
            "signature checks need the 'cryptography' package: pip install cryptography"
        ) from None
    return serialization, ed25519, InvalidSignature


def key_id(public_key) -> str:
    serialization, _, _ = _crypto()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_key_pair(out: Path, force: bool = False) -> tuple[Path, Path, str]:
    """Write ``OUT.key`` (private, mode 0600) and ``OUT.pub``; return both paths and the key id."""
    serialization, ed25519, _ = _crypto()
    private_path, public_path = out.with_suffix(".key"), out.with_suffix(".pub")
    for p in (private_path, public_path):
        if p.exists() and not force:
            raise ModelError(f"{p} exists; pass --force to replace it")
    private = ed25519.Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    public = private.public_key()
    public_path.write_bytes(
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private_path, public_path, key_id(public)


def sign_manifest(bundle_dir: Path, private_key_path: Path) -> str:
    """Sign ``bundle_dir/manifest.json`` with an Ed25519 private key (PEM); returns the key id."""
    serialization, ed25519, _ = _crypto()
    try:
        private = serialization.load_pem_private_key(Path(private_key_path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ModelError(f"{private_key_path}: not a readable unencrypted PEM private key ({exc})") from None
    if not isinstance(private, ed25519.Ed25519PrivateKey):
        raise ModelError(f"{private_key_path}: not an Ed25519 key (make one with appliance-export keygen)")
    manifest = (Path(bundle_dir) / "manifest.json").read_bytes()
    kid = key_id(private.public_key())
    record = {
        "format": 1,
        "algorithm": ALGORITHM,
        "key_id": kid,
        "signed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "signature": base64.b64encode(private.sign(manifest)).decode("ascii"),
    }
    (Path(bundle_dir) / SIGNATURE_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return kid


def load_trusted_keys(folder: Path | None) -> dict[str, tuple[str, object]]:
    """key id -> (name, public key) of every ``*.pub`` in ``folder``; unreadable files are logged."""
    serialization, ed25519, _ = _crypto()
    keys: dict[str, tuple[str, object]] = {}
    if folder is None or not Path(folder).is_dir():
        return keys
    for path in sorted(Path(folder).glob("*.pub")):
        try:
            public = serialization.load_pem_public_key(path.read_bytes())
        except (OSError, ValueError) as exc:
            log.warning("trusted key %s is unreadable and ignored (%s)", path, exc)
            continue
        if not isinstance(public, ed25519.Ed25519PublicKey):
            log.warning("trusted key %s is not an Ed25519 public key and is ignored", path)
            continue
        keys[key_id(public)] = (path.stem, public)
    return keys


@dataclass(frozen=True)
class SignaturePolicy:
    """What the appliance accepts: bundles signed by a trusted key, or anything when allowed."""

    keys_dir: Path | None
    allow_unsigned: bool = False

    def verify(self, bundle_dir: Path) -> Signer | None:
        """The verified signer, or None for an unsigned bundle accepted under ``allow_unsigned``."""
        sig_path = Path(bundle_dir) / SIGNATURE_FILE
        try:
            signature = sig_path.read_bytes() if sig_path.is_file() else None
            manifest = (Path(bundle_dir) / "manifest.json").read_bytes()
        except OSError as exc:
            raise SignatureError(f"{bundle_dir}: cannot read the manifest or its signature ({exc})") from None
        return self.verify_bytes(manifest, signature, str(bundle_dir))

    def verify_bytes(self, manifest: bytes, signature_file: bytes | None, label: str) -> Signer | None:
        """Check a manifest's exact bytes against the contents of its ``manifest.sig`` (None: absent).

        Used before anything else of a bundle is read or written: ``label`` names the bundle in messages.
        """
        _, _, invalid_signature = _crypto()
        sig_label = f"{label}: {SIGNATURE_FILE}"
        hint = (
            "sign it with `appliance-export sign BUNDLE --key KEY` (or set model.allow_unsigned: true "
            "on a development appliance)"
        )
        if signature_file is None:
            if self.allow_unsigned:
                return None
            raise SignatureError(f"{label}: the bundle is not signed; {hint}")
        try:
            record = json.loads(signature_file.decode("utf-8"))
            kid, algorithm = str(record["key_id"]), record["algorithm"]
            signature = base64.b64decode(record["signature"], validate=True)
        except (ValueError, KeyError, TypeError) as exc:
            raise SignatureError(f"{sig_label}: malformed signature file ({exc!r})") from None
        if algorithm != ALGORITHM:
            raise SignatureError(f"{sig_label}: algorithm {algorithm!r} is not supported (only {ALGORITHM})")
        trusted = load_trusted_keys(self.keys_dir)
        if kid not in trusted:
            if self.allow_unsigned:
                log.warning("%s: signed by unknown key %s; accepted as unsigned (allow_unsigned)", label, kid)
                return None
            names = ", ".join(f"{n} ({k})" for k, (n, _) in trusted.items()) or "none"
            raise SignatureError(
                f"{label}: signed by key {kid}, which is not trusted here "
                f"(trusted keys in {self.keys_dir}: {names})"
            )
        name, public = trusted[kid]
        try:
            public.verify(signature, manifest)
        except invalid_signature:
            raise SignatureError(
                f"{label}: the manifest does not match its signature by {name} ({kid}): "
                "it was altered after signing"
            ) from None
        return Signer(kid, name)
