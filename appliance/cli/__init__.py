"""``appliance``: the edge command (no torch). Each module registers its subcommands and runs them.

:mod:`.keypoint_files` (maps, score, extract), :mod:`.run` (run, check-config, demo),
:mod:`.learning` (calibrate, learn), :mod:`.models` (update, rollback, models), :mod:`.install`
(install-service, install-models, schemas), :mod:`.render` (render-event) and :mod:`.web`
(web-passwd). This package is the
composition root: the one place in ``appliance`` that wires in :mod:`calibration`'s commands.
"""

from __future__ import annotations

import argparse
import contextlib
import sys

from appliance import __version__
from appliance.cli import install, keypoint_files, learning, models, render, run, web
from appliance.errors import ApplianceError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="appliance", description="Edge anomaly appliance.")
    parser.add_argument("--version", action="version", version=f"appliance {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for commands in (keypoint_files, run, learning, models, install, render, web):
        commands.add_commands(sub)
    return parser


def _quiet_broken_pipe() -> int:
    """The reader of stdout went away (``appliance models | head``): stop quietly, like a Unix tool.

    stdout is pointed at /dev/null so the interpreter's final flush cannot raise again; 141 is what
    a shell reports for a command ended by SIGPIPE (128 + 13).
    """
    import os

    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 141


def main(argv: list[str] | None = None) -> int:
    from appliance.redact import redact

    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit flush
        return code
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except ApplianceError as exc:
        print(f"appliance: error: {redact(exc)}", file=sys.stderr)
        return exc.exit_code
    except Exception:  # a bug: the traceback, but never a camera or broker password in it
        import traceback

        print(redact(traceback.format_exc()), end="", file=sys.stderr)
        return 1
