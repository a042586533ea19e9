"""Command lines: clear one-line errors and exit codes for user mistakes, real output otherwise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
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
    assert img is not None and img.shape[1] == 2 * 10 * 110  # ten tiles a row, zoom 2


def test_the_map_sheet_titles_each_tile_with_its_frame_number_and_shows_that_frames_map(tmp_path):
    """Read back from the drawn figure: tile titles are the picked frame numbers and each tile's
    image is that frame's skeleton map."""
    from appliance.cli.render import draw_map_sheet
    from appliance.features.skeleton_map import MapSpec, render_keypoints
    from appliance.keypoints.readers import read_keypoints

    seq = read_keypoints(DATA / "urfd-falls" / "pose_urfd_3classes.csv")[0]
    maps = render_keypoints(seq.keypoints, seq.layout, (seq.width, seq.height), MapSpec())
    picks = np.linspace(0, len(maps) - 1, 12).astype(int)
    fig = draw_map_sheet(maps, picks, "fall-01", 1.0)
    tiles = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in tiles] == [f"frame {i}" for i in picks]
    for ax, i in zip(tiles, picks, strict=True):
        assert np.array_equal(ax.images[0].get_array(), maps[i])
    assert fig.get_suptitle() == "fall-01"


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


# --- issue #14 items 11 and 16: no traceback for a closed pipe, a new folder or an empty file -----


def _write_models_config(tmp_path: Path) -> Path:
    from tests.conftest import write_appliance_config

    return write_appliance_config(
        tmp_path / "appliance.yaml", {"id": "gate", "source": "rtsp://192.0.2.10/s"}
    )


def test_a_reader_that_closes_the_pipe_early_gets_no_traceback(tmp_path):
    """`appliance models | head -0`: the pipe's read end is closed before the command writes a byte."""
    import os

    config = _write_models_config(tmp_path)
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the command starts: every write fails with EPIPE
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "appliance.cli", "models", "--config", str(config)],
            cwd=ROOT,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert proc.stderr == ""  # no traceback, no "Exception ignored ... BrokenPipeError"
    assert proc.returncode == 141  # what a shell reports for a command ended by SIGPIPE


@pytest.mark.skipif(not (DATA / "urfd-falls").is_dir(), reason="real data not found")
def test_score_out_into_a_folder_that_does_not_exist_yet_creates_it(tmp_path):
    from appliance.service.demo import STARTER_BUNDLE

    out_csv = tmp_path / "runs" / "today" / "scores.csv"
    keypoints = DATA / "urfd-falls" / "pose_urfd_3classes.csv"
    out = run(
        "appliance.cli", "score", "--bundle", str(STARTER_BUNDLE), "--keypoints", str(keypoints),
        "--only", "fall-01", "--out", str(out_csv),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out_csv.read_text().splitlines()[0] == "sequence,frame,score,label"
    # fall-01's 156 frames at 30 fps, thinned to the starter's 10 fps: every third frame has a row
    assert len(out_csv.read_text().splitlines()) == 1 + 52 and "scored at the model's 10 fps" in out.stdout


def test_score_out_where_no_folder_can_be_made_is_one_clear_line(tmp_path):
    from appliance.service.demo import STARTER_BUNDLE

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = run(
        "appliance.cli", "score", "--bundle", str(STARTER_BUNDLE), "--keypoints", str(tmp_path / "k.csv"),
        "--out", str(blocker / "x.csv"),
    )  # fmt: skip
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"cannot create the folder for {blocker / 'x.csv'}" in out.stderr


@pytest.mark.skipif(not (DATA / "urfd-falls").is_dir(), reason="real data not found")
def test_a_keypoint_file_without_a_single_joint_is_refused_naming_the_file(tmp_path):
    import numpy as np

    from appliance.keypoints.readers import read_keypoints
    from appliance.keypoints.table import write_keypoints_csv
    from appliance.service.demo import STARTER_BUNDLE

    # a real sequence with every coordinate lost (what a failed extraction writes): the fault itself
    seq = read_keypoints(DATA / "urfd-falls" / "pose_urfd_3classes.csv")[0]
    seq.keypoints[...] = np.nan
    empty = tmp_path / "empty.csv"
    write_keypoints_csv(empty, seq)
    out = run("appliance.cli", "score", "--bundle", str(STARTER_BUNDLE), "--keypoints", str(empty))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"{empty}: no joint coordinates in any of its 156 frames" in out.stderr


@pytest.mark.skipif(not (DATA / "urfd-falls").is_dir(), reason="real data not found")
def test_maps_takes_a_sequence_by_the_name_score_only_takes(tmp_path):
    keypoints = str(DATA / "urfd-falls" / "pose_urfd_3classes.csv")
    by_name = run("appliance.cli", "maps", "--keypoints", keypoints, "--sequence", "fall-03", "--out",
                  str(tmp_path / "a.png"))  # fmt: skip
    assert by_name.returncode == 0, by_name.stderr
    assert by_name.stdout.startswith("fall-03: 211 frames")
    by_position = run("appliance.cli", "maps", "--keypoints", keypoints, "--sequence", "2", "--out",
                      str(tmp_path / "b.png"))  # fmt: skip
    assert by_position.stdout.startswith("fall-03: 211 frames")
    unknown = run("appliance.cli", "maps", "--keypoints", keypoints, "--sequence", "fall-99", "--out",
                  str(tmp_path / "c.png"))  # fmt: skip
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
    assert "has no sequence 'fall-99'; it holds 30: fall-01, fall-02" in unknown.stderr


def test_help_texts_describe_what_the_commands_do_now():
    export_help = run("export", "--help")
    assert export_help.returncode == 0, export_help.stderr
    assert "later:" not in export_help.stdout
    assert "ONNX and TFLite" in export_help.stdout and "sign" in export_help.stdout
    top = run("appliance.cli", "--help").stdout
    assert "the bundled walking clip" not in top
    assert "two bundled clips" in top


def test_a_first_setup_without_libsystemd_prints_a_note_not_a_red_error(tmp_path):
    """`make setup` on a bare machine: the optional systemd-python step is skipped with one note
    (pkg-config is made to say libsystemd is missing), and the package metadata raises no
    setuptools deprecation banner (the license is an SPDX string)."""
    import tomllib

    out = subprocess.run(
        ["make", "-s", "systemd-extra", "PKG_CONFIG=false"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "note: systemd-python skipped" in out.stdout and "ERROR" not in out.stdout + out.stderr
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
