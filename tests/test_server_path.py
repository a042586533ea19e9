"""The server path for a site with its own data: the keypoint format as documented, validation held
out by track (never by frame), a fused bundle from the site's own parts, strict-JSON manifests,
``appliance extract --min-track-frames`` and ``appliance score --by-label``.

The "site" is real motion capture of people walking, projected through the ceiling camera
(``mocap-bandai``), written as one multi-track keypoint CSV as ``appliance extract`` writes it."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from appliance.errors import ApplianceError
from appliance.keypoints.readers import read_keypoints
from appliance.keypoints.table import write_keypoints_csv
from appliance.models.metrics import auroc
from appliance.pose.layouts import LAYOUTS
from tests.conftest import DATA, ROOT

DOC = ROOT / "docs" / "keypoints.md"
URFD = DATA / "urfd-falls" / "pose_urfd_3classes.csv"
MOCAP = DATA / "mocap-bandai"
needs_mocap = pytest.mark.skipif(not MOCAP.is_dir(), reason="real data not found")


def _doc_blocks(language: str) -> list[str]:
    """The fenced ```<language> blocks of docs/keypoints.md, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```$", DOC.read_text(), flags=re.S | re.M)


def _strict_json(text: str) -> dict:
    """Parse as RFC 8259 JSON: NaN and Infinity are not JSON (Python's json accepts them)."""

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


# ------------------------------------------------------------------------------- docs/keypoints.md


def test_the_csv_example_in_the_keypoint_doc_parses_as_the_doc_says(tmp_path):
    (block,) = _doc_blocks("csv")
    path = tmp_path / "keypoints.csv"
    path.write_text(block)
    one, two = read_keypoints(path)
    assert (one.name, two.name) == ("pose_1#1", "pose_1#2")
    assert (one.layout.name, one.width, one.height, one.fps) == ("coco17", 576, 576, 30.0)
    assert one.keypoints.shape == (3, 17, 3) and two.keypoints.shape == (2, 17, 3)
    assert one.labels.tolist() == [0, 0, 0] and two.labels.tolist() == [0, 1]
    ear, wrist = one.layout.joints.index("left_ear"), one.layout.joints.index("right_wrist")
    assert np.isnan(one.keypoints[1, ear]).all()  # empty cells: unseen
    assert one.keypoints[2, wrist, 2] == 0 and np.isfinite(one.keypoints[2, wrist, :2]).all()


def test_the_python_examples_in_the_keypoint_doc_run(tmp_path, monkeypatch, capsys):
    (csv_block,) = _doc_blocks("csv")
    (tmp_path / "keypoints.csv").write_text(csv_block)
    monkeypatch.chdir(tmp_path)
    for block in _doc_blocks("python"):
        exec(compile(block, str(DOC), "exec"), {})
    printed = capsys.readouterr().out
    assert "pose_1#2 (2, 17, 3)" in printed and "by-hand (40, 17, 3) 30.0" in printed
    (person2,) = read_keypoints(tmp_path / "person2.npz")
    assert person2.labels.tolist() == [0, 1] and person2.name == "pose_1#2"


def test_the_keypoint_doc_lists_each_layouts_joints_in_the_readers_order():
    rows = re.findall(r"^\| `(\w+)` \| (\d+) \| ([a-z_, ]+) \|$", DOC.read_text(), flags=re.M)
    documented = {name: (int(k), joints.split(", ")) for name, k, joints in rows}
    assert documented == {n: (lay.num_joints, list(lay.joints)) for n, lay in LAYOUTS.items()}


# ----------------------------------------------------------------------------------- a site's data


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> dict[str, Path]:
    """Ten walking clips as one unlabelled multi-track CSV (the site's normal footage), and a
    labelled test file of another walk (0) and a run (1)."""
    from export.datasets import mocap_clips
    from export.mocap.ceiling_camera import project_bvh

    clips = mocap_clips(DATA)
    walks = [path for path, content in clips if content == "walk"]
    runs = [path for path, content in clips if content == "run"]
    root = tmp_path_factory.mktemp("site")
    normal = [project_bvh(path) for path in walks[:10]]
    write_keypoints_csv(root / "site.csv", normal)
    test = []
    for path, label in ((walks[10], 0), (runs[0], 1)):
        seq = project_bvh(path)
        seq.labels = np.full(len(seq), label)
        test.append(seq)
    write_keypoints_csv(root / "labelled.csv", test)
    return {"root": root, "site": root / "site.csv", "labelled": root / "labelled.csv"}


def _export(*argv: str) -> int:
    from export.cli import main

    return main([str(a) for a in argv])


@pytest.fixture(scope="module")
def site_motion(site) -> Path:
    """The site's posture-motion bundle, built by ``appliance-export posture-motion`` without --val."""
    pytest.importorskip("torch", reason="building bundles needs the [export] extra")
    out = site["root"] / "site-pm"
    assert _export("posture-motion", "--keypoints", site["site"], "--out", out, "--name", "site-pm") == 0
    return out


