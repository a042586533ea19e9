"""Offline field updates: signed bundles, refusals that keep the old model, interrupted installs,
hot reload under a running daemon, automatic and manual rollback, calibration across versions.

Bundles are the shipped starter bundle re-signed (optionally re-released under another version) with
keys made here; faults are real bundles with real defects (a flipped byte, an edited manifest, a
sequence graph exported with a fixed batch of 1), except the power cut, which is simulated by
killing the installing process at each step (``os._exit``: no cleanup, like a power loss to the
process; the fsyncs cover the disk).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from appliance.config import load_config
from appliance.errors import UpdateRefused
from appliance.models.bundle import safe_extract, sha256_file
from appliance.service.demo import DEMO_CLIP, WORKCELL_CLIP
from appliance.service.demo import STARTER_LSTM_BUNDLE as STARTER_BUNDLE  # versions 1.0.x of the map model
from appliance.updates.signing import generate_key_pair, sign_manifest
from appliance.updates.store import ModelStore
from export.bundle import sign_bundle, write_tar
from tests.conftest import ROOT, Broker, write_appliance_config


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    private, public, kid = generate_key_pair(d / "acme")
    trusted = d / "trusted-keys"
    trusted.mkdir()
    shutil.copy(public, trusted / "acme.pub")
    other_private, _, _ = generate_key_pair(d / "stranger")
    return {"private": private, "trusted": trusted, "key_id": kid, "stranger": other_private}


@pytest.fixture(scope="module")
def releases(keys, tmp_path_factory):
    """The starter model signed by the trusted key as versions 1.2.1, 1.2.2 and 1.2.3."""
    d = tmp_path_factory.mktemp("releases")
    return {
        v: sign_bundle(STARTER_BUNDLE, keys["private"], d / f"starter-{v}.tar", model_version=v)[0]
        for v in ("1.2.1", "1.2.2", "1.2.3")
    }


def config(tmp_path: Path, keys: dict, camera: dict | None = None, **model) -> Path:
    camera = camera or {"id": "workcell", "source": str(WORKCELL_CLIP), "fps": None}
    return write_appliance_config(
        tmp_path / "appliance.yaml",
        camera,
        model={"bundle": str(STARTER_BUNDLE), "trusted_keys": str(keys["trusted"]), **model},
        detector={"when_uncalibrated": "bundle_default"},
    )


def appliance_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "appliance.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def unpacked(tar: Path, tmp_path: Path) -> Path:
    return safe_extract(tar, tmp_path / "unpacked")


def edit_and_resign(tar: Path, tmp_path: Path, key: Path, change) -> Path:
    """A publisher's faulty release: the manifest edited, then properly signed."""
    root = unpacked(tar, tmp_path)
    manifest = json.loads((root / "manifest.json").read_text())
    change(manifest)
    (root / "manifest.json").write_text(json.dumps(manifest))
    sign_manifest(root, key)
    return write_tar(root, tmp_path / "faulty.tar")


def tar_with_member(tmp_path: Path, info: tarfile.TarInfo, payload: bytes = b"") -> Path:
    path = tmp_path / "crafted.tar"
    with tarfile.open(path, "w") as tar:
        info.size = len(payload) if info.isfile() else 0
        tar.addfile(info, io.BytesIO(payload) if info.isfile() else None)
    return path


def snapshot(state_dir: Path) -> tuple:
    store = ModelStore(state_dir)
    pointer = store.pointer.read_bytes() if store.pointer.exists() else None
    versions = sorted(p.name for p in store.versions.glob("*")) if store.versions.exists() else []
    return pointer, versions


# -- signing and installing ---------------------------------------------------------------------


