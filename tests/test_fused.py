"""The fused model (map model + posture-motion model in one bundle): the shipped default starter,
building one from two real bundles, streaming equals offline, and a tampered part is refused."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from appliance.features.motion import sequence_features
from appliance.features.skeleton_map import render_keypoints
from appliance.keypoints.urfd import read_urfd_csv
from appliance.models.bundle import BundleError, open_bundle, safe_extract
from appliance.models.fused import MAP_PART, MOTION_PART, FusedRuntime, FusedScorer
from appliance.pose.layouts import to_body_graph
from appliance.service.demo import STARTER_BUNDLE, STARTER_LSTM_BUNDLE
from tests.conftest import DATA

URFD = DATA / "urfd-falls" / "pose_urfd_3classes.csv"


def test_the_shipped_default_is_a_fused_bundle_whose_parts_verify_on_their_own():
    bundle = open_bundle(STARTER_BUNDLE)
    assert bundle.model_type == "fused"
    assert bundle.part(MAP_PART).model_type == "lstm_vae"
    assert bundle.part(MOTION_PART).model_type == "posture_motion"
    runtime, variant = bundle.open("onnxruntime")  # both parts' smoke tests and the fused one
    assert isinstance(runtime, FusedRuntime) and variant == "onnx-int8"
    assert bundle.manifest["fusion"][MAP_PART]["scale"] > 0


def test_a_tampered_part_is_refused_by_the_outer_manifest(tmp_path):
    root = safe_extract(STARTER_BUNDLE, tmp_path / "x")
    model = root / MOTION_PART / "onnx-int8" / "posture_motion.onnx"
    data = bytearray(model.read_bytes())
    data[100] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"posture_motion/onnx-int8/posture_motion\.onnx does not match"):
        open_bundle(root)


@pytest.mark.skipif(not URFD.is_file(), reason="real data not found")
def test_streamed_fused_scores_equal_the_offline_ones_on_a_real_sequence():
    from export.fused_bundle import FusedSequence, fused_scores

    bundle = open_bundle(STARTER_BUNDLE)
    runtime, _ = bundle.open("onnxruntime", "onnx-fp32")
    seq = read_urfd_csv(URFD)[3]
    spec = bundle.contract.map_spec
    maps = render_keypoints(seq.keypoints, seq.layout, (seq.width, seq.height), spec)
    body = to_body_graph(seq.keypoints, seq.layout)
    offline = fused_scores(runtime, FusedSequence(seq.name, maps, sequence_features(body), seq.labels), 30)
    maps_part = bundle.part(MAP_PART).contract
    scorer = FusedScorer(runtime, 30, maps_part.feature_dim, maps_part.map_spec.map_size)
    live = [s for m, b in zip(maps, body, strict=True) if (s := scorer.push({1: (m, b)})[1]) is not None]
    assert len(live) == len(offline) == len(seq) - 29
    np.testing.assert_allclose(live, offline, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not URFD.is_file(), reason="real data not found")
def test_building_a_fused_bundle_from_two_real_bundles_passes_the_gate(tmp_path):
    pytest.importorskip("torch", reason="fitting needs the [export] extra")
    from export.fused_bundle import FusedSequence, build_fused_bundle
    from export.posture_motion_bundle import bundle_dataset

    motion, _, parts = bundle_dataset("urfd", DATA, tmp_path / "urfd-pm", "urfd-pm", "1", log=lambda *_: None)
    from export.datasets import urfd_split

    split = urfd_split(DATA)
    spec = open_bundle(STARTER_LSTM_BUNDLE).contract.map_spec

    def joined(seqs, feats):
        return [
            FusedSequence(
                s.name, render_keypoints(s.keypoints, s.layout, (s.width, s.height), spec), f.raw, f.labels
            )
            for s, f in zip(seqs, feats, strict=True)
        ]

    out = tmp_path / "fused"
    build_fused_bundle(
        STARTER_LSTM_BUNDLE, motion, joined(split.val, parts["val"]), joined(split.test, parts["test"]),
        out, "urfd-fused", "1.0.0", "urfd", log=lambda *_: None,
    )  # fmt: skip
    manifest = json.loads((out / "manifest.json").read_text())
    rows = {r["variant"]: r for r in manifest["evaluation"]["parity"]}
    assert rows["onnx-int8"]["passed"] and abs(rows["onnx-int8"]["auroc_diff"]) <= 0.01
    assert manifest["evaluation"]["fp32_auroc"] > 0.85  # the posture-motion part carries the falls
    assert not (out / MAP_PART / "manifest.sig").exists()
    bundle = open_bundle(tmp_path / "fused.tar")
    bundle.open("onnxruntime")
    shutil.rmtree(out)


@pytest.mark.skipif(not URFD.is_file(), reason="real data not found")
def test_appliance_score_handles_every_bundle_type_and_the_fused_starter_transfers_better(tmp_path):
    """The walking starters (trained on CCTV walkers) scoring URFD falls they never saw: the fused one
    ranks falls far better than the map model alone (measured 0.749 vs 0.330 with the 2.2.0 / 1.2.0
    starters, both at their 10 fps)."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    videos = [f"fall-{n:02d}" for n in range(3, 31, 3)]
    found = {}
    for bundle in (STARTER_BUNDLE, STARTER_LSTM_BUNDLE):
        cmd = [sys.executable, "-m", "appliance.cli", "score", "--bundle", str(bundle)]
        cmd += ["--keypoints", str(URFD), "--only", *videos, "--out", str(tmp_path / "s.csv")]
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        found[bundle.name] = float(out.stdout.split("labels: ")[1].split()[0])
    assert (
        found[STARTER_BUNDLE.name] > 0.72
        and found[STARTER_BUNDLE.name] > found[STARTER_LSTM_BUNDLE.name] + 0.25
    )