@needs_mocap
def test_split_by_track_holds_whole_tracks_out_every_fifth_and_needs_two(site):
    from export.datasets import split_by_track

    tracks = read_keypoints(site["site"])
    fit, val = split_by_track(tracks)
    assert [s.name for s in val] == [tracks[4].name, tracks[9].name]
    assert [s.name for s in fit] == [s.name for i, s in enumerate(tracks) if i not in (4, 9)]
    assert split_by_track(tracks) == (fit, val)  # deterministic
    assert [s.name for s in split_by_track(tracks[:3])[1]] == [tracks[2].name]  # fewer than five: the last
    with pytest.raises(ApplianceError, match="pass --val FILE"):
        split_by_track([tracks[0], tracks[1].slice(0, 29)])  # the other track is shorter than a window


@needs_mocap
def test_posture_motion_on_own_data_chooses_on_held_out_tracks_and_writes_strict_json(site, site_motion):
    manifest = _strict_json((site_motion / "manifest.json").read_text())
    training = manifest["training"]
    fitted, held = set(training["sequences"]), set(training["validation_sequences"])
    names = [s.name for s in read_keypoints(site["site"])]
    assert held == {names[4], names[9]} and fitted == set(names) - held
    assert "validation windows" in manifest["threshold"]["method"]
    windows = sum(len(s) - 29 for s in read_keypoints(site["site"]) if s.name in held)
    assert training["val_windows"] == windows  # shrinkage and z-scores on the held-out tracks' windows
    # the site's footage has no anomaly: no AUROC, written as null (not NaN)
    assert manifest["evaluation"]["pytorch_auroc"] is None
    assert all(row["auroc"] is None and row["passed"] for row in manifest["evaluation"]["parity"])
    assert manifest["evaluation"]["split"].startswith("all given keypoints")


@needs_mocap
def test_posture_motion_takes_its_validation_from_val_files(site, tmp_path):
    pytest.importorskip("torch", reason="building bundles needs the [export] extra")
    tracks = [s.slice(0, 90, s.name) for s in read_keypoints(site["site"])]  # kept short: a fast fit
    write_keypoints_csv(tmp_path / "fit.csv", tracks[:7])
    write_keypoints_csv(tmp_path / "val.csv", tracks[7:])
    out = tmp_path / "pm"
    code = _export(
        "posture-motion", "--keypoints", tmp_path / "fit.csv", "--val", tmp_path / "val.csv",
        "--out", out, "--variants", "onnx-fp32",
    )  # fmt: skip
    assert code == 0
    training = _strict_json((out / "manifest.json").read_text())["training"]
    assert len(training["sequences"]) == 7 and len(training["validation_sequences"]) == 3
    assert training["val_windows"] == sum(len(s) - 29 for s in tracks[7:])


def test_val_with_a_built_in_set_and_a_single_track_without_val_are_refused_in_one_line(tmp_path, capsys):
    pytest.importorskip("torch", reason="the export command needs the [export] extra")
    (block,) = _doc_blocks("csv")
    path = tmp_path / "k.csv"
    path.write_text(block)
    out = tmp_path / "pm"
    assert _export("posture-motion", "--dataset", "urfd", "--data", DATA, "--val", path, "--out", out) == 2
    assert "--val goes with --keypoints" in capsys.readouterr().err
    assert _export("posture-motion", "--keypoints", path, "--out", out) == 2
    err = capsys.readouterr().err
    assert "cannot hold out a whole track" in err and "--val FILE" in err and "Traceback" not in err


# ------------------------------------------------------------------------------ appliance-export fused


