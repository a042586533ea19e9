"""``appliance calibrate | learn``: a camera's threshold, or its own site model, learned from normal work."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from appliance.cli.run import start_logging
from appliance.errors import ApplianceError


def _footage_config(args: argparse.Namespace, what: str):
    """The configuration ``calibrate`` and ``learn`` run with: --config, or the demo's with --from."""
    from appliance.config import load_config

    if args.config is not None:
        return load_config(args.config)
    from appliance.service.demo import demo_config

    cfg = demo_config(args.state_dir / "events.jsonl").model_copy(update={"state_dir": args.state_dir})
    if args.from_path is None:
        raise ApplianceError(f"without --config, give the footage to {what} on with --from")
    args.camera = args.camera or cfg.cameras[0].id
    return cfg


def _how_the_daemon_uses(args: argparse.Namespace, state_dir: Path) -> str:
    if args.config is not None:
        return (
            f"a running `appliance run --config {args.config}` picks it up within a few seconds "
            "(no restart); the next start uses it too"
        )
    return f"use it with: appliance demo --state-dir {state_dir}"


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Learn a camera's alarm threshold from normal work (live, or recorded with --from)."""
    import json

    from calibration.run import calibrate

    start_logging(args.verbose)
    cfg = _footage_config(args, "calibrate")
    summary = calibrate(
        cfg, args.minutes, args.target_alarms_per_hour, args.camera, args.from_path, args.accept_drift
    )
    keys = ("camera", "threshold", "method", "windows", "footage_minutes", "target_alarms_per_hour")
    print(json.dumps({k: summary[k] for k in keys if k in summary}))
    for warning in summary.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    print(f"thresholds: {summary['thresholds_file']}; report: {summary['report']}")
    print(_how_the_daemon_uses(args, cfg.state_dir))
    return 0


def cmd_learn(args: argparse.Namespace) -> int:
    """Learn a camera's own site model (and its threshold) from normal work, on the device."""
    import json

    from calibration.learn import learn

    start_logging(args.verbose)
    cfg = _footage_config(args, "learn")
    if args.fps is not None and not 1.0 <= args.fps <= 120.0:
        raise ApplianceError(f"--fps {args.fps:g}: expected frames per second between 1 and 120")
    summary = learn(cfg, args.minutes, args.target_alarms_per_hour, args.camera, args.from_path, fps=args.fps)
    keys = ("camera", "site_model", "base", "threshold", "method", "footage_minutes", "tracks",
            "windows", "fold_windows", "trimmed_windows", "fit_seconds")  # fmt: skip
    print(json.dumps({k: summary[k] for k in keys if k in summary}))
    for warning in summary.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    print(f"site model {summary['site_model']} of camera {summary['camera']} saved in {summary['saved_to']} "
          f"and active; report: {summary['report']}")  # fmt: skip
    print(_how_the_daemon_uses(args, cfg.state_dir) + "; undo with `appliance rollback --camera "
          f"{summary['camera']}`")  # fmt: skip
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register this module's subcommands."""

    def footage_options(p: argparse.ArgumentParser, minutes: float, target: float) -> None:
        p.add_argument("--minutes", type=float, default=minutes, help="minutes of footage to learn from")
        p.add_argument(
            "--config", type=Path, help="appliance configuration (default: the demo's, with --from)"
        )
        p.add_argument("--camera", help="camera id (needed when the configuration has several)")
        p.add_argument(
            "--target-alarms-per-hour", type=float, default=target,
            help=f"false alarms per hour the plant accepts on normal work (default {target:g})",
        )  # fmt: skip
        p.add_argument("--from", dest="from_path", type=Path, help="recorded footage or a keypoint file")
        p.add_argument(
            "--state-dir", type=Path, default=Path("runs/state"), help="without --config: state folder"
        )
        p.add_argument("-v", "--verbose", action="store_true")

    p = sub.add_parser("calibrate", help="learn alarm thresholds from a few minutes of normal work")
    footage_options(p, 3.0, 0.125)
    p.add_argument(
        "--accept-drift", action="store_true", help="save even if the scores drifted during the run"
    )
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser(
        "learn", help="learn the camera's own site model and its threshold from normal work (no server)"
    )
    footage_options(p, 10.0, 2.0)
    p.add_argument(
        "--fps", type=float,
        help="the site model's time base: frames per second it learns and runs at (default: the base "
        "bundle's; e.g. 30 on a 30 fps camera for movements shorter than the base's 3 s windows)",
    )  # fmt: skip
    p.set_defaults(func=cmd_learn)
