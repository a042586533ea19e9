"""Command lines: clear one-line errors and exit codes for user mistakes, real output otherwise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_appliance_maps_on_a_missing_file_is_one_clear_line(tmp_path):
    out = run(
        "appliance.cli", "maps", "--keypoints", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "x.png")
    )
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert "nope.csv" in out.stderr and "no such file" in out.stderr


def test_appliance_maps_on_a_malformed_csv_names_the_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("# layout=coco17\n# width=640\n# height=480\nframe,nose_x\n1,2\n")
    out = run("appliance.cli", "maps", "--keypoints", str(bad), "--out", str(tmp_path / "x.png"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "bad.csv:4" in out.stderr


@pytest.mark.skipif(not (DATA / "urfd-falls").is_dir(), reason="real data not found")
def test_appliance_maps_renders_a_contact_sheet_of_a_real_video(tmp_path):
    png = tmp_path / "sheet.png"
    out = run(
        "appliance.cli",
        "maps",
        "--keypoints",
        str(DATA / "urfd-falls" / "pose_urfd_3classes.csv"),
        "--out",
        str(png),
        "--frames",
        "20",
        "--zoom",
        "2",
    )
    assert out.returncode == 0, out.stderr
    assert "fall-01: 156 frames (urfd13, 640x480)" in out.stdout
    img = cv2.imread(str(png), cv2.IMREAD_GRAYSCALE)
    assert img.shape == (2 * 2 * 30, 10 * 2 * 30)
    assert (img == 255).sum() > 20 * 4 * 20  # every tile shows a skeleton


def test_export_cli_refuses_a_missing_data_folder_with_a_message(tmp_path):
    pytest.importorskip("torch")
    out = run("export", "reproduce", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "data folder" in out.stderr and "missing" in out.stderr


@pytest.mark.skipif(not (DATA / "urfd-falls").is_dir(), reason="real data not found")
@pytest.mark.parametrize(
    ("model", "trained", "figures"),
    [
        ("lstm_vae", "trained lstm_vae on 157 windows", ["scores_m.png", "reconstructions_m.png"]),
        ("ae", "trained ae on 516 frames", ["scores_m.png"]),
    ],
)
def test_export_train_then_evaluate_from_the_command_line(tmp_path, model, trained, figures):
    pytest.importorskip("torch")
    ckpt = tmp_path / "m.pt"
    out = run(
        "export",
        "train",
        "--dataset",
        "urfd",
        "--data",
        str(DATA),
        "--model",
        model,
        "--epochs",
        "1",
        "--out",
        str(ckpt),
    )
    assert out.returncode == 0, out.stderr
    assert trained in out.stdout
    assert f"{model}: epoch 1/1, train loss" in out.stderr  # plain progress lines off a terminal
    evaluation = tmp_path / "eval"
    out = run(
        "export",
        "evaluate",
        "--dataset",
        "urfd",
        "--data",
        str(DATA),
        "--checkpoint",
        str(ckpt),
        "--out",
        str(evaluation),
    )
    assert out.returncode == 0, out.stderr
    assert "on 965 frames" in out.stdout
    for name in ("report.json", "roc.png", *figures):
        assert (evaluation / name).stat().st_size > 0


def test_export_tflite_writes_fp32_graphs_that_litert_loads(tmp_path):
    pytest.importorskip("litert_torch", reason="TFLite conversion needs the [tflite-export] extra")
    from ai_edge_litert.interpreter import Interpreter

    ckpt = tmp_path / "m.pt"
    assert (
        run(
            "export", "train", "--dataset", "urfd", "--data", str(DATA), "--epochs", "1", "--out", str(ckpt)
        ).returncode
        == 0
    )
    out = run("export", "tflite", "--checkpoint", str(ckpt), "--out", str(tmp_path / "t"), "--no-int8")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1].startswith("parity is checked when they go into a bundle")
    assert "None" not in out.stdout
    shapes = {}
    for name in ("frame_encoder", "sequence"):
        it = Interpreter(model_path=str(tmp_path / "t" / "fp32" / f"{name}.tflite"))
        shapes[name] = sorted(list(d["shape"]) for d in it.get_input_details())
    assert shapes == {"frame_encoder": [[1, 28, 28]], "sequence": [[1, 30, 28, 28], [1, 30, 64]]}
    assert not (tmp_path / "t" / "int8").exists()


def test_export_cli_without_a_data_folder_says_how_to_name_one(tmp_path):
    pytest.importorskip("torch")
    import os

    env = {k: v for k, v in os.environ.items() if k != "APPLIANCE_DATA"}
    cmd = [sys.executable, "-m", "export", "train", "--dataset", "urfd", "--out", str(tmp_path / "m.pt")]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "--data FOLDER" in out.stderr and "APPLIANCE_DATA" in out.stderr
    assert not (tmp_path / "m.pt").exists()
