"""``appliance install-service | install-models | schemas``: setup-time installs, payload schemas."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_schemas(args: argparse.Namespace) -> int:
    """Write the JSON Schemas of the MQTT payloads (docs/schemas in the repository)."""
    import json

    from appliance.alarms.events import json_schemas

    args.out.mkdir(parents=True, exist_ok=True)
    for name, schema in json_schemas().items():
        path = args.out / f"{name}.schema.json"
        path.write_text(json.dumps(schema, indent=2) + "\n")
        print(f"wrote {path}")
    return 0


def cmd_install_service(args: argparse.Namespace) -> int:
    """Install the systemd units, sysusers/tmpfiles files and a config skeleton (never overwritten)."""
    from appliance.service.install import install_service

    for path in install_service(args.root, args.prefix):
        print(f"installed {path}")
    print("next: systemd-sysusers; systemd-tmpfiles --create; edit /etc/appliance/appliance.yaml; "
          "systemctl daemon-reload; systemctl enable --now appliance")  # fmt: skip
    return 0


def cmd_install_models(args: argparse.Namespace) -> int:
    """Extract the BlazePose model files from the pinned mediapipe wheel and npm tarball (setup time)."""
    from appliance.pose.model_files import install_pose_models

    dest = install_pose_models(args.dest, args.wheel, args.npm_tarball)
    print(f"pose models installed in {dest}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register this module's subcommands."""
    p = sub.add_parser("schemas", help="write the JSON Schemas of the MQTT payloads")
    p.add_argument("--out", type=Path, default=Path("docs/schemas"))
    p.set_defaults(func=cmd_schemas)

    p = sub.add_parser("install-service", help="install the systemd units and a configuration skeleton")
    p.add_argument("--root", type=Path, default=Path("/"), help="install into this root (packaging, tests)")
    p.add_argument("--prefix", default="/usr/local", help="where bin/appliance lives")
    p.set_defaults(func=cmd_install_service)

    p = sub.add_parser("install-models", help="install the BlazePose models (mediapipe wheel, npm tarball)")
    p.add_argument("--dest", type=Path, help="model folder (default: inside the package)")
    p.add_argument("--wheel", type=Path, help="an already downloaded mediapipe wheel (offline install)")
    p.add_argument(
        "--npm-tarball", type=Path, help="an already downloaded @mediapipe/pose tarball (offline install)"
    )
    p.set_defaults(func=cmd_install_models)
