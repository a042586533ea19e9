"""``appliance run | check-config | demo``: the daemon, its configuration check, the demo on bundled clips."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def start_logging(verbose: bool = False) -> None:
    """Logging to stderr or the journal, every line with camera and broker secrets redacted."""
    from appliance.redact import install_log_redaction
    from appliance.service.systemd import setup_logging

    setup_logging(verbose)
    install_log_redaction()


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate a config file and everything it names that can be checked without a camera or broker.

    The schema, then the bundle (signature, hashes, runtime), pose model files, password and TLS
    files and camera sources (:mod:`appliance.service.preflight`). Outside the systemd unit,
    ``${CREDENTIALS_DIRECTORY}`` stands for the unit's credential folder and is checked against the
    unit's ``LoadCredential=`` lines. Exit 0 when ``appliance run`` would accept it, 2 otherwise.
    """
    import os

    from appliance.config import ConfigError, key_locator, load_config
    from appliance.redact import redact
    from appliance.service.preflight import UNIT_CREDENTIALS_DIR, check_files_and_sources

    # outside the unit, ${CREDENTIALS_DIRECTORY} is the folder systemd will give the service
    unit_dir = {"CREDENTIALS_DIRECTORY": str(UNIT_CREDENTIALS_DIR)}
    env_defaults = {} if os.environ.get("CREDENTIALS_DIRECTORY") else unit_dir
    # the console's zones (in the state directory) are checked on their own: a note, or an error
    cfg = load_config(args.config, env_defaults=env_defaults, console_zones=False)
    findings = check_files_and_sources(cfg, args.config, args.unit)
    where = key_locator(args.config)
    for f in findings:
        if f.severity == "note":
            print(redact(f"{where(f.loc)}: note: {f.message}"))
    errors = [redact(f"{where(f.loc)}: {f.message}") for f in findings if f.severity == "error"]
    if errors:
        raise ConfigError("\n".join(errors))
    cams = ", ".join(f"{c.id} ({c.source})" for c in cfg.cameras)
    summary = f"appliance {cfg.appliance_id}; pose {cfg.pose.type}; cameras {cams}"
    print(redact(f"{args.config}: valid ({summary})"))
    return 0


def run_appliance(cfg, config_path: Path | None = None) -> int:
    """Start the daemon on a validated config and run until its streams end or a signal stops it.

    Under systemd: READY=1 once the model passed its smoke test and the sinks are open (the MQTT
    outbox accepts events whether or not the broker is up); cameras that are not up yet are retried
    in the background and the status says ``reconnecting``. Watchdog pings while every camera's
    processing loop turns, STATUS lines, RELOADING/READY around a SIGHUP reload, STOPPING=1 on SIGTERM.
    """
    import logging
    import signal
    import threading
    import time

    from appliance.config import ConfigError
    from appliance.service.daemon import Appliance
    from appliance.service.systemd import Notifier
    from calibration.live import register_live_commands

    log = logging.getLogger("appliance")
    notifier = Notifier()
    stop, reload_requested = threading.Event(), threading.Event()

    def on_signal(signum, _frame) -> None:
        if signum == signal.SIGHUP:
            reload_requested.set()
        else:
            stop.set()

    signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    previous = {sig: signal.signal(sig, on_signal) for sig in signals}
    app = Appliance(cfg, config_path=config_path)
    register_live_commands(app)  # cmd/recalibrate and cmd/learn, when the command channel is on

    def reload() -> None:
        if config_path is None:
            return
        notifier.reloading()
        try:
            app.reload_from_file()
        except ConfigError as exc:  # a bad edit keeps the running configuration
            log.error("reload refused, running configuration kept: %s", exc)
        notifier.ready(app.status_line())

    try:
        app.start()
        links = [s for s in app.sinks if hasattr(s, "connected")]
        deadline = time.monotonic() + 2.0  # a first status line that says more than "starting"
        while time.monotonic() < deadline and (
            not all(s.connected.is_set() for s in links) or any(w.state == "starting" for w in app.workers)
        ):
            time.sleep(0.1)
        reached = all(s.connected.is_set() for s in links)
        broker = "" if reached else "; broker not reached yet, buffering events"
        notifier.ready(app.status_line() + broker)
        app.wait(stop, notifier=notifier, reload=reload, reload_requested=reload_requested)
        notifier.stopping()
    finally:
        app.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("stopped: %s", app.status_line())
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """The daemon."""
    from appliance.config import load_config

    start_logging(args.verbose)
    return run_appliance(load_config(args.config), args.config)


