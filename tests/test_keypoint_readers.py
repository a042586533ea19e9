"""Keypoint file readers: OpenPose, AlphaPose tracked persons, our CSV/NPZ, and the dispatcher."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from appliance.errors import InputFormatError
from appliance.keypoints.alphapose import alphapose_clip_id, read_alphapose_tracked
from appliance.keypoints.openpose import read_openpose_dir
from appliance.keypoints.readers import read_keypoints
from appliance.keypoints.sequence import KeypointSequence
from appliance.keypoints.table import (
    joint_columns,
    read_keypoints_csv,
    read_keypoints_npz,
    write_keypoints_csv,
    write_keypoints_npz,
)
from appliance.pose.layouts import BODY25, COCO17

URFD_FILE = (
    Path(__file__).resolve().parents[1].parent / "shared" / "data" / "urfd-falls" / "pose_urfd_3classes.csv"
)
SHIFT_RIGHT = np.array([5.0, 0.0, 0.0], dtype=np.float32)  # move a person 5 px right


def standing_person(num_joints: int, left: float, top: float, width: float, height: float) -> np.ndarray:
    """(K, 3) joints spread over a box, confidence 0.8, the last two joints not seen (0, 0, 0)."""
    t = np.linspace(0.0, 1.0, num_joints)
    kp = np.stack([left + width * (t * 7 % 1.0), top + height * t, np.full(num_joints, 0.8)], axis=1)
    kp[[0, -1]] = [[left, top, 0.8], [left + width, top + height, 0.8]]  # pin the box corners
    kp[-3:-1] = 0.0
    return kp.astype(np.float32)


def write_openpose_frame(directory: Path, frame: int, people: list[np.ndarray]) -> Path:
    file = directory / f"cam1_{frame:012d}_keypoints.json"
    body = {
        "version": 1.3,
        "people": [
            {"person_id": [-1], "pose_keypoints_2d": p.reshape(-1).tolist(), "face_keypoints_2d": []}
            for p in people
        ],
    }
    file.write_text(json.dumps(body, indent=1))
    return file


@pytest.fixture
def openpose_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "openpose"
    directory.mkdir()
    small = standing_person(25, 500, 100, 40, 120)
    large = standing_person(25, 100, 50, 150, 380)
    write_openpose_frame(directory, 0, [small, large])  # largest person second
    write_openpose_frame(directory, 2, [])  # nobody in view
    write_openpose_frame(directory, 10, [large + SHIFT_RIGHT, small])  # largest person first
    return directory


def test_openpose_dir_picks_largest_person_per_frame(openpose_dir: Path) -> None:
    seq = read_openpose_dir(openpose_dir, width=1280, height=720, fps=25.0)
    large = standing_person(25, 100, 50, 150, 380)
    assert seq.layout is BODY25
    assert seq.keypoints.shape == (3, 25, 3)
    assert seq.name == "cam1"
    assert (seq.width, seq.height, seq.fps) == (1280, 720, 25.0)
    np.testing.assert_allclose(seq.keypoints[0], large)
    np.testing.assert_allclose(seq.keypoints[2], large + SHIFT_RIGHT)
    assert seq.meta["person_index"].tolist() == [1, -1, 0]
    assert seq.meta["people"].tolist() == [2, 0, 2]
    assert seq.labels is None


def test_openpose_frames_sorted_numerically_and_empty_frame_zero(openpose_dir: Path) -> None:
    seq = read_openpose_dir(openpose_dir)
    assert seq.frames.tolist() == [0, 2, 10]
    assert (seq.width, seq.height) == (640, 480)
    assert not seq.keypoints[1].any()


def test_openpose_truncated_json_names_file_and_line(openpose_dir: Path) -> None:
    file = openpose_dir / "cam1_000000000002_keypoints.json"
    lines = (
        write_openpose_frame(openpose_dir, 2, [standing_person(25, 0, 0, 50, 50)]).read_text().splitlines()
    )
    file.write_text("\n".join(lines[:20]))
    with pytest.raises(InputFormatError) as err:
        read_openpose_dir(openpose_dir)
    assert err.value.path == str(file)
    assert err.value.line is not None and err.value.line >= 20
    assert f"{file}:{err.value.line}: invalid JSON" in str(err.value)


def test_openpose_74_values_rejected_naming_file(openpose_dir: Path) -> None:
    file = openpose_dir / "cam1_000000000002_keypoints.json"
    file.write_text(json.dumps({"people": [{"pose_keypoints_2d": [1.0] * 74}]}))
    with pytest.raises(InputFormatError, match=r"74 pose_keypoints_2d values, expected 75.*BODY_25") as err:
        read_openpose_dir(openpose_dir)
    assert str(file) in str(err.value)


def test_openpose_empty_directory_rejected(tmp_path: Path) -> None:
    with pytest.raises(InputFormatError, match="no OpenPose"):
        read_openpose_dir(tmp_path)


def write_tracked(path: Path, persons: dict[str, dict[int, np.ndarray]]) -> Path:
    body = {
        pid: {f"{f:04d}": {"keypoints": kp.reshape(-1).tolist(), "scores": 2.5} for f, kp in frames.items()}
        for pid, frames in persons.items()
    }
    path.write_text(json.dumps(body))
    return path


@pytest.fixture
def tracked_clip(tmp_path: Path) -> tuple[Path, Path]:
    person = standing_person(17, 300, 100, 60, 200)
    file = write_tracked(
        tmp_path / "01_0014_alphapose_tracked_person.json",
        {
            "10": {4: person, 5: person + 1},
            "2": {0: person, 1: person + 2, 3: person + 4},  # frame 2 missing: a gap
        },
    )
    masks = tmp_path / "test_frame_mask"
    masks.mkdir()
    np.save(masks / "01_0014.npy", np.array([0, 0, 0, 1, 1, 1]))
    return file, masks


def test_alphapose_one_sequence_per_person_sorted_numerically(tracked_clip: tuple[Path, Path]) -> None:
    file, _ = tracked_clip
    first, second = read_alphapose_tracked(file)
    assert first.name == "01_0014#2" and second.name == "01_0014#10"
    assert first.layout is COCO17
    assert first.keypoints.shape == (3, 17, 3)
    assert first.frames.tolist() == [0, 1, 3]
    assert second.frames.tolist() == [4, 5]
    np.testing.assert_allclose(first.keypoints[2], standing_person(17, 300, 100, 60, 200) + 4)
    assert (first.width, first.height, first.fps) == (856, 480, 24.0)
    assert first.labels is None
    assert first.meta["scores"].tolist() == [2.5, 2.5, 2.5]


def test_alphapose_labels_come_from_frame_mask(tracked_clip: tuple[Path, Path]) -> None:
    file, masks = tracked_clip
    first, second = read_alphapose_tracked(file, frame_mask_dir=masks)
    assert first.labels.tolist() == [0, 0, 1]
    assert second.labels.tolist() == [1, 1]


def test_alphapose_missing_mask_raises(tracked_clip: tuple[Path, Path], tmp_path: Path) -> None:
    file, _ = tracked_clip
    empty = tmp_path / "no_masks"
    empty.mkdir()
    with pytest.raises(InputFormatError, match=r"no frame mask for clip '01_0014'") as err:
        read_alphapose_tracked(file, frame_mask_dir=empty)
    assert file.name in str(err.value)


def test_alphapose_frame_beyond_mask_raises(tracked_clip: tuple[Path, Path]) -> None:
    file, masks = tracked_clip
    np.save(masks / "01_0014.npy", np.zeros(5, dtype=np.int64))
    with pytest.raises(InputFormatError, match=r"person 10: frame 5 is beyond the 5 frames"):
        read_alphapose_tracked(file, frame_mask_dir=masks)


def test_alphapose_clip_id_from_filename() -> None:
    assert alphapose_clip_id("/data/pose/test/01_0014_alphapose_tracked_person.json") == "01_0014"
    assert alphapose_clip_id("abnormal_scene_4_scenario_1_alphapose_tracked_person.json") == (
        "abnormal_scene_4_scenario_1"
    )
    assert alphapose_clip_id("clip7.json") == "clip7"


def test_alphapose_wrong_keypoint_count_names_person_and_frame(tmp_path: Path) -> None:
    file = tmp_path / "02_0001_alphapose_tracked_person.json"
    file.write_text(json.dumps({"1": {"0007": {"keypoints": [0.0] * 54, "scores": 1.0}}}))
    with pytest.raises(InputFormatError, match=r"person 1, frame 7: 54 keypoint values, expected 51"):
        read_alphapose_tracked(file)


def sample_sequences() -> list[KeypointSequence]:
    """Two tracks of COCO-17 keypoints with an unseen joint (NaN) and a zero-confidence joint."""
    rng = np.random.default_rng(0)
    kp = rng.uniform(0, 400, size=(4, 17, 3)).astype(np.float32)
    kp[..., 2] = rng.uniform(0.1, 1.0, size=(4, 17))
    kp[1, 3] = [np.nan, np.nan, 0.0]
    kp[2, 4, 2] = 0.0
    labelled = KeypointSequence(
        name="shift3#7",
        layout=COCO17,
        keypoints=kp,
        frames=[10, 11, 13, 14],
        labels=[0, 0, 1, 2],
        width=640,
        height=480,
        fps=15.0,
    )
    unlabelled = KeypointSequence(
        name="shift3#9", layout=COCO17, keypoints=kp[:2] + 1, frames=[3, 4], width=640, height=480, fps=15.0
    )
    return [labelled, unlabelled]


def assert_same_sequence(got: KeypointSequence, want: KeypointSequence) -> None:
    assert got.name == want.name
    assert got.layout is want.layout
    np.testing.assert_array_equal(got.keypoints, want.keypoints)  # NaNs compare equal here
    assert got.frames.tolist() == want.frames.tolist()
    assert (got.width, got.height, got.fps) == (want.width, want.height, want.fps)
    assert (got.labels is None) == (want.labels is None)
    if want.labels is not None:
        assert got.labels.tolist() == want.labels.tolist()


def test_csv_round_trip_preserves_nan_and_zero_confidence(tmp_path: Path) -> None:
    want = sample_sequences()
    file = tmp_path / "shift3.csv"
    write_keypoints_csv(file, want)
    got = read_keypoints_csv(file)
    assert len(got) == 2
    for g, w in zip(got, want, strict=True):
        assert_same_sequence(g, w)
    assert np.isnan(got[0].keypoints[1, 3, :2]).all()
    assert got[0].keypoints[2, 4, 2] == 0.0
    assert [g.meta["track"] for g in got] == ["7", "9"]


def write_csv(path: Path, settings: str, header: list[str], rows: list[list[object]]) -> Path:
    lines = [*settings.splitlines(), ",".join(header), *(",".join(map(str, r)) for r in rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def coco_row(frame: int, label: object = "") -> list[object]:
    return [frame, label, *standing_person(17, 10, 20, 30, 90).reshape(-1).round(2)]


def test_csv_without_track_column_gives_one_sequence_with_layout_argument(tmp_path: Path) -> None:
    file = write_csv(
        tmp_path / "walk.csv",
        "# width=640\n# height=480",
        ["frame", "label", *joint_columns(COCO17)],
        [coco_row(2, 0), coco_row(1, 1)],
    )
    (seq,) = read_keypoints_csv(file, layout="coco17")
    assert seq.name == "walk"
    assert seq.frames.tolist() == [1, 2]
    assert seq.labels.tolist() == [1, 0]
    assert seq.fps == 30.0


def test_csv_unknown_layout_lists_known_layouts(tmp_path: Path) -> None:
    file = write_csv(tmp_path / "a.csv", "# layout=coco18\n# width=640\n# height=480", ["frame"], [])
    with pytest.raises(InputFormatError, match=r"unknown joint layout 'coco18'; known: .*coco17") as err:
        read_keypoints_csv(file)
    assert f"{file}:1:" in str(err.value)


def test_csv_missing_joint_column_named(tmp_path: Path) -> None:
    header = ["frame", "label", *joint_columns(COCO17)]
    header.remove("left_knee_y")
    file = write_csv(tmp_path / "b.csv", "# layout=coco17\n# width=640\n# height=480", header, [])
    with pytest.raises(InputFormatError, match=r"missing joint column 'left_knee_y'") as err:
        read_keypoints_csv(file)
    assert f"{file}:4:" in str(err.value)


def test_csv_non_numeric_cell_names_line_and_column(tmp_path: Path) -> None:
    row = coco_row(2)
    row[2 + 3 * 5 + 1] = "n/a"  # left_shoulder_y
    file = write_csv(
        tmp_path / "c.csv",
        "# layout=coco17\n# width=640\n# height=480",
        ["frame", "label", *joint_columns(COCO17)],
        [coco_row(1), row],
    )
    with pytest.raises(InputFormatError, match=r"column 'left_shoulder_y': 'n/a' is not a number") as err:
        read_keypoints_csv(file)
    assert err.value.line == 6
    assert f"{file}:6:" in str(err.value)


def test_csv_missing_size_and_conflicting_layout_rejected(tmp_path: Path) -> None:
    file = write_csv(tmp_path / "d.csv", "# layout=coco17", ["frame", *joint_columns(COCO17)], [])
    with pytest.raises(InputFormatError, match="width not given"):
        read_keypoints_csv(file)
    with pytest.raises(InputFormatError, match="file says layout=coco17 but body25 was asked"):
        read_keypoints_csv(file, layout="body25", width=640, height=480)


def test_npz_round_trip_preserves_nan_labels_and_settings(tmp_path: Path) -> None:
    for want in sample_sequences():
        file = tmp_path / f"{want.name.replace('#', '_')}.npz"
        write_keypoints_npz(file, want)
        assert_same_sequence(read_keypoints_npz(file), want)


def test_npz_wrong_shape_names_array(tmp_path: Path) -> None:
    file = tmp_path / "bad.npz"
    np.savez(
        file,
        keypoints=np.zeros((5, 13, 3)),
        frames=np.arange(5),
        layout=np.asarray("coco17"),
        width=np.asarray(640),
        height=np.asarray(480),
    )
    with pytest.raises(
        InputFormatError, match=r"array 'keypoints' has shape \(5, 13, 3\), expected \(N, 17, 3\)"
    ):
        read_keypoints_npz(file)
    np.savez(
        file,
        keypoints=np.zeros((5, 17, 3)),
        frames=np.arange(4),
        layout=np.asarray("coco17"),
        width=np.asarray(640),
        height=np.asarray(480),
    )
    with pytest.raises(InputFormatError, match=r"array 'frames' has shape \(4,\), expected \(5,\)") as err:
        read_keypoints_npz(file)
    assert str(file) in str(err.value)


def test_read_keypoints_dispatches_on_path(tmp_path: Path, openpose_dir: Path, tracked_clip) -> None:
    csv_file, npz_file = tmp_path / "t.csv", tmp_path / "t.npz"
    write_keypoints_csv(csv_file, sample_sequences())
    write_keypoints_npz(npz_file, sample_sequences()[0])
    (openpose,) = read_keypoints(openpose_dir, width=1920, height=1080)
    assert openpose.layout is BODY25 and openpose.width == 1920
    assert [s.frames.tolist() for s in read_keypoints(tracked_clip[0])] == [[0, 1, 3], [4, 5]]
    assert [len(s) for s in read_keypoints(csv_file)] == [4, 2]
    assert [len(s) for s in read_keypoints(npz_file)] == [4]


def test_read_keypoints_recognises_tracked_persons_by_shape(tracked_clip: tuple[Path, Path]) -> None:
    renamed = tracked_clip[0].with_name("clip.json")
    renamed.write_text(tracked_clip[0].read_text())
    assert [s.name for s in read_keypoints(renamed, width=1080, height=720)] == ["clip#2", "clip#10"]


def test_read_keypoints_missing_and_unknown_paths(tmp_path: Path) -> None:
    with pytest.raises(InputFormatError, match="no such file") as err:
        read_keypoints(tmp_path / "absent.csv")
    assert "absent.csv" in str(err.value)
    video = tmp_path / "shift.mp4"
    video.write_bytes(b"\x00")
    with pytest.raises(
        InputFormatError, match=r"unknown keypoint file type '.mp4'; accepted: .*OpenPose.*\.npz"
    ):
        read_keypoints(video)
    with pytest.raises(InputFormatError, match="unknown joint layout 'coco18'"):
        read_keypoints(video, layout="coco18")


def test_read_keypoints_refuses_settings_a_format_fixes(openpose_dir: Path) -> None:
    with pytest.raises(InputFormatError, match="layout is body25; layout=coco17 does not apply"):
        read_keypoints(openpose_dir, layout="coco17")


@pytest.mark.skipif(not URFD_FILE.is_file(), reason=f"URFD skeleton file not present at {URFD_FILE}")
def test_read_keypoints_reads_real_urfd_file() -> None:
    sequences = read_keypoints(URFD_FILE)
    assert len(sequences) == 30
    assert sum(len(s) for s in sequences) == 2803
    assert all(s.layout.name == "urfd13" and s.labels is not None for s in sequences)
    with pytest.raises(InputFormatError, match="width is 640; width=1280 does not apply"):
        read_keypoints(URFD_FILE, width=1280)
