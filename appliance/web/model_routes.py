"""The console's model page: what is installed (versions, who signed each, which is active, which are
marked bad, each camera's site models, recent updates), uploading a bundle, and rolling back.

An upload takes the field-update path: written to ``<state_dir>/web/uploads`` and installed by the
model store exactly as a bundle dropped in the inbox (signature and hashes checked, a refusal leaves
the running model as it is; the log names it by its file name and the user); the daemon's main loop
then switches the cameras between frames. Admins only; every upload and rollback is in the console's
audit log with its outcome.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from aiohttp import web

from appliance.errors import ApplianceError
from appliance.web.replies import refusal

if TYPE_CHECKING:
    from appliance.web.server import Console

MAX_UPLOAD = 256 * 1024 * 1024  # a bundle is a few MB; the store refuses more than its own bound


def add_model_routes(webapp: web.Application, console: Console) -> None:
    r = ModelRoutes(console)
    webapp.router.add_get("/api/models", r.list)
    webapp.router.add_post("/api/models", r.upload)
    webapp.router.add_post("/api/models/rollback", r.rollback)


class ModelRoutes:
    def __init__(self, console: Console) -> None:
        self.c = console
        self.app = console.app

    async def list(self, request: web.Request) -> web.Response:
        self.c.require(request, "viewer")
        return web.json_response(await self.c.call(self._list))

    def _list(self) -> dict[str, Any]:
        store, sites = self.app.store, self.app.sites
        state = store.state()
        return {
            "active": state.active or "factory",
            "history": state.history,
            "versions": [asdict(v) for v in store.installed()],
            "site_models": {cam: v for c in self.app.cfg.cameras if (v := sites.versions(cam := c.id))},
            "updates": store.log.entries(10),
            "running": self.app.model.model_dump(),
            "provenance": _provenance(self.app.bundle.manifest) if self.app.bundle else None,
        }

    async def upload(self, request: web.Request) -> web.Response:
        session = self.c.require(request, "admin", change=True)
        if request.content_length is not None and request.content_length > MAX_UPLOAD:
            raise refusal(413, "larger than a model bundle can be")
        folder = self.app.cfg.state_dir / "web" / "uploads"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"upload-{secrets.token_hex(6)}.tar"
        size = 0
        with path.open("wb") as fh:
            async for chunk in request.content.iter_chunked(1 << 16):
                size += len(chunk)
                if size > MAX_UPLOAD:
                    fh.close()
                    path.unlink(missing_ok=True)
                    raise refusal(413, "larger than a model bundle can be")
                fh.write(chunk)
        name = re.sub(r"[^A-Za-z0-9._+-]", "_", request.headers.get("X-Bundle-Name", "bundle.tar"))[-100:]
        shown = f"console upload {name} by {session.user}"
        try:
            summary = await self.c.call(self.app.models.install_from_inbox, path, shown)
        except ApplianceError as exc:
            self.c.audit(request, "model_upload", session.user, f"refused: {exc}")
            raise refusal(422, str(exc)) from None
        finally:
            path.unlink(missing_ok=True)
        self.c.audit(request, "model_upload", session.user, summary)
        return web.json_response({"ok": True, "result": summary})

    async def rollback(self, request: web.Request) -> web.Response:
        session = self.c.require(request, "admin", change=True)
        try:
            version = await self.c.call(
                lambda: self.app.store.rollback(
                    self.app.cfg, reason="rollback", message=f"from the console by {session.user}"
                )
            )
        except ApplianceError as exc:
            self.c.audit(request, "model_rollback", session.user, f"refused: {exc}")
            raise refusal(409, str(exc)) from None
        self.c.audit(request, "model_rollback", session.user, f"now {version}")
        return web.json_response({"ok": True, "active": version})


def _provenance(manifest: dict[str, Any]) -> dict[str, Any]:
    """Where the running bundle comes from, as its manifest says: its kind and parts, when it was
    made, and the footage its figures were measured on."""
    model, evaluation = manifest.get("model", {}), manifest.get("evaluation", {})
    parts = model.get("parts") or {}
    return {
        "type": model.get("type"),
        "created_at": model.get("created_at"),
        "parts": [f"{p.get('name')} {p.get('version')} ({p.get('type')})" for p in parts.values()],
        "dataset": evaluation.get("dataset"),
        "split": evaluation.get("split"),
    }
