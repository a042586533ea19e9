"""Install the systemd units, sysusers.d/tmpfiles.d files and a configuration skeleton.

``python -m appliance.service.install [--root DIR] [--prefix /usr/local]`` copies ``systemd/`` from a
source checkout into ``DIR`` (``/`` on the device; a temporary directory in the tests), pointing the
units' ``ExecStart=`` at ``PREFIX/bin/appliance``. Units are always rewritten (they are ours);
``/etc/appliance/appliance.yaml`` is written only if it does not exist. Nothing is started: the
next steps are printed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[2]  # the checkout: systemd/ and config/ beside appliance/
UNIT_DIR = SOURCE / "systemd"
EXAMPLE_CONFIG = SOURCE / "config" / "appliance.example.yaml"
DEFAULT_BIN = "/usr/local/bin/appliance"

#: (file under systemd/, destination relative to the root, rewrite ExecStart's binary)
FILES: tuple[tuple[str, str, bool], ...] = (
    ("appliance.service", "etc/systemd/system/appliance.service", True),
    ("appliance-calibrate@.service", "etc/systemd/system/appliance-calibrate@.service", True),
    (
        "appliance.service.d/nvidia.conf.example",
        "etc/systemd/system/appliance.service.d/nvidia.conf.example",
        False,
    ),
    (
        "appliance.service.d/jetson.conf.example",
        "etc/systemd/system/appliance.service.d/jetson.conf.example",
        False,
    ),
    ("sysusers.d/appliance.conf", "etc/sysusers.d/appliance.conf", False),
    ("tmpfiles.d/appliance.conf", "etc/tmpfiles.d/appliance.conf", False),
)
CONFIG_DEST = "etc/appliance/appliance.yaml"


def config_skeleton() -> str:
    """``config/appliance.example.yaml`` adapted to the units: the password comes from the credential.

    The example already keeps its state in ``/var/lib/appliance`` (``StateDirectory=``) and the bundle
    under ``/var/lib/appliance/models``; the broker password becomes the ``LoadCredential=`` copy.
    """
    text = EXAMPLE_CONFIG.read_text()
    lines = []
    for line in text.splitlines():
        key = line.strip().split(":", 1)[0]
        if key == "password_file":
            indent = line[: len(line) - len(line.lstrip())]
            line = f"{indent}password_file: ${{CREDENTIALS_DIRECTORY}}/mqtt-password   # LoadCredential="
        elif key == "state_dir":
            line = "state_dir: /var/lib/appliance         # StateDirectory=appliance"
        elif key == "bundle":
            indent = line[: len(line) - len(line.lstrip())]
            line = f"{indent}bundle: /var/lib/appliance/models/current.tar   # a bundle from appliance-export"
        lines.append(line)
    header = "# Installed by appliance.service.install; edit freely, it is never overwritten.\n"
    return header + "\n".join(lines) + "\n"


def install_service(root: Path = Path("/"), prefix: str = "/usr/local") -> list[Path]:
    """Copy the units and their companions under ``root``; return the paths written.

    ``prefix`` is where ``appliance`` is installed on the target (``PREFIX/bin/appliance`` in
    ``ExecStart=``); it is not prefixed with ``root``. An existing configuration is left untouched.
    """
    root = Path(root)
    binary = f"{prefix.rstrip('/')}/bin/appliance"
    written: list[Path] = []
    for name, dest, rewrite in FILES:
        text = (UNIT_DIR / name).read_text()
        if rewrite:
            text = text.replace(DEFAULT_BIN, binary)
        target = root / dest
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(0o644)
        written.append(target)
    config = root / CONFIG_DEST
    if not config.exists():
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(config_skeleton())
        config.chmod(0o644)
        written.append(config)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m appliance.service.install", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--root", type=Path, default=Path("/"), help="install under this directory (default /)"
    )
    parser.add_argument(
        "--prefix", default="/usr/local", help="where appliance is installed (PREFIX/bin/appliance)"
    )
    args = parser.parse_args(argv)
    for path in install_service(args.root, args.prefix):
        print(f"wrote {path}")
    print(
        "next: systemd-sysusers && systemd-tmpfiles --create && systemctl daemon-reload\n"
        "      put the broker password in /etc/appliance/credentials/mqtt-password, edit "
        "/etc/appliance/appliance.yaml,\n"
        "      appliance check-config /etc/appliance/appliance.yaml && systemctl enable --now appliance"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