def cmd_demo(args: argparse.Namespace) -> int:
    """The whole pipeline on the two bundled clips and the starter model; events to terminal and file."""
    from appliance.config import load_config, parse_config
    from appliance.errors import ApplianceError
    from appliance.service.demo import DEMO_CLIP, WORKCELL_CLIP, demo_config_text

    start_logging(args.verbose)
    if not (DEMO_CLIP.is_file() and WORKCELL_CLIP.is_file()):
        raise ApplianceError(
            "the demo clips come with the source tree, not with the device install (they would cost "
            "every device 3 MB): run `make demo` in a checkout of the repository"
        )
    text = demo_config_text(args.out, args.mqtt, args.realtime, args.web, args.state_dir)
    config_path = None
    if args.web is None:
        cfg = parse_config(text, "<demo>")
        print("console: `appliance demo --web 8080` shows this demo in a browser", file=sys.stderr)
    else:
        import secrets

        from appliance.web.users import UserStore

        # a file beside the state, so that zones saved in the console reload
        config_path = (args.state_dir or args.out.parent).resolve() / "demo-config.yaml"
        config_path.parent.mkdir(parents=True, exist_ok=True)
        config_path.write_text(text)
        cfg = load_config(config_path)
        password = secrets.token_urlsafe(12)  # this run's only: the demo has no default password either
        UserStore(cfg.state_dir / "web" / "users.json").set("demo", "admin", password)
        print(f"console: http://127.0.0.1:{args.web}/ (user demo, password {password}; Ctrl-C stops the "
              "demo)", file=sys.stderr)  # fmt: skip
    replaced = args.out.exists()
    args.out.unlink(missing_ok=True)  # each demo run writes its own events, not appended to the last
    code = run_appliance(cfg, config_path)
    note = " (the previous run's file was replaced)" if replaced else ""
    print(f"events written to {args.out}{note}", file=sys.stderr)
    return code


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register this module's subcommands."""
    p = sub.add_parser("run", help="run the appliance daemon")
    p.add_argument("--config", type=Path, required=True, help="YAML configuration file")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "check-config",
        help="validate a configuration file and the files, bundle and camera sources it names",
    )
    p.add_argument("config", type=Path)
    p.add_argument(
        "--unit",
        type=Path,
        help="the appliance.service whose LoadCredential= lines provide ${CREDENTIALS_DIRECTORY} "
        "(default: the installed one)",
    )
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser(
        "demo",
        help="the whole pipeline on the two bundled clips (people walking; a person dancing) "
        "with the starter model",
    )
    p.add_argument("--out", type=Path, default=Path("runs/demo/events.jsonl"), help="JSON-lines event file")
    p.add_argument("--mqtt", metavar="HOST:PORT", help="also publish to this MQTT broker")
    p.add_argument("--realtime", action="store_true", help="pace the clips at their frame rate")
    p.add_argument(
        "--web", type=int, metavar="PORT",
        help="serve the console on 127.0.0.1:PORT (a user for this run is printed) and loop the clips",
    )  # fmt: skip
    p.add_argument(
        "--state-dir", type=Path,
        help="use what `appliance calibrate` / `appliance learn` saved here (default: the --out folder)",
    )  # fmt: skip
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.set_defaults(func=cmd_demo)
