"""``appliance``: the edge command (no torch): score keypoint files with a bundle, inspect skeleton maps."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import numpy as np

from appliance import __version__
from appliance.errors import ApplianceError
from appliance.models.runtimes import RUNTIMES


def _pick_sequence(path: Path, sequences: list, which: str):
    """A sequence by name (as ``score --only`` takes it), else by 0-based position."""
    by_name = {s.name: s for s in sequences}
    if which in by_name:
        return by_name[which]
    if which.isdigit() and int(which) < len(sequences):
        return sequences[int(which)]
    names = ", ".join(list(by_name)[:10]) + (", ..." if len(by_name) > 10 else "")
    raise ApplianceError(
        f"{path} has no sequence {which!r}; it holds {len(sequences)}: {names} "
        f"(give a name or a position from 0 to {len(sequences) - 1})"
    )


def _make_parent(out: Path) -> None:
    """Create the folder an output file goes into, or say clearly why it cannot be."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ApplianceError(f"cannot create the folder for {out}: {exc.strerror or exc}") from None
    if out.is_dir():
        raise ApplianceError(f"{out} is a folder; give a file name")


def cmd_maps(args: argparse.Namespace) -> int:
    """Render a keypoint file's skeleton maps as a contact sheet PNG (what the model will see)."""
    import cv2

    from appliance.features.skeleton_map import MapSpec, render_keypoints
    from appliance.keypoints.readers import read_keypoints

    spec = MapSpec()
    sequences = read_keypoints(args.keypoints)
    seq = _pick_sequence(args.keypoints, sequences, args.sequence)
    maps = render_keypoints(seq.keypoints, seq.layout, (seq.width, seq.height), spec)
    picks = np.linspace(0, len(maps) - 1, min(args.frames, len(maps))).astype(int)
    cols = min(10, len(picks))
    rows = int(np.ceil(len(picks) / cols))
    tile = spec.map_size + 2
    sheet = np.full((rows * tile, cols * tile), 96, dtype=np.uint8)
    for k, i in enumerate(picks):
        r, c = divmod(k, cols)
        sheet[r * tile + 1 : r * tile + 1 + spec.map_size, c * tile + 1 : c * tile + 1 + spec.map_size] = (
            maps[i] * 255
        )
    sheet = cv2.resize(sheet, None, fx=args.zoom, fy=args.zoom, interpolation=cv2.INTER_NEAREST)
    _make_parent(args.out)
    if not cv2.imwrite(str(args.out), sheet):
        raise ApplianceError(f"could not write {args.out}")
    print(
        f"{seq.name}: {len(maps)} frames ({seq.layout.name}, {seq.width}x{seq.height}); "
        f"{len(picks)} maps written to {args.out}"
    )
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    """Per-frame anomaly scores of a keypoint file with a model bundle (no torch)."""
    import csv

    from appliance.features.window import window_scores_to_frames
    from appliance.keypoints.readers import read_keypoints
    from appliance.models.bundle import open_bundle
    from appliance.models.metrics import auroc
    from appliance.models.sequence import at_model_rate, sequence_window_scores

    if args.out:
        _make_parent(args.out)  # before the scoring, not after it
    bundle = open_bundle(args.bundle)
    runtime, variant = bundle.open(args.runtime, args.variant, args.threads)
    window = bundle.contract.window
    sequences = read_keypoints(args.keypoints)
    if args.only:
        unknown = sorted(set(args.only) - {s.name for s in sequences})
        if unknown:
            raise ApplianceError(f"{args.keypoints} has no sequence(s) {', '.join(unknown)}")
        sequences = [s for s in sequences if s.name in set(args.only)]
    model_fps = bundle.contract.fps
    thinned = [at_model_rate(s, model_fps) for s in sequences]  # the daemon's time base
    resampled = {s.fps for s, t in zip(sequences, thinned, strict=True) if t is not s}
    sequences = thinned
    if resampled:
        rates = ", ".join(f"{r:g}" for r in sorted(resampled))
        print(
            f"scored at the model's {model_fps:g} fps (the file's {rates} fps thinned as a camera's would be)"
        )
    if args.by_label and all(seq.labels is None for seq in sequences):
        raise ApplianceError(
            f"--by-label needs per-frame labels, and {args.keypoints} has none "
            "(a label column: 0 normal, 1, 2, ... anomaly classes)"
        )
    rows, all_scores, all_labels = [], [], []
    for seq in sequences:
        scores = window_scores_to_frames(sequence_window_scores(bundle, runtime, seq), len(seq), window)
        labels = seq.labels if seq.labels is not None else np.full(len(seq), -1)
        rows += [
            (seq.name, int(f), s, int(lab)) for f, s, lab in zip(seq.frames, scores, labels, strict=True)
        ]
        if seq.labels is not None:
            all_scores.append(scores)
            all_labels.append(seq.labels)
    short = sum(1 for seq in sequences if len(seq) < window)
    note = f"; {short} shorter than the {window}-frame window have no score" if short else ""
    where = f"{bundle.name} ({variant} on {runtime.name})"
    print(f"{where}: {len(rows)} frames of {len(sequences)} sequences scored{note}")
    if all_scores:
        s, y = np.concatenate(all_scores), np.concatenate(all_labels)
        keep = np.isfinite(s)
        print(f"frame-level AUROC against the file's labels: {auroc(s[keep], y[keep] > 0):.4f}")
        if args.by_label:  # each anomaly label's frames against the normal (label 0) frames alone
            s, y = s[keep], y[keep]
            print(f"AUROC per label (its frames against the {int((y == 0).sum())} normal frames):")
            for label in sorted(set(y.tolist()) - {0}):
                pick = (y == label) | (y == 0)
                value = auroc(s[pick], y[pick] == label)
                shown = f"{value:.4f}" if np.isfinite(value) else "n/a (no normal frames)"
                print(f"  label {label}: {shown} ({int((y == label).sum())} frames)")
    if args.out:
        try:
            with args.out.open("w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(["sequence", "frame", "score", "label"])
                for name, frame, score, label in rows:
                    w.writerow(
                        [
                            name,
                            frame,
                            "" if not np.isfinite(score) else f"{score:.6g}",
                            "" if label < 0 else label,
                        ]
                    )
        except OSError as exc:
            raise ApplianceError(f"cannot write {args.out}: {exc.strerror or exc}") from None
        print(f"scores written to {args.out}")
    return 0


def _setup_logging(verbose: bool = False) -> None:
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
    cfg = load_config(args.config, env_defaults={} if os.environ.get("CREDENTIALS_DIRECTORY") else unit_dir)
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

    from appliance.config import ConfigError, load_config
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
    app = Appliance(cfg)
    register_live_commands(app)  # cmd/recalibrate and cmd/learn, when the command channel is on

    def reload() -> None:
        if config_path is None:
            return
        notifier.reloading()
        try:
            app.reload(load_config(config_path))
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

    _setup_logging(args.verbose)
    return run_appliance(load_config(args.config), args.config)


def cmd_demo(args: argparse.Namespace) -> int:
    """The whole pipeline on the two bundled clips and the starter model; events to terminal and file."""
    from appliance.service.demo import demo_config

    _setup_logging(args.verbose)
    cfg = demo_config(args.out, mqtt=args.mqtt, realtime=args.realtime)
    if args.state_dir is not None:
        cfg = cfg.model_copy(update={"state_dir": args.state_dir})
    replaced = args.out.exists()
    args.out.unlink(missing_ok=True)  # each demo run writes its own events, not appended to the last
    code = run_appliance(cfg)
    note = " (the previous run's file was replaced)" if replaced else ""
    print(f"events written to {args.out}{note}", file=sys.stderr)
    return code


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

    _setup_logging(args.verbose)
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

    _setup_logging(args.verbose)
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


def cmd_extract(args: argparse.Namespace) -> int:
    """Skeletons of a video, tracked per person, to a keypoint CSV (training or calibration data)."""
    from appliance.config import BlazePoseConfig
    from appliance.keypoints.table import write_keypoints_csv
    from appliance.pose.extract import extract_tracks
    from appliance.pose.registry import create_backend

    if args.min_track_frames < 1:
        raise ApplianceError(f"--min-track-frames must be at least 1, not {args.min_track_frames}")
    backend = create_backend(BlazePoseConfig())
    sequences = extract_tracks(
        args.video, backend, start=args.start, frames=args.frames, min_length=args.min_track_frames
    )
    if not sequences:
        raise ApplianceError(f"{args.video}: no person was tracked for {args.min_track_frames} frames")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_keypoints_csv(args.out, sequences)
    frames = sum(len(s) for s in sequences)
    print(
        f"{len(sequences)} tracks of at least {args.min_track_frames} frames, {frames} skeleton frames "
        f"written to {args.out}"
    )
    if args.min_track_frames < 30:
        print("note: tracks shorter than a model's window (30 frames in the shipped bundles) go unscored")
    return 0


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
    """Extract the BlazePose model files from the pinned mediapipe wheel (setup time, not run time)."""
    from appliance.pose.model_files import install_pose_models

    dest = install_pose_models(args.dest, args.wheel)
    print(f"pose models installed in {dest}")
    return 0


def _quiet_store_log() -> None:
    """The CLI prints the outcome once; the update log file keeps the record."""
    import logging

    logging.getLogger("appliance.model_store").addHandler(logging.NullHandler())


def cmd_update(args: argparse.Namespace) -> int:
    """Install a model bundle as a field update; the running daemon switches to it between frames."""
    from appliance.config import load_config
    from appliance.updates.store import ModelStore

    _quiet_store_log()
    cfg = load_config(args.config)
    store = ModelStore(cfg.state_dir)
    result = store.install(args.bundle, cfg, allow_downgrade=args.allow_downgrade, force=args.force)
    signer = f"signed by {result.signer}" if result.signer else "UNSIGNED (model.allow_unsigned is set)"
    again = " (already installed)" if result.already_installed else ""
    print(
        f"installed {result.bundle_name} as {result.version_id}{again}, {signer}; smoke test score "
        f"{result.smoke_score:.4f}. It is now the active model: a running appliance switches to it "
        "within a few seconds (`appliance models` shows it; `appliance rollback` undoes it)."
    )
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    """Undo the latest model change: a camera's site model (--camera, or the only camera's), else the
    active bundle version (or --to VERSION)."""
    from appliance.config import load_config
    from appliance.models.site import SiteModelStore
    from appliance.updates.store import ModelStore, display_path

    _quiet_store_log()
    cfg = load_config(args.config)
    sites = SiteModelStore(cfg.state_dir)
    camera = args.camera
    if camera is None and args.to is None and not args.bundle:
        with_site = [c.id for c in cfg.cameras if sites.active_id(c.id) is not None]
        if len(with_site) > 1:
            raise ApplianceError(
                f"cameras {', '.join(with_site)} run site models: name one with --camera, or pass --bundle "
                "to roll back the bundle"
            )
        camera = with_site[0] if with_site else None
    if camera is not None:
        if camera not in {c.id for c in cfg.cameras}:
            raise ApplianceError(f"no camera {camera!r} in {args.config}")
        previous = sites.rollback(camera)
        ModelStore(cfg.state_dir).record(
            "rollback",
            "ok",
            version=f"site:{camera}/{previous or 'bundle'}",
            message="site model rolled back",
        )
        what = f"site model {previous}" if previous else "the bundle (no site model)"
        print(f"rolled back: camera {camera} scores with {what}; a running appliance switches within seconds")
        return 0
    target = ModelStore(cfg.state_dir).rollback(cfg, to=args.to, force=args.force)
    what = f"the configured bundle ({display_path(cfg.model.bundle)})" if target == "factory" else target
    print(f"rolled back: {what} is the active model; a running appliance switches within a few seconds")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """List installed model versions, the active one, who signed each, and recent updates."""
    import json
    from dataclasses import asdict

    from appliance.config import load_config
    from appliance.models.site import SiteModelStore
    from appliance.updates.store import ModelStore, display_path

    cfg = load_config(args.config)
    store = ModelStore(cfg.state_dir)
    state, versions, updates = store.state(), store.installed(), store.updates(args.updates)
    factory, bad = display_path(cfg.model.bundle), store.bad_versions()
    sites = SiteModelStore(cfg.state_dir)
    site_models = {c.id: sites.versions(c.id) for c in cfg.cameras if sites.versions(c.id)}
    if args.json:
        print(json.dumps({"active": state.active or "factory", "history": state.history,
                          "versions": [asdict(v) for v in versions], "factory": factory,
                          "bad": list(bad.values()), "site_models": site_models, "updates": updates},
                         indent=2))  # fmt: skip
        return 0
    print(f"{'':2}{'version':34} {'model':32} {'signed by':28} installed")
    for v in versions:
        signer = f"{v.signer['name']} ({v.signer['key_id']})" if v.signer else "unsigned"
        mark = "* " if v.active else "  "
        flag = "  BAD" if v.bad else ""
        print(f"{mark}{v.id:34} {v.name + ' ' + v.version:32} {signer:28} {v.installed_at}{flag}")
    mark = "* " if state.active is None else "  "
    print(f"{mark}{'factory':34} {'(the bundle in the configuration)':32} {'':28} {factory}")
    for camera, learned in site_models.items():
        print(f"\nsite models of camera {camera} (`appliance learn`; * = active, else the bundle):")
        for m in learned:
            p, base = m.get("provenance", {}), m.get("base", {})
            mark = "* " if m["active"] else "  "
            folds = "+".join(str(n) for n in p.get("fold_windows", [])) or "?"
            windows = f"{p.get('windows', '?')} windows (folds {folds})"
            base_name = f"{base.get('name')} {base.get('version')} ({str(base.get('manifest_sha256'))[:12]})"
            threshold = m.get("threshold", {}).get("threshold", float("nan"))
            print(f"{mark}{m['id']:6} learned {p.get('learned_at', '?')} from "
                  f"{p.get('footage_minutes', '?')} min, {p.get('tracks', '?')} tracks, {windows}; "
                  f"base {base_name}; threshold {threshold:.2f}; "
                  f"software {p.get('software_version', '?')}")  # fmt: skip
    if bad:
        print("\nmarked bad (refused unless `appliance update --force`):")
        for b in bad.values():
            model = b.get("model") or {}
            print(f"  {b.get('version', '?')} {model.get('name', '')} {model.get('version', '')}: "
                  f"{store.describe_bad(b)}")  # fmt: skip
    if updates:
        print("\nrecent updates:")
        for u in updates:
            model = u.get("model") or {}
            source = display_path(u["source"]) if u.get("source") else ""
            what = u.get("version") or source
            name = f" {model.get('name')} {model.get('version')}" if model else ""
            message = " ".join(str(u.get("message", "")).split())
            if what == source:  # the path is shown once, in front
                message = message.removeprefix(f"{u['source']}: ").removeprefix(f"{source}: ")
            note = f": {message}" if message else ""
            print(f"  {u['time']} {u['action']:13} {u['result']:8} {what}{name}{note}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="appliance", description="Edge anomaly appliance.")
    parser.add_argument("--version", action="version", version=f"appliance {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("maps", help="render a keypoint file's skeleton maps to a PNG contact sheet")
    p.add_argument("--keypoints", type=Path, required=True, help="keypoint file or OpenPose JSON folder")
    p.add_argument("--out", type=Path, required=True, help="PNG to write")
    p.add_argument(
        "--sequence",
        default="0",
        metavar="NAME|N",
        help="which sequence (video/track) of the file: its name, as `score --only` takes it, or its "
        "0-based position (default: the first)",
    )
    p.add_argument("--frames", type=int, default=30, help="how many frames, evenly spaced")
    p.add_argument("--zoom", type=int, default=4)
    p.set_defaults(func=cmd_maps)

    p = sub.add_parser("score", help="per-frame anomaly scores of a keypoint file with a model bundle")
    p.add_argument("--bundle", type=Path, required=True, help="bundle directory or .tar")
    p.add_argument("--keypoints", type=Path, required=True, help="keypoint file or OpenPose JSON folder")
    p.add_argument("--out", type=Path, help="CSV of sequence, frame, score, label")
    p.add_argument("--runtime", choices=RUNTIMES, default="onnxruntime")
    p.add_argument("--variant", help="bundle variant (default: int8 if the bundle has it for the runtime)")
    p.add_argument("--threads", type=int, default=1, help="inference threads")
    p.add_argument("--only", nargs="+", metavar="NAME", help="score only these sequences (videos/tracks)")
    p.add_argument(
        "--by-label", action="store_true",
        help="also print the AUROC of each anomaly label (its frames against the normal frames)",
    )  # fmt: skip
    p.set_defaults(func=cmd_score)

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
        "--state-dir", type=Path,
        help="use what `appliance calibrate` / `appliance learn` saved here (default: the --out folder)",
    )  # fmt: skip
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.set_defaults(func=cmd_demo)

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

    config_help = "appliance configuration (for its state_dir, trusted keys and runtime)"
    default_config = Path("/etc/appliance/appliance.yaml")
    p = sub.add_parser("update", help="install a signed model bundle (.tar or folder) and make it active")
    p.add_argument("bundle", type=Path)
    p.add_argument("--config", type=Path, default=default_config, help=config_help)
    p.add_argument(
        "--allow-downgrade", action="store_true", help="install a lower version of the active model"
    )
    p.add_argument(
        "--force", action="store_true", help="install a bundle the appliance marked bad (failed starts)"
    )
    p.set_defaults(func=cmd_update)

    p = sub.add_parser("rollback", help="make the previous model version active again")
    p.add_argument("--to", help="a version id from `appliance models` (or 'factory')")
    p.add_argument("--config", type=Path, default=default_config, help=config_help)
    p.add_argument("--force", action="store_true", help="with --to: run a version marked bad anyway")
    p.add_argument("--camera", help="undo this camera's site model (`appliance learn`) instead")
    p.add_argument(
        "--bundle", action="store_true", help="roll back the bundle even when a site model is active"
    )
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser("models", help="installed model versions, the active one, signers, recent updates")
    p.add_argument("--config", type=Path, default=default_config, help=config_help)
    p.add_argument("--json", action="store_true", help="machine-readable")
    p.add_argument("--updates", type=int, default=10, help="how many recent updates to show")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("extract", help="skeletons of a video file, tracked per person, to a keypoint CSV")
    p.add_argument("--video", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="keypoint CSV to write")
    p.add_argument("--start", type=int, default=0, help="first frame")
    p.add_argument("--frames", type=int, help="how many frames (default: to the end)")
    p.add_argument(
        "--min-track-frames", type=int, default=30, metavar="N",
        help="drop tracks seen in fewer than N frames (default 30, a model's window: shorter ones are "
        "never scored)",
    )  # fmt: skip
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("schemas", help="write the JSON Schemas of the MQTT payloads")
    p.add_argument("--out", type=Path, default=Path("docs/schemas"))
    p.set_defaults(func=cmd_schemas)

    p = sub.add_parser("install-service", help="install the systemd units and a configuration skeleton")
    p.add_argument("--root", type=Path, default=Path("/"), help="install into this root (packaging, tests)")
    p.add_argument("--prefix", default="/usr/local", help="where bin/appliance lives")
    p.set_defaults(func=cmd_install_service)

    p = sub.add_parser("install-models", help="install the BlazePose model files from the mediapipe wheel")
    p.add_argument("--dest", type=Path, help="model folder (default: inside the package)")
    p.add_argument("--wheel", type=Path, help="an already downloaded mediapipe wheel (offline install)")
    p.set_defaults(func=cmd_install_models)
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
