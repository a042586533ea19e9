"""``appliance demo``: the product end to end on what ships in the package, on any fresh machine.

The clip is the last 19.5 s of OpenCV's ``vtest.avi`` sample (real CCTV, people walking, elevated
camera); the starter model is an LSTM-VAE trained on skeletons that the default pose backend
extracted from the first 60 s of the same footage (normal walking only, no overlap with the clip).
No broker is needed: events go to the terminal and a JSON-lines file, and to MQTT when one is given.
"""

from __future__ import annotations

from pathlib import Path

from appliance.config import ApplianceConfig, parse_config
from appliance.errors import ApplianceError

ASSETS = Path(__file__).resolve().parent / "assets"
DEMO_CLIP = ASSETS / "demo-walking.mp4"
STARTER_BUNDLE = ASSETS / "starter-walking-lstm-vae.tar"


DEMO_QUANTILE = "0.9"


def demo_threshold(bundle_path: Path = STARTER_BUNDLE) -> float | None:
    """The 90% quantile of the starter model's normal validation scores, or None if not recorded.

    The clip shows normal walking, so at the production default (the 99.5% quantile) it rightly
    raises nothing; at this demo sensitivity about one normal window in ten is above threshold and
    the event flow (start, update, end) can be seen within the clip's 20 s.
    """
    from appliance.bundle import open_bundle

    quantiles = open_bundle(bundle_path).manifest["threshold"].get("normal_quantiles", {})
    return quantiles.get(DEMO_QUANTILE)


def demo_config(events_file: Path, mqtt: str | None = None, realtime: bool = False) -> ApplianceConfig:
    sinks: list[dict] = [{"type": "stdout"}, {"type": "jsonl", "path": str(events_file)}]
    if mqtt:
        host, _, port = mqtt.rpartition(":")
        if not host or not port.isdigit():
            raise ApplianceError(f"--mqtt {mqtt!r}: expected HOST:PORT, e.g. 127.0.0.1:1883")
        sinks.append({"type": "mqtt", "host": host, "port": int(port), "topic_prefix": "appliance"})
    cfg = {
        "schema_version": 1,
        "appliance_id": "demo",
        "state_dir": str(events_file.parent),
        "model": {"bundle": str(STARTER_BUNDLE)},
        "pose": {"type": "blazepose"},
        "cameras": [{"id": "walkway", "source": str(DEMO_CLIP), "fps": None, "realtime": realtime}],
        "detector": {"threshold": demo_threshold()},
        "sinks": sinks,
    }
    import yaml

    return parse_config(yaml.safe_dump(cfg), "<demo>")