def test_keygen_makes_a_private_key_only_its_owner_reads_and_sign_cli_signs_a_tar(tmp_path):
    export = [sys.executable, "-m", "export.cli"]
    out = subprocess.run([*export, "keygen", "--out", str(tmp_path / "k")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "k.key").stat().st_mode & 0o777 == 0o600
    kid = out.stdout.split()[2]
    signed = tmp_path / "s.tar"
    sign = [*export, "sign", str(STARTER_BUNDLE), "--key", str(tmp_path / "k.key"), "--out", str(signed)]
    out = subprocess.run(sign, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    sig = json.loads((unpacked(tmp_path / "s.tar", tmp_path) / "manifest.sig").read_text())
    assert sig["key_id"] == kid and sig["algorithm"] == "ed25519"


def test_a_signed_bundle_installs_becomes_active_and_is_listed_with_its_signer(tmp_path, keys, releases):
    cfg = config(tmp_path, keys)
    out = appliance_cli("update", str(releases["1.2.1"]), "--config", str(cfg))
    assert out.returncode == 0, out.stderr
    assert f"signed by acme ({keys['key_id']})" in out.stdout
    listing = json.loads(appliance_cli("models", "--config", str(cfg), "--json").stdout)
    (version,) = listing["versions"]
    assert listing["active"] == version["id"] == "0001-starter-walking-lstm-vae-1.2.1"
    assert version["signer"] == {"key_id": keys["key_id"], "name": "acme"} and version["active"]
    assert listing["updates"][-1]["action"] == "install" and listing["updates"][-1]["result"] == "ok"
    text = appliance_cli("models", "--config", str(cfg)).stdout
    assert "* 0001-starter-walking-lstm-vae-1.2.1" in text and "acme" in text
    assert not (tmp_path / "state" / "models" / "staging").exists()


def _unsigned(tmp_path, keys, releases):
    return STARTER_BUNDLE


def _stranger(tmp_path, keys, releases):
    return sign_bundle(STARTER_BUNDLE, keys["stranger"], tmp_path / "stranger.tar")[0]


def _tampered_file(tmp_path, keys, releases):
    root = unpacked(releases["1.2.1"], tmp_path)
    model = root / "onnx-int8" / "sequence.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    return write_tar(root, tmp_path / "tampered.tar")


def _tampered_manifest(tmp_path, keys, releases):
    root = unpacked(releases["1.2.1"], tmp_path)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["threshold"]["default"] = 1e9  # silence every alarm
    (root / "manifest.json").write_text(json.dumps(manifest))
    return write_tar(root, tmp_path / "tampered.tar")


def _truncated(tmp_path, keys, releases):
    data = releases["1.2.1"].read_bytes()
    path = tmp_path / "truncated.tar"
    path.write_bytes(data[: len(data) // 2])
    return path


def _traversal(tmp_path, keys, releases):
    return tar_with_member(tmp_path, tarfile.TarInfo("../escaped.txt"), b"x")


def _absolute(tmp_path, keys, releases):
    return tar_with_member(tmp_path, tarfile.TarInfo(str(tmp_path / "absolute.txt")), b"x")


def _symlink(tmp_path, keys, releases):
    info = tarfile.TarInfo("bundle/manifest.json")
    info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
    return tar_with_member(tmp_path, info)


def _device(tmp_path, keys, releases):
    info = tarfile.TarInfo("bundle/dev")
    info.type = tarfile.CHRTYPE
    return tar_with_member(tmp_path, info)


def _schema(tmp_path, keys, releases):
    return edit_and_resign(releases["1.2.1"], tmp_path, keys["private"], lambda m: m.update(schema_version=2))


def _layouts(tmp_path, keys, releases):
    return edit_and_resign(
        releases["1.2.1"],
        tmp_path,
        keys["private"],
        lambda m: m["input_contract"].update(joint_layouts=["coco17"]),
    )


def _map_size(tmp_path, keys, releases):
    return edit_and_resign(
        releases["1.2.1"], tmp_path, keys["private"], lambda m: m["input_contract"].update(map_size=32)
    )


def _unknown_input(tmp_path, keys, releases):
    return edit_and_resign(
        releases["1.2.1"], tmp_path, keys["private"], lambda m: m["input_contract"].update(depth_maps=True)
    )


def _smoke(tmp_path, keys, releases):
    def change(m):
        for v in m["variants"].values():
            v["reference_score"] *= 1.5

    return edit_and_resign(releases["1.2.1"], tmp_path, keys["private"], change)


REFUSALS = {
    "unsigned": (_unsigned, "the bundle is not signed"),
    "unknown key": (_stranger, "which is not trusted here"),
    "tampered file": (_tampered_file, "onnx-int8/sequence.onnx does not match its SHA-256"),
    "tampered manifest": (_tampered_manifest, "does not match its signature by acme"),
    "truncated tar": (_truncated, "truncated"),
    "path traversal": (_traversal, "unsafe path '../escaped.txt'"),
    "absolute path": (_absolute, "unsafe path"),
    "symlink": (_symlink, "is a link or device"),
    "device": (_device, "is a link or device"),
    "wrong schema version": (_schema, "schema version 2 is not supported"),
    "contract: joint layout": (_layouts, "do not include 'blazepose33'"),
    "contract: model files": (_map_size, "but the input contract says [32, 32]"),
    "contract: unknown input": (_unknown_input, "asks for depth_maps"),
    "smoke test": (_smoke, "smoke test scored the reference window"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_bad_bundle_is_refused_with_a_clear_message_and_the_old_model_stays(case, tmp_path, keys, releases):
    make, needle = REFUSALS[case]
    cfg = load_config(config(tmp_path, keys))
    store = ModelStore(cfg.state_dir)
    store.install(releases["1.2.1"], cfg)  # the model that must stay active
    before = snapshot(cfg.state_dir)
    bad = make(tmp_path, keys, releases)
    with pytest.raises(UpdateRefused) as refused:
        store.install(bad, cfg)
    assert needle in str(refused.value)
    assert "staging" not in str(refused.value)  # the message names the technician's file, not ours
    assert snapshot(cfg.state_dir) == before
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "absolute.txt").exists()
    assert not any(store.staging.glob("*"))
    last = store.log.entries(1)[-1]
    assert (last["action"], last["result"]) == ("install", "refused") and needle in last["message"]
    # and the appliance still starts on the old model
    from appliance.service.daemon import Appliance

    loaded = Appliance(cfg).models.load_initial()
    assert loaded.version_id == "0001-starter-walking-lstm-vae-1.2.1"


def test_refusals_on_the_command_line_are_one_line_and_exit_3(tmp_path, keys):
    cfg = config(tmp_path, keys)
    out = appliance_cli("update", str(STARTER_BUNDLE), "--config", str(cfg))
    assert out.returncode == 3
    assert out.stderr.strip().count("\n") == 0 and "Traceback" not in out.stderr
    assert out.stderr.startswith(f"appliance: error: {STARTER_BUNDLE}: the bundle is not signed")


def test_an_oversized_bundle_is_refused(tmp_path, keys, releases):
    cfg = load_config(config(tmp_path, keys))
    store = ModelStore(cfg.state_dir, max_bundle_bytes=1 << 20)
    with pytest.raises(UpdateRefused, match="more than 1 MiB of content"):
        store.install(releases["1.2.1"], cfg)
    assert snapshot(cfg.state_dir) == (None, [])


def test_a_runtime_variant_the_device_cannot_run_is_refused(tmp_path, keys, releases):
    """A release built without the LiteRT variant, for a device told to run LiteRT."""
    onnx_only = edit_and_resign(
        releases["1.2.1"], tmp_path, keys["private"], lambda m: m["variants"].pop("tflite-int8")
    )
    cfg = load_config(config(tmp_path, keys, runtime="tflite"))
    with pytest.raises(UpdateRefused, match="no variant for runtime 'tflite'"):
        ModelStore(cfg.state_dir).install(onnx_only, cfg)


def test_allow_unsigned_accepts_an_unsigned_bundle_and_says_so(tmp_path, keys):
    cfg = config(tmp_path, keys, allow_unsigned=True)
    out = appliance_cli("update", str(STARTER_BUNDLE), "--config", str(cfg))
    assert out.returncode == 0, out.stderr
    assert "UNSIGNED" in out.stdout
    listing = json.loads(appliance_cli("models", "--config", str(cfg), "--json").stdout)
    assert listing["versions"][0]["signer"] is None


def test_a_directory_bundle_installs_like_its_tar(tmp_path, keys, releases):
    cfg = load_config(config(tmp_path, keys))
    result = ModelStore(cfg.state_dir).install(unpacked(releases["1.2.2"], tmp_path), cfg)
    assert result.version_id.endswith("-1.2.2") and result.signer.name == "acme"


def test_rollback_steps_back_through_versions_to_the_configured_bundle(tmp_path, keys, releases):
    cfg = config(tmp_path, keys)
    for v in ("1.2.1", "1.2.2"):
        assert appliance_cli("update", str(releases[v]), "--config", str(cfg)).returncode == 0
    state = ModelStore(tmp_path / "state").state
    assert state().active == "0002-starter-walking-lstm-vae-1.2.2"
    out = appliance_cli("rollback", "--config", str(cfg))
    assert out.returncode == 0 and state().active == "0001-starter-walking-lstm-vae-1.2.1", out.stderr
    out = appliance_cli("rollback", "--config", str(cfg))
    assert out.returncode == 0 and state().active is None and "configured bundle" in out.stdout
    out = appliance_cli("rollback", "--config", str(cfg))
    assert out.returncode == 3 and "nothing to roll back to" in out.stderr
    out = appliance_cli("rollback", "--to", "0002-starter-walking-lstm-vae-1.2.2", "--config", str(cfg))
    assert out.returncode == 0 and state().active == "0002-starter-walking-lstm-vae-1.2.2"
    actions = [(u["action"], u["result"]) for u in ModelStore(tmp_path / "state").log.entries()]
    assert actions.count(("rollback", "ok")) == 3 and ("rollback", "failed") not in actions


def test_only_the_last_n_versions_are_kept_and_a_reinstall_reuses_its_copy(tmp_path, keys, releases):
    cfg = load_config(config(tmp_path, keys, keep_versions=2))
    store = ModelStore(cfg.state_dir)
    for v in ("1.2.1", "1.2.2", "1.2.3"):
        store.install(releases[v], cfg)
    kept = sorted(p.name for p in store.versions.glob("*"))
    assert kept == ["0002-starter-walking-lstm-vae-1.2.2", "0003-starter-walking-lstm-vae-1.2.3"]
    assert store.state().history == ["0002-starter-walking-lstm-vae-1.2.2"]
    store.rollback(cfg)
    again = store.install(releases["1.2.3"], cfg)
    assert again.already_installed and again.version_id == "0003-starter-walking-lstm-vae-1.2.3"
    assert store.state().active == again.version_id


# -- power loss ---------------------------------------------------------------------------------

CRASH_SCRIPT = """
import os, sys, pathlib
from appliance.config import load_config
from appliance.updates.store import ModelStore

step, cfg_path, bundle = sys.argv[1:4]

class Crashing(ModelStore):
    def reached(self, name):
        if name == step:
            os._exit(9)  # the process dies here, mid-install: no cleanup, no finally

if step == "extracting":  # die half-way through writing the first extracted file
    original = pathlib.Path.write_bytes
    def half(self, data):
        with open(self, "wb") as fh:
            fh.write(data[: len(data) // 2])
        os._exit(9)
    pathlib.Path.write_bytes = half

cfg = load_config(cfg_path)
Crashing(cfg.state_dir).install(pathlib.Path(bundle), cfg)
sys.exit(0)
"""

STEPS_BEFORE_SWITCH = ["extracting", "staged", "verified", "compatible", "smoke_tested", "unpacked"]
STEPS_AFTER_SWITCH = ["switched", "pruned"]


@pytest.mark.parametrize("step", STEPS_BEFORE_SWITCH + STEPS_AFTER_SWITCH)
def test_an_install_killed_at_any_step_leaves_the_old_or_the_new_model_complete(
    step, tmp_path, keys, releases
):
    from appliance.service.daemon import Appliance

    cfg_path = config(tmp_path, keys, keep_versions=2)
    cfg = load_config(cfg_path)
    store = ModelStore(cfg.state_dir)
    store.install(releases["1.2.1"], cfg)
    store.install(releases["1.2.2"], cfg)  # so the prune step has something to delete
    crashed = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, step, str(cfg_path), str(releases["1.2.3"])],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert crashed.returncode == 9, crashed.stderr
    # restart: the daemon's own start-up path verifies every hash and runs the smoke test
    loaded = Appliance(cfg).models.load_initial()
    expected = "1.2.2" if step in STEPS_BEFORE_SWITCH else "1.2.3"
    assert loaded.bundle.manifest["model"]["version"] == expected
    assert loaded.version_id == store.state().active
    # and the next install cleans up whatever the crash left and succeeds (1.2.1 is lower: a downgrade)
    result = store.install(releases["1.2.1"], cfg, allow_downgrade=True)
    assert result.version_id == store.state().active
    assert not any(store.staging.glob("*"))


def test_a_daemon_restarted_after_an_interrupted_install_runs_a_complete_model(tmp_path, keys, releases):
    cfg_path = config(tmp_path, keys)
    cfg = load_config(cfg_path)
    ModelStore(cfg.state_dir).install(releases["1.2.1"], cfg)
    crashed = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, "unpacked", str(cfg_path), str(releases["1.2.2"])],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert crashed.returncode == 9
    out = appliance_cli("run", "--config", str(cfg_path))
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert events and {e["model"]["version"] for e in events} == {"1.2.1"}


# -- the running daemon -------------------------------------------------------------------------


class FrameLog:
    """Wraps a camera worker's per-frame step to record what each frame was scored with."""

    def __init__(self, worker) -> None:
        self.frames: list[tuple[int, float, str, dict]] = []  # index, time, model version, scores
        process, pipeline = worker.process, worker.pipeline

        def logged(frame):
            # a frame whose scoring raised is recorded too (with no scores): it ran on that model
            worker.last_scores = {}
            try:
                process(frame)
            finally:
                scores = dict(worker.last_scores)
                self.frames.append((frame.index, time.monotonic(), worker.pipeline.model.version, scores))

        worker.process = logged
        original_on_result = worker.on_result

        def on_result(result):
            worker.last_scores = dict(result.scores)
            if original_on_result is not None:
                original_on_result(result)

        worker.on_result = on_result
        del pipeline

    def versions(self) -> list[str]:
        return [f[2] for f in self.frames]


def run_in_background(app) -> tuple[threading.Event, threading.Thread]:
    stop = threading.Event()
    thread = threading.Thread(target=app.wait, args=(stop,), daemon=True)
    thread.start()
    return stop, thread


def wait_until(predicate, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_hot_reload_switches_models_between_frames_keeping_camera_and_mqtt(
    tmp_path, keys, releases, broker: Broker
):
    """A running daemon on the real dancing clip publishing to a real broker; `appliance update` in
    another process: frames stay contiguous, scoring continues on the next frame, events carry the
    new version, the MQTT session and the camera are never reopened."""
    from appliance.service.daemon import Appliance

    sub = broker.subscribe("appliance/#")
    camera = {"id": "workcell", "source": str(WORKCELL_CLIP), "fps": None, "loop": True}
    cfg_path = write_appliance_config(
        tmp_path / "appliance.yaml", camera,
        model={"bundle": str(STARTER_BUNDLE), "trusted_keys": str(keys["trusted"])},
        detector={"when_uncalibrated": "bundle_default", "start_windows": 3, "update_interval_s": 0.5},
        sinks=[{"type": "mqtt", "host": broker.host, "port": broker.port, "topic_prefix": "appliance"}],
    )  # fmt: skip
    app = Appliance(load_config(cfg_path))
    app.start()
    log = FrameLog(app.workers[0])
    stop, thread = run_in_background(app)
    try:
        wait_until(lambda: len(log.frames) >= 45, what="frames on the factory model")
        out = appliance_cli("update", str(releases["1.2.1"]), "--config", str(cfg_path))
        assert out.returncode == 0, out.stderr
        wait_until(lambda: log.versions().count("1.2.1") >= 45, what="frames on the new model")
    finally:
        stop.set()
        thread.join(30)
        app.stop()
    sub.wait_for("appliance/test-box/available", 2)
    sub.stop()
    indices = [f[0] for f in log.frames]
    # the starter takes every third frame of the 30 fps clip (its 10 fps); a loop's restart may
    # shorten one step. A frame skipped across the switch would show as a longer step.
    steps = np.diff(indices)
    assert steps.min() >= 1 and steps.max() <= 3, "a frame was skipped or repeated across the switch"
    switch = log.versions().index("1.2.1")
    assert set(log.versions()[:switch]) == {"1.2.0"} and set(log.versions()[switch:]) == {"1.2.1"}
    assert log.frames[switch][3], "the first frame on the new model was not scored (window refilled)"
    times = np.array([f[1] for f in log.frames])
    gaps = np.diff(times)
    assert gaps[switch - 1] < max(1.0, 5 * np.median(gaps)), (
        f"frame gap at the switch {gaps[switch - 1]:.2f} s"
    )
    events = [json.loads(p) for p in sub.messages("appliance/test-box/workcell/events")]
    old = [e for e in events if e["model"]["version"] == "1.2.0"]
    new = [e for e in events if e["model"]["version"] == "1.2.1"]
    assert old and new and old[-1]["type"] == "end" and old[-1]["end_reason"] == "model_changed"
    assert new[0]["type"] == "start"
    assert sub.messages("appliance/test-box/available").count("online") == 1  # one MQTT session
    statuses = [json.loads(p) for p in sub.messages("appliance/test-box/status")]
    switched = [s for s in statuses if s["model"]["version"] == "1.2.1"]
    assert switched, "no status message reported the new model"
    s = switched[0]
    assert s["model_install"]["signer"] == {"key_id": keys["key_id"], "name": "acme"}
    assert s["model_install"]["allow_unsigned"] is False
    assert (
        s["last_model_update"]["action"] in ("install", "load") and s["last_model_update"]["result"] == "ok"
    )


def test_a_version_that_fails_to_load_in_the_daemon_is_rolled_back_and_the_camera_keeps_running(
    tmp_path, keys, releases
):
    from appliance.service.daemon import Appliance

    camera = {"id": "workcell", "source": str(WORKCELL_CLIP), "fps": None, "loop": True}
    cfg = load_config(config(tmp_path, keys, camera))
    store = ModelStore(cfg.state_dir)
    store.install(releases["1.2.1"], cfg)
    app = Appliance(cfg)
    app.start()
    try:
        store.install(releases["1.2.2"], cfg)
        broken = store.bundle_dir(store.state().active) / "onnx-int8" / "sequence.onnx"
        broken.write_bytes(broken.read_bytes()[:1000])  # the disk lost the file after the install
        frames = app.workers[0].stats.frames
        app.poll_model_store()
        assert store.state().active == "0001-starter-walking-lstm-vae-1.2.1"
        assert app.loaded.version_id == "0001-starter-walking-lstm-vae-1.2.1"
        wait_until(lambda: app.workers[0].stats.frames > frames + 10, what="frames after the rollback")
        status = app.status()
        assert status["last_model_update"]["action"] == "auto_rollback"
        assert "failed to load" in status["last_model_update"]["message"]
        assert app.workers[0].state == "streaming" and not app.workers[0].failed
    finally:
        app.stop()


def _static_batch_release(keys, releases, tmp_path: Path) -> Path:
    """A real exporter fault: the ONNX sequence graph's batch fixed at 1. It passes the smoke test
    (one window) and fails as soon as two people are scored in one call (on runtime onnxruntime)."""
    import onnx

    root = unpacked(releases["1.2.2"], tmp_path)
    manifest = json.loads((root / "manifest.json").read_text())
    for variant in manifest["variants"].values():
        if variant["runtime"] != "onnxruntime":
            continue
        path = root / variant["sequence"]
        graph = onnx.load(path)
        for inp in graph.graph.input:
            inp.type.tensor_type.shape.dim[0].dim_value = 1
        onnx.save(graph, path)
        manifest["files"][variant["sequence"]] = sha256_file(path)
        if "file_sizes" in manifest:  # bundles built since sizes are declared hold each file to its size
            manifest["file_sizes"][variant["sequence"]] = path.stat().st_size
    (root / "manifest.json").write_text(json.dumps(manifest))
    sign_manifest(root, keys["private"])
    return write_tar(root, tmp_path / "static-batch.tar")


def test_scoring_errors_soon_after_a_switch_roll_back_automatically(tmp_path, keys, releases):
    from appliance.service.daemon import Appliance

    camera = {"id": "walkway", "source": str(DEMO_CLIP), "fps": None, "loop": True}
    cfg = load_config(config(tmp_path, keys, camera, runtime="onnxruntime"))
    store = ModelStore(cfg.state_dir)
    store.install(releases["1.2.1"], cfg)
    faulty = _static_batch_release(keys, releases, tmp_path)
    app = Appliance(cfg)
    app.start()
    log = FrameLog(app.workers[0])
    stop, thread = run_in_background(app)
    try:
        wait_until(lambda: len(log.frames) >= 5, what="first frames")
        result = store.install(faulty, cfg)  # passes every install check, smoke test included
        wait_until(lambda: store.state().active == "0001-starter-walking-lstm-vae-1.2.1", 90, "auto rollback")
        wait_until(lambda: log.versions()[-1] == "1.2.1" and len(log.frames[-1][3]) >= 2, 60, "scoring again")
    finally:
        stop.set()
        thread.join(30)
        app.stop()
    assert "1.2.2" in log.versions()  # it did run, and failed
    last = [u for u in store.log.entries() if u["action"] == "auto_rollback"][-1]
    assert (
        last["result"] == "ok" and result.version_id in last["message"] and "scoring error" in last["message"]
    )
    assert not app.workers[0].failed and app.workers[0].scoring_errors >= 1
    assert np.all(np.diff([f[0] for f in log.frames]) >= 1)


def test_a_bundle_dropped_into_the_inbox_is_installed_and_a_bad_one_is_set_aside(tmp_path, keys, releases):
    from appliance.service.daemon import Appliance

    camera = {"id": "workcell", "source": str(WORKCELL_CLIP), "fps": None, "loop": True}
    cfg = load_config(config(tmp_path, keys, camera))
    app = Appliance(cfg)
    app.start()
    try:
        app.inbox.settle_s = 0.3
        inbox = cfg.state_dir / "inbox"
        inbox.mkdir(parents=True, exist_ok=True)
        shutil.copy(releases["1.2.1"], inbox / "new-model.tar.part")  # a copy in progress is left alone
        shutil.copy(STARTER_BUNDLE, inbox / "unsigned.tar")
        app.poll_model_store()
        time.sleep(0.5)
        (inbox / "new-model.tar.part").rename(inbox / "new-model.tar")

        def settled():
            app.poll_model_store()
            return (inbox / "installed" / "new-model.tar").exists() and (
                inbox / "refused" / "unsigned.tar"
            ).exists()

        wait_until(settled, 60, "the inbox to process both files")
        wait_until(lambda: (app.poll_model_store(), app.model.version == "1.2.1")[1], 30, "the switch")
        assert "not signed" in (inbox / "refused" / "unsigned.tar.txt").read_text()
        assert "signed by acme" in (inbox / "installed" / "new-model.tar.txt").read_text()
    finally:
        app.stop()


def test_a_new_score_scale_leaves_cameras_uncalibrated_and_a_declared_same_scale_keeps_thresholds(
    tmp_path, keys, releases
):
    from appliance.alarms.threshold_store import save_threshold
    from appliance.service.daemon import Appliance

    def with_scale(tar: Path, scale: str | None, name: str) -> Path:
        sub = tmp_path / name
        sub.mkdir()
        return edit_and_resign(tar, sub, keys["private"], lambda m: m["score"].update(scale=scale))

    camera = {"id": "workcell", "source": str(WORKCELL_CLIP), "fps": None, "loop": True}
    path = config(tmp_path, keys, camera)
    raw = yaml.safe_load(path.read_text())
    raw["detector"] = {"when_uncalibrated": "suppress"}
    path.write_text(yaml.safe_dump(raw))
    cfg = load_config(path)
    store = ModelStore(cfg.state_dir)
    store.install(with_scale(releases["1.2.1"], "nll-v1", "a"), cfg)
    save_threshold(
        cfg.state_dir, "starter-walking-lstm-vae", "1.2.1", "workcell", {"threshold": 77.0}, "nll-v1"
    )
    app = Appliance(cfg)
    app.start()
    try:
        assert app.status()["cameras"]["workcell"]["threshold_source"] == "calibration"
        store.install(with_scale(releases["1.2.2"], "nll-v1", "b"), cfg)  # same declared scale
        app.poll_model_store()
        cam = app.status()["cameras"]["workcell"]
        assert (
            app.model.version == "1.2.2"
            and cam["threshold"] == 77.0
            and cam["threshold_source"] == "calibration"
        )
        pipeline = app.workers[0].pipeline
        during_switch = {}
        swap = pipeline.swap_model

        def observed_swap(scorer, map_spec, model, *args, **kwargs):  # the status read mid-switch
            during_switch[model.version] = app.status()["cameras"]["workcell"]
            return swap(scorer, map_spec, model, *args, **kwargs)

        pipeline.swap_model = observed_swap
        store.install(with_scale(releases["1.2.3"], "nll-v2", "c"), cfg)  # another scale
        app.poll_model_store()
        wait_until(lambda: "1.2.3" in during_switch, 30, "the camera to switch")
        for cam in (app.status()["cameras"]["workcell"], during_switch["1.2.3"]):
            assert cam["threshold_source"] == "uncalibrated" and cam.get("threshold") is None
        assert app.model.version == "1.2.3"
    finally:
        app.stop()
    assert os.path.exists(cfg.state_dir / "calibration" / "thresholds.json")  # kept for a rollback
