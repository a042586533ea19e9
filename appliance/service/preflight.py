"""``appliance check-config``: everything ``appliance run`` would refuse, found without a camera or a broker.

Beyond the schema (:mod:`appliance.config`), a configuration can name a bundle that is missing or
altered, pose model files that were never installed, a password or TLS file nobody can read, or a
camera source that can never work (a malformed URL, a ``/dev/video7`` that does not exist). Each
is a :class:`Finding` naming the key; errors make ``check-config`` fail, notes are information.

Outside the systemd unit ``${CREDENTIALS_DIRECTORY}`` is not set. ``check-config`` then reads it as
the directory systemd will give the service (:data:`UNIT_CREDENTIALS_DIR`) and checks each file
under it through the unit's ``LoadCredential=NAME:SOURCE`` lines instead: the credential must be
declared and its source file must exist (PID 1 reads it as root, so a source this user cannot read
is a note, not an error).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from appliance.config import ApplianceConfig, BlazePoseConfig, KeypointsPoseConfig, OnnxPoseConfig
from appliance.errors import ApplianceError
from appliance.redact import redact

UNIT_NAME = "appliance.service"
#: $CREDENTIALS_DIRECTORY of the unit (systemd: /run/credentials/<unit name>)
UNIT_CREDENTIALS_DIR = Path("/run/credentials") / UNIT_NAME
UNIT_DIRS = (
    "etc/systemd/system",
    "usr/local/lib/systemd/system",
    "usr/lib/systemd/system",
    "lib/systemd/system",
)
#: where systemd looks for a LoadCredential= source given by name only (systemd.exec(5))
CREDSTORE_DIRS = ("etc/credstore", "run/credstore", "usr/lib/credstore")


@dataclass(frozen=True)
class Finding:
    """One result of the check: ``loc`` is the key path in the configuration."""

    loc: tuple[Any, ...]
    message: str
    severity: Literal["error", "note"] = "error"


@dataclass(frozen=True)
class UnitCredentials:
    """The ``LoadCredential=`` entries of an installed unit (drop-ins included)."""

    unit: Path
    root: Path  # file system root the unit was installed under ("/" on the device)
    sources: dict[str, Path]  # credential name -> source file as PID 1 will read it

    def source(self, name: str) -> Path | None:
        return self.sources.get(name)


def find_unit(config_path: Path, explicit: Path | None = None) -> Path | None:
    """The installed ``appliance.service``: ``explicit``, else beside an ``<root>/etc/appliance/``
    configuration (an image or a test root), else in the system unit directories."""
    if explicit is not None:
        return explicit
    candidates = []
    config = config_path.resolve()
    if config.parent.name == "appliance" and config.parent.parent.name == "etc":
        root = config.parent.parent.parent
        candidates += [root / d / UNIT_NAME for d in UNIT_DIRS]
    candidates += [Path("/") / d / UNIT_NAME for d in UNIT_DIRS]
    return next((c for c in candidates if c.is_file()), None)


def _unit_root(unit: Path) -> Path:
    unit = unit.resolve()
    for d in UNIT_DIRS:
        depth = len(Path(d).parts)
        if unit.parent.parts[-depth:] == Path(d).parts:
            return unit.parents[depth]
    return Path("/")


def read_unit_credentials(unit: Path) -> UnitCredentials:
    """``LoadCredential=`` / ``LoadCredentialEncrypted=`` of ``unit`` and its ``.d/*.conf`` drop-ins.

    An empty assignment resets the list, as systemd does. A source given by name only is looked up in
    the credential stores. Absolute sources of a unit installed under another root (an image being
    prepared, the tests) are read under that root.
    """
    root = _unit_root(unit)
    files = [unit, *sorted(unit.with_name(unit.name + ".d").glob("*.conf"))]
    sources: dict[str, Path] = {}
    for path in files:
        section = ""
        with contextlib.suppress(OSError, UnicodeDecodeError):
            for raw in path.read_text(encoding="utf-8").splitlines():
                line = raw.strip()
                if line.startswith("[") and line.endswith("]"):
                    section = line[1:-1]
                    continue
                key, sep, value = line.partition("=")
                if (
                    section != "Service"
                    or not sep
                    or key.strip()
                    not in (
                        "LoadCredential",
                        "LoadCredentialEncrypted",
                    )
                ):
                    continue
                value = value.strip()
                if not value:
                    sources.clear()
                    continue
                name, _, src = value.partition(":")
                sources[name] = _credential_source(root, name, src)
    return UnitCredentials(unit, root, sources)


def _credential_source(root: Path, name: str, src: str) -> Path:
    if src.startswith("/"):
        return root / src.lstrip("/")
    stores = [root / d / (src or name) for d in CREDSTORE_DIRS]
    return next((p for p in stores if p.exists()), stores[0])


def _readable(path: Path) -> str | None:
    """Why ``path`` cannot be read as a file by this user, or None."""
    try:
        with path.open("rb") as fh:
            fh.read(1)
    except IsADirectoryError:
        return "a directory, not a file"
    except OSError as exc:
        return (exc.strerror or str(exc)).lower()
    return None


def _secret_files(cfg: ApplianceConfig) -> Iterator[tuple[tuple[Any, ...], Path]]:
    """Every file setting of the sinks (password_file, tls ca/cert/key, ...), with its key path."""

    def walk(model: BaseModel, loc: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], Path]]:
        for name in type(model).model_fields:
            value = getattr(model, name)
            if isinstance(value, Path) and (name.endswith("_file") or name.endswith("_files")):
                yield (*loc, name), value
            elif isinstance(value, BaseModel):
                yield from walk(value, (*loc, name))

    for i, sink in enumerate(cfg.sinks):
        yield from walk(sink, ("sinks", i))
    if cfg.web.enabled:  # the console's TLS pair (its users file may not exist yet: _check_web)
        for name in ("tls_cert_file", "tls_key_file"):
            if (path := getattr(cfg.web, name)) is not None:
                yield ("web", name), path


def _check_credential(loc: tuple[Any, ...], path: Path, cred_dir: Path, unit: Path | None) -> Finding:
    """A file under ``$CREDENTIALS_DIRECTORY`` seen from outside the unit: check the unit provides it."""
    name = path.relative_to(cred_dir).parts[0]
    where = (
        f"{path} is the systemd credential {name!r} of {UNIT_NAME} ($CREDENTIALS_DIRECTORY is set only there)"
    )
    if unit is None:
        return Finding(
            loc,
            f"{where}; no installed {UNIT_NAME} was found to check that it provides it "
            "(give the unit with --unit)",
            "note",
        )
    creds = read_unit_credentials(unit)
    source = creds.source(name)
    if source is None:
        return Finding(loc, f"{where}, but {unit} has no LoadCredential={name}:FILE, so it will not exist")
    shown = source if creds.root == Path("/") else f"/{source.relative_to(creds.root)} (in {creds.root})"
    declared = f"{where}: LoadCredential= in {unit} reads it from {shown}"
    if not source.exists():
        return Finding(loc, f"{declared}, which does not exist (systemd would refuse to start the unit)")
    why = _readable(source)
    if why is None:
        return Finding(loc, f"{declared}: found, readable", "note")
    if "permission" in why:
        return Finding(
            loc, f"{declared}: found, not readable by this user (systemd reads it as root)", "note"
        )
    return Finding(loc, f"{declared}: {why}")


def check_files_and_sources(
    cfg: ApplianceConfig, config_path: Path, unit: Path | None = None
) -> list[Finding]:
    """What ``appliance run`` would refuse in ``cfg`` beyond the schema, and notes worth reading.

    ``unit`` is the installed ``appliance.service`` (default: :func:`find_unit`).
    """
    findings = _check_bundle(cfg)
    findings += _check_pose(cfg)
    findings += _check_cameras(cfg)
    findings += _check_web(cfg)
    findings += _check_console_zones(cfg)
    env_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    cred_dir = Path(env_dir) if env_dir else UNIT_CREDENTIALS_DIR
    unit_path = find_unit(config_path, unit)
    for loc, path in _secret_files(cfg):
        under_unit = not env_dir and path.is_relative_to(cred_dir) and path != cred_dir
        if under_unit and not path.exists():
            findings.append(_check_credential(loc, path, cred_dir, unit_path))
        elif why := _readable(path):
            findings.append(Finding(loc, f"{path}: {why}"))
    return findings


def _check_web(cfg: ApplianceConfig) -> list[Finding]:
    """The console: its packages, a TLS pair that loads, who can log in, and clear text on a network."""
    web = cfg.web
    if not web.enabled:
        return []
    findings = []
    try:
        import aiohttp  # noqa: F401
        import prometheus_client  # noqa: F401
    except ImportError as exc:
        missing = f"the console's packages are missing ({exc.name}): pip install 'appliance[web]'"
        findings.append(Finding(("web", "enabled"), f"{missing} (`appliance run` would go on without it)"))
    cert, key = web.tls_cert_file, web.tls_key_file
    if cert is not None and key is not None and _readable(cert) is None and _readable(key) is None:
        import ssl

        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(str(cert), str(key))
        except (OSError, ssl.SSLError) as exc:
            why = f"{cert} and {key} do not load as a certificate and its key ({exc})"
            findings.append(Finding(("web", "tls_cert_file"), why))
    elif cert is None and web.bind not in ("127.0.0.1", "::1", "localhost"):
        clear = "passwords and session cookies cross the network in clear"
        why = f"the console listens on {web.bind} without TLS: {clear} (give tls_cert_file and tls_key_file)"
        findings.append(Finding(("web", "bind"), why, "note"))
    users_file = web.users_file or cfg.state_dir / "web" / "users.json"
    try:
        from appliance.web.users import UserStore

        count = len(UserStore(users_file).users())
    except ImportError:
        return findings
    except ApplianceError as exc:
        return [*findings, Finding(("web", "users_file"), f"{exc} (not checked)", "note")]
    if count == 0:
        why = f"nobody can log in yet ({users_file} has no user): appliance web-passwd NAME --role admin"
        findings.append(Finding(("web", "users_file"), why, "note"))
    return findings


def _check_console_zones(cfg: ApplianceConfig) -> list[Finding]:
    """Zones saved in the web console replace the file's for the cameras they name: say so."""
    from appliance.config import ConfigError
    from appliance.config.console_zones import console_zones_path, read_console_zones

    path = console_zones_path(cfg.state_dir)
    try:
        saved = read_console_zones(cfg.state_dir)
    except ConfigError as exc:
        if isinstance(exc.__context__, PermissionError):
            why = f"{path}: not readable by this user; the console's zones were not checked"
            return [Finding(("state_dir",), why, "note")]
        return [Finding(("state_dir",), str(exc))]
    findings = []
    for i, cam in enumerate(cfg.cameras):
        if (edit := saved.cameras.get(cam.id)) is not None:
            names = ", ".join(z.name for z in edit.zones) or "none"
            saved_by = f"saved in the console by {edit.saved_by} at {edit.saved_at}"
            why = f"camera {cam.id}: its zones ({names}) come from {path}, {saved_by}, not from this file"
            findings.append(Finding(("cameras", i, "zones"), why, "note"))
    return findings


def _check_bundle(cfg: ApplianceConfig) -> list[Finding]:
    """The configured bundle opens as ``run`` opens it: signature (if any), hashes, runtime, variant."""
    from appliance.models.bundle import open_bundle
    from appliance.updates.signing import SignaturePolicy

    m = cfg.model
    try:
        bundle = open_bundle(m.bundle, signatures=SignaturePolicy(m.trusted_keys, allow_unsigned=True))
        bundle.open(m.runtime, m.variant, m.threads, m.placement())
    except ApplianceError as exc:
        return [Finding(("model", "bundle"), str(exc))]
    except Exception as exc:  # a runtime that cannot load the graph: say so instead of a traceback
        return [Finding(("model", "bundle"), f"{m.bundle}: cannot be loaded on {m.runtime}: {exc}")]
    return []


def _check_pose(cfg: ApplianceConfig) -> list[Finding]:
    pose = cfg.pose
    try:
        if isinstance(pose, BlazePoseConfig):
            from appliance.pose.model_files import find_model_files

            find_model_files(pose.model_dir, pose.landmark_model)
        elif isinstance(pose, OnnxPoseConfig):
            if why := _readable(pose.model):
                return [Finding(("pose", "model"), f"{pose.model}: {why}")]
        elif isinstance(pose, KeypointsPoseConfig):
            from appliance.keypoints.readers import read_keypoints

            read_keypoints(pose.path, layout=pose.layout)
    except ApplianceError as exc:
        key = {"blazepose": "model_dir", "onnx": "model", "keypoints": "path"}[pose.type]
        return [Finding(("pose", key), str(exc))]
    return []


def _check_cameras(cfg: ApplianceConfig) -> list[Finding]:
    """Sources that can never work are errors; a V4L2 index not present now is a note (USB replug)."""
    from appliance.capture.sources import source_problem

    if isinstance(cfg.pose, KeypointsPoseConfig):
        return []
    findings = []
    for i, cam in enumerate(cfg.cameras):
        loc = ("cameras", i, "source")
        if why := source_problem(cam.source):
            what = why if str(cam.source) in why else f"{cam.source}: {why}"
            findings.append(Finding(loc, redact(f"camera {cam.id}: {what}")))
        elif isinstance(cam.source, int) and not Path(f"/dev/video{cam.source}").exists():
            findings.append(
                Finding(loc, f"camera {cam.id}: /dev/video{cam.source} is not present now", "note")
            )
    return findings
