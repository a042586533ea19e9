"""``appliance web-passwd USER --role viewer|operator|admin``: add a console user or change one's
password and role (a salted scrypt hash in the users file; there is no default user).
``appliance install-web-assets``: the console's chart library, from its pinned npm tarball."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from appliance.errors import ApplianceError


def users_file(args: argparse.Namespace) -> Path:
    if args.users_file is not None:
        return args.users_file
    from appliance.config import load_config

    cfg = load_config(args.config)
    return cfg.web.users_file or cfg.state_dir / "web" / "users.json"


def read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    if not sys.stdin.isatty():
        raise ApplianceError("no terminal to ask for the password: give it on stdin with --password-stdin")
    first = getpass.getpass("new password: ")
    if getpass.getpass("again: ") != first:
        raise ApplianceError("the two passwords differ; nothing changed")
    return first


def cmd_web_passwd(args: argparse.Namespace) -> int:
    from appliance.web.users import UserStore

    path = users_file(args)
    store = UserStore(path)
    store.set(args.user, args.role, read_password(args.password_stdin))
    print(f"{args.user} ({args.role}) saved in {path}; the console reads it at the next login")
    return 0


def cmd_install_web_assets(args: argparse.Namespace) -> int:
    """Install uPlot for the console's charts from its pinned npm tarball (setup time)."""
    from appliance.web.assets import UPLOT_VERSION, install_web_assets

    dest = install_web_assets(args.dest, args.npm_tarball)
    print(f"uPlot {UPLOT_VERSION} installed in {dest}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register this module's subcommands."""
    p = sub.add_parser("install-web-assets", help="install the console's chart library (pinned npm tarball)")
    p.add_argument("--dest", type=Path, help="folder (default: the console's static/vendor)")
    p.add_argument("--npm-tarball", type=Path, help="an already downloaded uplot tarball (offline install)")
    p.set_defaults(func=cmd_install_web_assets)

    p = sub.add_parser("web-passwd", help="add a web console user or change their password and role")
    p.add_argument("user", help="user name (letters, digits, '-', '_', '.')")
    p.add_argument(
        "--role", required=True, choices=["viewer", "operator", "admin"],
        help="viewer reads; operator also acknowledges and shelves; admin also changes settings",
    )  # fmt: skip
    where = p.add_mutually_exclusive_group()
    where.add_argument("--config", type=Path, default=Path("/etc/appliance/appliance.yaml"),
                       help="the appliance's configuration (its web.users_file or state_dir)")  # fmt: skip
    where.add_argument("--users-file", type=Path, help="write this users file instead")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin (scripts)")
    p.set_defaults(func=cmd_web_passwd)
