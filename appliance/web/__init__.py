"""The local web console (``web:`` in the configuration; the ``[web]`` extra: aiohttp and
prometheus-client): what a technician and a shift supervisor see of the appliance, without a shell
and without video. :mod:`.server` serves it, :mod:`.routes` answers, :mod:`.users` and
:mod:`.sessions` decide who may do what, :mod:`.metrics` is Prometheus ``/metrics``, ``static/`` is
the page itself.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from appliance.service.daemon import Appliance
    from appliance.web.server import Console

log = logging.getLogger("appliance.web")


def open_console(app: Appliance) -> tuple[Console | None, str | None]:
    """Start the console when ``web.enabled``: (the console, None), or (None, why it is not serving)
    when it cannot start; the appliance goes on watching, and the log and the status say why."""
    if not app.cfg.web.enabled:
        return None, None
    try:
        from appliance.web.server import Console
    except ImportError as exc:
        why = f"the console's packages are missing ({exc.name}): pip install 'appliance[web]'"
        log.error("web.enabled is set but %s; the appliance goes on without a console", why)
        return None, why
    console = Console(app)
    if not console.start():
        return None, console.error
    app.sinks.append(console)  # a sink: it remembers recent events, and closing it stops the server
    return console, None