@needs_mocap
def test_fused_joins_a_sites_own_bundles_into_one_that_opens_and_scores(site, site_motion, capsys):
    from appliance.cli import main as appliance
    from appliance.models.bundle import open_bundle
    from appliance.models.fused import MAP_PART
    from appliance.service.demo import STARTER_LSTM_BUNDLE

    out = site["root"] / "site-fused"
    code = _export(
        "fused", "--map-bundle", STARTER_LSTM_BUNDLE, "--motion-bundle", site_motion.with_suffix(".tar"),
        "--keypoints", site["site"], "--test", site["labelled"], "--out", out, "--version", "1.0.0",
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    manifest = _strict_json((out / "manifest.json").read_text())
    held = _strict_json((site_motion / "manifest.json").read_text())["training"]["validation_sequences"]
    windows = sum(len(s) - 29 for s in read_keypoints(site["site"]) if s.name in held)
    assert manifest["fusion"][MAP_PART]["windows"] == windows  # calibrated on the parts' held-out tracks
    assert manifest["evaluation"]["split"] == "the --test keypoints"
    assert manifest["evaluation"]["fp32_auroc"] > 0.9  # runs against walks the parts never saw

    bundle = open_bundle(out.with_suffix(".tar"))
    assert bundle.model_type == "fused" and bundle.manifest["model"]["name"] == "site-fused"
    capsys.readouterr()
    argv = ["score", "--bundle", str(out.with_suffix(".tar")), "--keypoints", str(site["labelled"])]
    assert appliance(argv) == 0
    scored = float(capsys.readouterr().out.split("labels: ")[1].split()[0])
    assert scored > 0.9


# ------------------------------------------------------------------------------ strict-JSON manifests


def _staged_bundle(tmp_path: Path) -> tuple[Path, dict]:
    from appliance.models.bundle import safe_extract
    from appliance.service.demo import STARTER_LSTM_BUNDLE

    root = safe_extract(STARTER_LSTM_BUNDLE, tmp_path / "in")
    stage = tmp_path / "stage"
    shutil.move(root, stage)
    return stage, json.loads((stage / "manifest.json").read_text())


def test_a_nan_that_is_not_an_absent_metric_is_refused_naming_the_field(tmp_path):
    from export.bundle import publish_bundle

    stage, manifest = _staged_bundle(tmp_path)
    manifest["threshold"]["default"] = float("nan")
    with pytest.raises(ApplianceError, match=r"threshold\.default = nan"):
        publish_bundle(stage, manifest, tmp_path / "out", None, log=lambda *_: None)
    manifest["threshold"]["default"] = 1.0
    manifest["evaluation"]["parity"][0]["spearman"] = float("inf")
    with pytest.raises(ApplianceError, match=r"evaluation\.parity\[0\]\.spearman = inf"):
        publish_bundle(stage, manifest, tmp_path / "out", None, log=lambda *_: None)
    assert not (tmp_path / "out").exists()


def test_resigning_a_manifest_with_a_nan_auroc_writes_null(tmp_path):
    from appliance.updates.signing import generate_key_pair
    from export.bundle import sign_bundle

    stage, manifest = _staged_bundle(tmp_path)
    manifest["evaluation"]["pytorch_auroc"] = float("nan")  # as bundles of the site's data were written
    (stage / "manifest.json").write_text(json.dumps(manifest))
    key = generate_key_pair(tmp_path / "keys" / "k")[0]
    sign_bundle(stage, key, tmp_path / "signed", model_version="9.9.9")
    written = _strict_json((tmp_path / "signed" / "manifest.json").read_text())
    assert written["evaluation"]["pytorch_auroc"] is None and written["model"]["version"] == "9.9.9"


# ------------------------------------------------------------------ appliance extract / score


def test_extract_keeps_tracks_as_short_as_min_track_frames(tmp_path, capsys):
    from appliance.cli import main as appliance
    from appliance.service.demo import DEMO_CLIP

    out = tmp_path / "k.csv"
    argv = ["extract", "--video", str(DEMO_CLIP), "--frames", "40", "--min-track-frames", "20"]
    assert appliance([*argv, "--out", str(out)]) == 0
    lengths = [len(s) for s in read_keypoints(out)]
    assert min(lengths) >= 20 and min(lengths) < 30  # kept: the fixed 30 dropped it
    assert appliance([*argv[:-2], "--min-track-frames", "0", "--out", str(out)]) == 2
    assert "--min-track-frames must be at least 1" in capsys.readouterr().err


@pytest.mark.skipif(not URFD.is_file(), reason="real data not found")
def test_score_by_label_prints_each_anomaly_labels_auroc_against_the_normal_frames(tmp_path, capsys):
    import csv

    from appliance.cli import main as appliance
    from appliance.service.demo import STARTER_BUNDLE

    out = tmp_path / "scores.csv"
    argv = ["score", "--bundle", str(STARTER_BUNDLE), "--keypoints", str(URFD), "--out", str(out)]
    assert appliance([*argv, "--only", "fall-03", "fall-05", "--by-label"]) == 0
    printed = dict(re.findall(r"label (\d+): (\d\.\d{4})", capsys.readouterr().out))
    with out.open() as fh:
        rows = [(float(r["score"]), int(r["label"])) for r in csv.DictReader(fh) if r["score"]]
    scores, labels = np.array([s for s, _ in rows]), np.array([lab for _, lab in rows])
    expected = {}
    for label in (1, 2):  # falling, lying: each against the upright frames alone
        pick = (labels == label) | (labels == 0)
        expected[str(label)] = f"{auroc(scores[pick], labels[pick] == label):.4f}"
    assert printed == expected


def test_score_by_label_on_a_file_without_labels_says_so_in_one_line(tmp_path, capsys):
    from appliance.cli import main as appliance
    from appliance.service.demo import STARTER_BUNDLE

    (block,) = _doc_blocks("csv")
    lines = [re.sub(r"^(\d+,\d+),\d+,", r"\1,,", line) for line in block.splitlines()]
    path = tmp_path / "unlabelled.csv"
    path.write_text("\n".join(lines) + "\n")
    assert read_keypoints(path)[0].labels is None
    argv = ["score", "--bundle", str(STARTER_BUNDLE), "--keypoints", str(path), "--by-label"]
    assert appliance(argv) == 2
    err = capsys.readouterr().err
    assert "--by-label needs per-frame labels" in err and "Traceback" not in err
