"""Export to ONNX, parity gate, model bundles and the edge scorer, on a model trained on real URFD data."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="building bundles needs the [export] extra")

from appliance.features.skeleton_map import MapSpec  # noqa: E402
from appliance.features.window import window_scores_to_frames  # noqa: E402
from appliance.keypoints.table import write_keypoints_csv  # noqa: E402
from appliance.models.bundle import SCHEMA_VERSION, BundleError, InputContract, open_bundle  # noqa: E402
from appliance.models.lstm_vae import StreamingScorer, score_map_sequence  # noqa: E402
from appliance.models.metrics import auroc  # noqa: E402
from appliance.updates.signing import SignatureError, SignaturePolicy, generate_key_pair  # noqa: E402
from export.bundle import VARIANT_BUILDERS, ParityError, Variant, build_bundle, buildable_variants  # noqa: E402
from export.datasets import render_sequences, urfd_split  # noqa: E402
from export.evaluate import evaluate, score_windows  # noqa: E402
from export.models import ModelConfig  # noqa: E402
from export.onnx_export import export_onnx  # noqa: E402
from export.parity import check_variant, spearman  # noqa: E402
from export.train import TrainConfig, save_checkpoint, train_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
pytestmark = pytest.mark.skipif(not (DATA / "urfd-falls").is_dir(), reason=f"real data not found at {DATA}")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """An LSTM-VAE trained briefly on URFD upright windows, its checkpoint and the rendered split."""
    split = urfd_split(DATA)
    train, val, test = (render_sequences(p) for p in (split.train, split.val, split.test))
    result = train_model(ModelConfig(), TrainConfig(epochs=4, seed=3), train, val, progress=False)
    ckpt_path = save_checkpoint(
        tmp_path_factory.mktemp("ckpt") / "m.pt", result, MapSpec(), {"dataset": "urfd"}
    )
    ckpt = torch.load(ckpt_path, weights_only=True)
    return result.model, ckpt, split, train, val, test


VARIANTS = buildable_variants()  # ONNX, and TFLite where the [tflite-export] extra is installed


@pytest.fixture(scope="module")
def bundle_dir(trained, tmp_path_factory):
    model, ckpt, _, train, val, test = trained
    out = tmp_path_factory.mktemp("bundles") / "urfd-test"
    key = generate_key_pair(out.parent / "keys" / "publisher")[0]  # signed, as a release would be
    build_bundle(
        model, ckpt, test, val, train, out, "urfd-test", "1.2.3", VARIANTS, "urfd", log=lambda *_: None,
        sign_key=key,
    )  # fmt: skip
    return out


def fresh_copy(bundle_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "b"
    shutil.copytree(bundle_dir, dst)
    return dst


def test_onnx_graphs_match_pytorch_to_1e4(trained, tmp_path):
    model, *_, test = trained
    paths = export_onnx(model, tmp_path)
    import onnx
    import onnxruntime as ort

    for p in paths.values():
        m = onnx.load(str(p))
        assert m.opset_import[0].version >= 17
        assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    maps = test[0].maps.astype(np.float32)
    ref = score_windows(model, test[0].maps)
    windows = np.stack([maps[i : i + 30] for i in range(len(ref))])
    single = ort.InferenceSession(str(paths["window"])).run(None, {"windows": windows})[0]
    np.testing.assert_allclose(single, ref, rtol=1e-4)


def test_bundle_manifest_holds_the_contract_hashes_variants_threshold_and_reference(bundle_dir):
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    assert manifest["schema_version"] == SCHEMA_VERSION and isinstance(manifest["schema_version"], int)
    assert manifest["model"] | {"created_at": None} == manifest["model"] | {"created_at": None}
    assert manifest["model"]["name"] == "urfd-test" and manifest["model"]["version"] == "1.2.3"
    assert manifest["model"]["type"] == "lstm_vae"
    contract = manifest["input_contract"]
    assert contract["window"] == 30 and contract["map_size"] == 28 and contract["limb_thickness"] == 0.5
    assert contract["binarize_threshold"] == 0.2 and "blazepose33" in contract["joint_layouts"]
    assert set(manifest["variants"]) == set(VARIANTS)
    on_disk = {p.relative_to(bundle_dir).as_posix() for p in bundle_dir.rglob("*") if p.is_file()}
    assert on_disk == set(manifest["files"]) | {"manifest.json", "manifest.sig"}
    assert all(len(h) == 64 for h in manifest["files"].values())
    assert manifest["threshold"]["default"] > 0
    assert manifest["training"]["data"]["sample_kind"] == "windows"
    assert all(row["passed"] for row in manifest["evaluation"]["parity"])
    assert (bundle_dir.parent / "urfd-test.tar").is_file()


def test_a_bundle_built_with_sign_verifies_against_the_publishers_key_only(bundle_dir, tmp_path):
    trusted = bundle_dir.parent / "keys"
    keys_dir = tmp_path / "trusted"
    keys_dir.mkdir()
    shutil.copy(trusted / "publisher.pub", keys_dir)
    bundle = open_bundle(bundle_dir.parent / "urfd-test.tar", signatures=SignaturePolicy(keys_dir))
    assert bundle.signer is not None and bundle.signer.name == "publisher"
    with pytest.raises(SignatureError, match="not trusted here"):
        open_bundle(bundle_dir, signatures=SignaturePolicy(tmp_path / "no-keys"))


def test_int8_variant_keeps_auroc_within_001_and_ranks_like_pytorch(bundle_dir):
    rows = {
        r["variant"]: r
        for r in json.loads((bundle_dir / "manifest.json").read_text())["evaluation"]["parity"]
    }
    assert rows["onnx-fp32"]["max_rel_diff"] <= 1e-4
    assert rows["onnx-int8"]["spearman"] >= 0.99
    assert abs(rows["onnx-int8"]["auroc_diff"]) <= 0.01
    import onnx

    seq = onnx.load(str(bundle_dir / "onnx-int8" / "sequence.onnx"))
    assert "DynamicQuantizeLSTM" in {n.op_type for n in seq.graph.node}
    enc = onnx.load(str(bundle_dir / "onnx-int8" / "frame_encoder.onnx"))
    assert "QuantizeLinear" in {n.op_type for n in enc.graph.node}


def test_streaming_scorer_gives_the_batch_scores_one_frame_at_a_time(bundle_dir, trained):
    *_, test = trained
    bundle = open_bundle(bundle_dir)
    runtime, _ = bundle.open("onnxruntime", "onnx-fp32")
    maps = test[1].maps
    scorer = StreamingScorer(runtime, 30, bundle.contract.feature_dim, 28)
    live = [s for m in maps if (s := scorer.push(m)) is not None]
    batch = score_map_sequence(runtime, maps, 30)
    assert len(live) == len(maps) - 29
    np.testing.assert_allclose(live, batch, rtol=1e-5)
    scorer.reset()
    assert scorer.push(maps[0]) is None


def test_tflite_variants_pass_parity_and_score_like_onnx_on_litert(bundle_dir, trained):
    pytest.importorskip("litert_torch", reason="TFLite conversion needs the [tflite-export] extra")
    *_, test = trained
    rows = {
        r["variant"]: r
        for r in json.loads((bundle_dir / "manifest.json").read_text())["evaluation"]["parity"]
    }
    assert rows["tflite-fp32"]["max_rel_diff"] <= 1e-4
    assert rows["tflite-int8"]["spearman"] >= 0.99 and abs(rows["tflite-int8"]["auroc_diff"]) <= 0.01
    bundle = open_bundle(bundle_dir)
    tfl, variant = bundle.open("tflite")
    assert variant == "tflite-int8" and tfl.name == "tflite"
    onnx_rt, _ = bundle.open("onnxruntime", "onnx-fp32")
    tfl32, _ = bundle.open("tflite", "tflite-fp32")
    maps = test[2].maps
    np.testing.assert_allclose(
        score_map_sequence(tfl32, maps, 30), score_map_sequence(onnx_rt, maps, 30), rtol=1e-4
    )
    live = StreamingScorer(tfl, 30, 64, 28)
    streamed = [s for m in maps if (s := live.push(m)) is not None]
    np.testing.assert_allclose(streamed, score_map_sequence(tfl, maps, 30), rtol=1e-5)


def test_parity_gate_refuses_a_variant_that_scores_differently(trained, tmp_path):
    model, ckpt, _, train, val, test = trained
    other = train_model(ModelConfig(), TrainConfig(epochs=1, seed=99), train, progress=False).model

    def mismatched(_model, onnx, work, _calibration):  # a real export, but of a different model
        paths = export_onnx(other, work / "other")
        return Variant("onnx-fp32", "onnxruntime", paths["frame_encoder"], paths["sequence"])

    VARIANT_BUILDERS["mismatched-fp32"] = mismatched
    try:
        with pytest.raises(ParityError, match="onnx-fp32 failed the parity gate"):
            build_bundle(
                model,
                ckpt,
                test,
                val,
                train,
                tmp_path / "bad",
                "bad",
                "0",
                ["mismatched-fp32"],
                "urfd",
                log=lambda *_: None,
            )
    finally:
        del VARIANT_BUILDERS["mismatched-fp32"]
    assert not (tmp_path / "bad").exists() and not (tmp_path / "bad.tar").exists()


def test_exported_scores_stay_finite_when_the_decoder_saturates(trained, tmp_path):
    # a very confident decoder (logits of +-1000s) once made the exported BCE 0 * -inf = NaN
    import copy

    model, *_, test = trained
    confident = copy.deepcopy(model)
    last = confident.sequence.frame_decoder.deconv[-1]
    with torch.no_grad():
        last.weight.mul_(1000.0)
        last.bias.mul_(1000.0)
    paths = export_onnx(confident, tmp_path)
    from appliance.models.runtimes import open_runtime

    rt = open_runtime("onnxruntime", paths["frame_encoder"], paths["sequence"])
    edge = score_map_sequence(rt, test[0].maps, 30)
    ref = score_windows(confident, test[0].maps)
    assert np.isfinite(ref).all() and np.isfinite(edge).all()
    np.testing.assert_allclose(edge, ref, rtol=1e-4)


def test_parity_gate_fails_nan_scores_with_a_message():
    ref = np.linspace(10, 100, 50)
    bad = ref.copy()
    bad[:40] = np.nan
    frames, pos = np.r_[ref, bad], np.r_[np.zeros(50, bool), np.ones(50, bool)]
    row = check_variant("x-fp32", ref, bad, 0.5, frames, pos)
    assert not row.passed
    assert "40 of 50 window scores are NaN or infinite" in row.failures[0]


def test_parity_metrics():
    assert spearman(np.arange(10), np.arange(10) ** 3) == pytest.approx(1.0)
    assert spearman(np.arange(10), -np.arange(10)) == pytest.approx(-1.0)
    ref = np.linspace(10, 100, 50)
    frames, pos = np.r_[ref, ref], np.r_[np.zeros(50, bool), np.ones(50, bool)]
    ok = check_variant("x-fp32", ref, ref + 1e-5, 0.5, frames, pos)
    assert ok.passed
    bad = check_variant("x-fp32", ref, ref * 1.001, 0.5, frames, pos)
    assert not bad.passed and "fp32 scores differ" in bad.failures[0]
    shuffled = check_variant("x-int8", ref, ref[::-1], 0.5, frames, pos)
    assert not shuffled.passed and any("Spearman" in f for f in shuffled.failures)


def test_appliance_score_without_torch_reproduces_the_evaluation_auroc(bundle_dir, trained, tmp_path):
    model, _, split, _, _, test = trained
    torch_auroc = evaluate(model, "LSTM-VAE", test, split.classes).metrics()["auroc"]
    csv_path = tmp_path / "test_split.csv"
    write_keypoints_csv(csv_path, split.test)
    code = (
        "import importlib.abc, sys\n"
        "class B(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'torch': raise ImportError('torch blocked by the test')\n"
        "sys.meta_path.insert(0, B())\n"
        "from appliance.cli import main\n"
        f"rc = main(['score', '--bundle', r'{bundle_dir.parent / 'urfd-test.tar'}',"
        f" '--keypoints', r'{csv_path}',"
        f" '--variant', 'onnx-fp32', '--out', r'{tmp_path / 'scores.csv'}'])\n"
        "assert 'torch' not in sys.modules\n"
        "sys.exit(rc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    edge_auroc = float(out.stdout.split("AUROC against the file's labels: ")[1].split()[0])
    assert abs(edge_auroc - torch_auroc) <= 0.01
    rows = (tmp_path / "scores.csv").read_text().splitlines()
    assert rows[0] == "sequence,frame,score,label" and len(rows) == 1 + 965


# --- refusals: each with a clear message, nothing run -------------------------------------------


def _edit_manifest(root: Path, change) -> None:
    path = root / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def test_bundle_with_a_missing_file_is_refused(bundle_dir, tmp_path):
    b = fresh_copy(bundle_dir, tmp_path)
    (b / "onnx-int8" / "sequence.onnx").unlink()
    with pytest.raises(BundleError, match=r"missing file onnx-int8/sequence\.onnx"):
        open_bundle(b)


def test_bundle_with_an_altered_file_is_refused(bundle_dir, tmp_path):
    b = fresh_copy(bundle_dir, tmp_path)
    f = b / "onnx-fp32" / "sequence.onnx"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"onnx-fp32/sequence\.onnx does not match its SHA-256"):
        open_bundle(b)


def test_bundle_with_an_unlisted_file_is_refused(bundle_dir, tmp_path):
    b = fresh_copy(bundle_dir, tmp_path)
    (b / "extra.onnx").write_bytes(b"x")
    with pytest.raises(BundleError, match=r"not listed in the manifest: extra\.onnx"):
        open_bundle(b)


@pytest.mark.parametrize(
    ("version", "message"),
    [(2, "schema version 2 is not supported"), ("1", "schema_version must be an integer")],
)
def test_bundle_with_a_wrong_schema_version_is_refused(bundle_dir, tmp_path, version, message):
    b = fresh_copy(bundle_dir, tmp_path)
    _edit_manifest(b, lambda m: m.update(schema_version=version))
    with pytest.raises(BundleError, match=message):
        open_bundle(b)


def test_bundle_whose_contract_differs_from_the_expected_one_is_refused(bundle_dir):
    expected = InputContract(30, 64, MapSpec(limb_thickness=1.0), ("coco17",))
    with pytest.raises(
        BundleError, match=r"input contract mismatch: .*limb_thickness: bundle has 0.5, expected 1.0"
    ):
        open_bundle(bundle_dir, expected_contract=expected)


def test_bundle_whose_contract_disagrees_with_its_model_files_is_refused(bundle_dir, tmp_path):
    b = fresh_copy(bundle_dir, tmp_path)
    _edit_manifest(b, lambda m: m["input_contract"].update(map_size=32))
    bundle = open_bundle(b)
    with pytest.raises(
        BundleError, match=r"model input 'maps' has shape .*28, 28.* input contract says \[32, 32\]"
    ):
        bundle.open("onnxruntime")


def test_bundle_failing_its_smoke_test_is_refused(bundle_dir, tmp_path):
    b = fresh_copy(bundle_dir, tmp_path)
    _edit_manifest(b, lambda m: m["variants"]["onnx-fp32"].update(reference_score=1.0))
    with pytest.raises(BundleError, match=r"smoke test scored the reference window .* expected 1\.0000"):
        open_bundle(b).open("onnxruntime", "onnx-fp32")
    open_bundle(b).open("onnxruntime", "onnx-int8")  # the other variant still loads


def test_truncated_tar_is_refused(bundle_dir, tmp_path):
    data = (bundle_dir.parent / "urfd-test.tar").read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match=r"truncated|not a readable bundle tar"):
        open_bundle(cut)


def _tar_with(tmp_path: Path, member: tarfile.TarInfo, payload: bytes = b"") -> Path:
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w") as tar:
        member.size = len(payload) if member.isfile() else 0
        tar.addfile(member, io.BytesIO(payload) if member.isfile() else None)
    return path


@pytest.mark.parametrize("name", ["../escape.onnx", "/etc/escape.onnx", "b/../../escape.onnx"])
def test_tar_with_path_traversal_is_refused_and_writes_nothing_outside(tmp_path, name):
    path = _tar_with(tmp_path, tarfile.TarInfo(name), b"x")
    with pytest.raises(BundleError, match="unsafe path"):
        open_bundle(path)
    assert not (tmp_path.parent / "escape.onnx").exists()


def test_tar_with_a_symlink_is_refused(tmp_path):
    link = tarfile.TarInfo("b/manifest.json")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/passwd"
    with pytest.raises(BundleError, match="is a link or device"):
        open_bundle(_tar_with(tmp_path, link))


def test_missing_bundle_and_unknown_runtime_get_clear_messages(bundle_dir, tmp_path):
    with pytest.raises(BundleError, match="no such bundle"):
        open_bundle(tmp_path / "nope.tar")
    with pytest.raises(BundleError, match=r"unknown runtime 'coreml'"):
        open_bundle(bundle_dir).open("coreml")


def test_appliance_score_on_a_corrupt_bundle_is_one_line_and_exit_2(bundle_dir, tmp_path):
    b = fresh_copy(bundle_dir, tmp_path)
    (b / "onnx-fp32" / "frame_encoder.onnx").write_bytes(b"garbage")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "appliance.cli",
            "score",
            "--bundle",
            str(b),
            "--keypoints",
            str(DATA / "urfd-falls" / "pose_urfd_3classes.csv"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 3 and "Traceback" not in out.stderr
    assert "frame_encoder.onnx does not match its SHA-256" in out.stderr


def test_frame_scores_from_the_bundle_match_pytorch_evaluation(bundle_dir, trained):
    model, _, split, _, _, test = trained
    runtime, _ = open_bundle(bundle_dir).open("onnxruntime", "onnx-fp32")
    edge = np.concatenate(
        [window_scores_to_frames(score_map_sequence(runtime, s.maps, 30), len(s.maps)) for s in test]
    )
    s, y = evaluate(model, "LSTM-VAE", test, split.classes).pooled()
    np.testing.assert_allclose(edge, s, rtol=1e-4)
    # A (fall, normal) pair can change order only if its scores are closer than the two frames'
    # edge-vs-PyTorch differences add up to: the AUROCs may differ by at most the share of such pairs
    # (a fixed 1e-9 failed now and then on one near-tie, a 2e-6 step).
    # Frames that share a window's score are tied in both and stay tied.
    d = np.abs(edge - s)
    pos, neg, dpos, dneg = s[y > 0], s[y <= 0], d[y > 0], d[y <= 0]
    gap = np.abs(pos[:, None] - neg[None, :])
    tied_in_both = (gap == 0) & (edge[y > 0][:, None] == edge[y <= 0][None, :])
    may_swap = ((gap <= dpos[:, None] + dneg[None, :]) & ~tied_in_both).mean()
    assert abs(auroc(edge, y > 0) - auroc(s, y > 0)) <= may_swap + 1e-12
