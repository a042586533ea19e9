"""``appliance update | rollback | models``: field updates of the model, undoing them, what is installed."""

from __future__ import annotations

import argparse
from pathlib import Path

from appliance.errors import ApplianceError


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
    from appliance.storage import display_path
    from appliance.updates.store import ModelStore

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
        previous = sites.rollback_logged(camera, ModelStore(cfg.state_dir).log, "with `appliance rollback`")
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
    from appliance.storage import display_path
    from appliance.updates.bad_versions import describe_bad
    from appliance.updates.store import ModelStore

    cfg = load_config(args.config)
    store = ModelStore(cfg.state_dir)
    state, versions, updates = store.state(), store.installed(), store.log.entries(args.updates)
    factory, bad = display_path(cfg.model.bundle), store.bad.all()
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
                  f"{describe_bad(b)}")  # fmt: skip
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


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register this module's subcommands."""
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
