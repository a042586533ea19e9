"""``appliance demo``: the product end to end on what ships in the package, on any fresh machine.

Two cameras, real footage, the starter model at its production threshold:

- ``walkway``: the last 19.5 s of OpenCV's ``vtest.avi`` sample (real CCTV, several people
  walking, elevated camera). The starter model is an LSTM-VAE trained on skeletons that the
  default pose backend extracted from the first 60 s of the same footage, so this is normal work
  it has not seen: it should stay quiet.
- ``workcell``: a person dancing with arms out and raised (``pose_1.mp4`` from tfjs-models' pose
  test data, Apache-2.0, 30 fps): arms at shoulder height and above, which the walking model has
  never seen: it should raise anomalies. The starter was learned at 10 fps, so both clips are scored
  at 10 fps.

No broker is needed: events go to the terminal and a JSON-lines file, and to MQTT when one is given.
"""

from __future__ import annotations

from pathlib import Path

from appliance.config import ApplianceConfig, parse_config
from appliance.errors import ApplianceError

ASSETS = Path(__file__).resolve().parents[1] / "assets"  # appliance/assets
DEMO_CLIP = ASSETS / "demo-walking.mp4"
WORKCELL_CLIP = ASSETS / "demo-dancing.mp4"
STARTER_BUNDLE = ASSETS / "starter-walking-fused.tar"  # the default: map model + posture-motion
STARTER_LSTM_BUNDLE = ASSETS / "starter-walking-lstm-vae.tar"  # the paper's model alone


def demo_config(events_file: Path) -> ApplianceConfig:
    """The demo's configuration with its defaults (see :func:`demo_config_text`)."""
    return parse_config(demo_config_text(events_file), "<demo>")


def demo_config_text(
    events_file: Path,
    mqtt: str | None = None,
    realtime: bool = False,
    web_port: int | None = None,
    state_dir: Path | None = None,
) -> str:
    """The demo's configuration as YAML; with ``web_port`` the console is on 127.0.0.1 and the clips
    loop in real time, so there is something to watch until Ctrl-C (``appliance demo --web`` writes
    it to a file, so the console's zones editor has a configuration to reload)."""
    sinks: list[dict] = [{"type": "stdout"}, {"type": "jsonl", "path": str(events_file)}]
    if mqtt:
        host, _, port = mqtt.rpartition(":")
        if not host or not port.isdigit():
            raise ApplianceError(f"--mqtt {mqtt!r}: expected HOST:PORT, e.g. 127.0.0.1:1883")
        sinks.append({"type": "mqtt", "host": host, "port": int(port), "topic_prefix": "appliance"})
    live = web_port is not None
    cfg = {
        "schema_version": 1,
        "appliance_id": "demo",
        "state_dir": str(state_dir or events_file.parent),
        "model": {"bundle": str(STARTER_BUNDLE), "watch_inbox": False},  # no field updates in a demo
        "pose": {"type": "blazepose"},
        "cameras": [
            {"id": cam, "source": str(clip), "fps": None, "realtime": realtime or live, "loop": live}
            for cam, clip in (("walkway", DEMO_CLIP), ("workcell", WORKCELL_CLIP))
        ],
        "web": {"enabled": live, "bind": "127.0.0.1", "port": web_port or 8080},
        "detector": {"when_uncalibrated": "bundle_default"},  # the demo has no site to calibrate on
        "sinks": sinks,
    }
    import yaml

    return "# written by `appliance demo`; each run writes it again\n" + yaml.safe_dump(cfg, sort_keys=False)
