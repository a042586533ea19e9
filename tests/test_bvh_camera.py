"""BVH parsing, forward kinematics and the virtual ceiling camera, on hand-made and real Bandai clips."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest

from appliance.errors import InputFormatError
from appliance.pose.layouts import COCO17
from export.mocap.bvh import forward_kinematics, parse_bvh_text, read_bvh
from export.mocap.ceiling_camera import (
    CeilingCamera,
    clip_azimuth,
    project_bvh,
    project_points,
    world_to_camera,
)

BANDAI = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mocap-bandai"
WALK = BANDAI / "dataset-1" / "data" / "dataset-1_walk_normal_001.bvh"
WALK2 = BANDAI / "dataset-2" / "data" / "dataset-2_walk_normal_001.bvh"
RUN2 = BANDAI / "dataset-2" / "data" / "dataset-2_run_normal_001.bvh"
needs_bandai = pytest.mark.skipif(
    not WALK.is_file(), reason=f"Bandai Namco mocap data not found under {BANDAI} (see shared/data/README.md)"
)
OBSERVED = [COCO17.joints.index(j) for j in COCO17.joints if "eye" not in j and "ear" not in j]
C = COCO17.joints.index

# Root with position channels (they replace its OFFSET), then 3-channel joints and an End Site.
TINY = """HIERARCHY
ROOT Hips
{
  OFFSET 50 50 50
  CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation
  JOINT Chest
  {
    OFFSET 0 10 0
    CHANNELS 3 Zrotation Xrotation Yrotation
    JOINT Hand
    {
      OFFSET 5 0 0
      CHANNELS 3 Zrotation Xrotation Yrotation
      End Site
      {
        OFFSET 0 2 0
      }
    }
  }
}
MOTION
Frames: 2
Frame Time: 0.04
1 2 3 0 0 0 0 0 0 0 0 0
1 2 3 90 0 0 0 0 0 0 90 0
"""


def _bvh_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "clip.bvh"
    path.write_text(text)
    return path


# --- parser and forward kinematics on hand-made files -------------------------------------------


def test_tiny_bvh_forward_kinematics_gives_exact_positions(tmp_path: Path) -> None:
    clip = read_bvh(_bvh_file(tmp_path, TINY))
    assert clip.joint_names == ("Hips", "Chest", "Hand")
    assert clip.num_frames == 2 and clip.fps == pytest.approx(25.0)
    pos = forward_kinematics(clip, end_sites=True)
    # Frame 0: no rotation; the root sits at its position channels, not its OFFSET.
    np.testing.assert_allclose(pos[0], [[1, 2, 3], [1, 12, 3], [6, 12, 3], [6, 14, 3]], atol=1e-9)
    # Frame 1: root Zrotation 90 turns the chest offset +y into -x and the hand offset +x into +y;
    # the hand's Xrotation 90 then turns the End Site's +y into +z (Rz90 leaves z alone).
    np.testing.assert_allclose(pos[1], [[1, 2, 3], [-9, 2, 3], [-9, 7, 3], [-9, 7, 5]], atol=1e-9)


@pytest.mark.parametrize(
    ("order", "expected"),
    [("Zrotation Xrotation Yrotation", [0, 0, 1]), ("Xrotation Zrotation Yrotation", [-1, 0, 0])],
)
def test_rotation_order_follows_the_channel_order(tmp_path: Path, order: str, expected: list[int]) -> None:
    # Z=90 and X=90: Rz @ Rx maps +y to +z, Rx @ Rz maps +y to -x.
    values = {"Zrotation": 90, "Xrotation": 90, "Yrotation": 0}
    text = (
        f"HIERARCHY\nROOT A\n{{\nOFFSET 0 0 0\nCHANNELS 3 {order}\nEnd Site\n{{\nOFFSET 0 1 0\n}}\n}}\n"
        f"MOTION\nFrames: 1\nFrame Time: 0.1\n{' '.join(str(values[c]) for c in order.split())}\n"
    )
    pos = forward_kinematics(read_bvh(_bvh_file(tmp_path, text)), end_sites=True)
    np.testing.assert_allclose(pos[0, 1], expected, atol=1e-9)


def _drop_line(text: str, startswith: str, occurrence: int = 1) -> str:
    lines = text.splitlines()
    hits = [i for i, line in enumerate(lines) if line.strip().startswith(startswith)]
    del lines[hits[occurrence - 1]]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("name", "text", "line", "message"),
    [
        ("missing MOTION", TINY.split("MOTION")[0], 20, "expected MOTION"),
        ("short motion line", TINY.replace("1 2 3 90 0 0 0 0 0 0 90 0", "1 2 3 90 0 0"), 25, "has 6 values"),
        ("non-numeric value", TINY.replace("1 2 3 90 0 0", "1 2 x 90 0 0"), 25, "non-numeric"),
        ("non-numeric offset", TINY.replace("OFFSET 5 0 0", "OFFSET 5 a 0"), 12, "non-numeric"),
        ("missing '}'", _drop_line(TINY, "}", 1), 20, "unclosed"),
        ("extra '}'", TINY.replace("MOTION", "}\nMOTION"), 21, "unbalanced '}'"),
        ("missing '{'", _drop_line(TINY, "{", 2), 7, "expected '{'"),
        ("frame count", TINY.replace("Frames: 2", "Frames: 3"), 25, "3 frames"),
        ("channel count", TINY.replace("CHANNELS 3 Z", "CHANNELS 4 Z", 1), 9, "declares 4 channels"),
        (
            "unknown channel",
            TINY.replace("Xrotation Yrotation\n    JOINT", "Wrotation Yrotation\n    JOINT"),
            9,
            "Wrot",
        ),
    ],
)
def test_malformed_bvh_raises_input_format_error_naming_the_line(
    tmp_path: Path, name: str, text: str, line: int, message: str
) -> None:
    path = _bvh_file(tmp_path, text)
    with pytest.raises(InputFormatError) as info:
        read_bvh(path)
    assert info.value.line == line, f"{name}: {info.value}"
    assert str(info.value).startswith(f"{path}:{line}: ")
    assert message.lower() in str(info.value).lower(), f"{name}: {info.value}"


def test_empty_or_non_bvh_text_raises_input_format_error() -> None:
    with pytest.raises(InputFormatError, match="end of file"):
        parse_bvh_text("", "empty.bvh")
    with pytest.raises(InputFormatError, match="expected HIERARCHY"):
        parse_bvh_text("video,frame\n1,2\n", "x.csv")


# --- camera geometry ------------------------------------------------------------------------------


def _camera_at_origin(**kwargs: float) -> CeilingCamera:
    return CeilingCamera(x_m=0.0, z_m=0.0, yaw_deg=0.0, **kwargs)


def test_point_on_the_optical_axis_lands_at_the_image_centre() -> None:
    cam = _camera_at_origin()
    tilt = math.radians(cam.tilt_deg)
    on_axis = cam.position + 3.0 * np.array([0.0, -math.sin(tilt), math.cos(tilt)])
    floor_hit = [0.0, 0.0, cam.height_m / math.tan(tilt)]  # where the optical axis meets the floor
    uv, conf = project_points(cam, np.array([on_axis, floor_hit]))
    np.testing.assert_allclose(uv, [[320, 240], [320, 240]], atol=1e-9)
    np.testing.assert_array_equal(conf, [1, 1])
    np.testing.assert_allclose(world_to_camera(cam, on_axis), [0, 0, 3], atol=1e-12)


def test_floor_below_the_camera_is_in_front_but_below_the_image() -> None:
    cam = _camera_at_origin()
    uv, conf = project_points(cam, np.array([[0.0, 0.0, 0.0]]))
    # Depth h*sin(tilt), image row 240 + f / tan(tilt) = 1040: out of the 480-row image.
    assert world_to_camera(cam, [0.0, 0.0, 0.0])[2] == pytest.approx(2.7 * math.sin(math.radians(32)))
    np.testing.assert_allclose(uv[0], [320, 240 + 500 / math.tan(math.radians(32))], atol=1e-9)
    assert conf[0] == 0


def test_points_behind_the_camera_have_zero_confidence_and_no_pixels() -> None:
    uv, conf = project_points(_camera_at_origin(), np.array([[0.0, 1.0, -2.0], [0.0, 2.7, 0.0]]))
    assert np.isnan(uv).all() and (conf == 0).all()


@pytest.mark.parametrize(
    ("distance", "in_view"), [(1.5, False), (2.0, True), (4.0, True), (6.0, True), (9.5, False)]
)
def test_a_standing_person_is_fully_in_view_between_2_and_6_m(distance: float, in_view: bool) -> None:
    # Feet and head of a 1.7 m person on the image's centre column (default optics).
    _, conf = project_points(_camera_at_origin(), np.array([[0.0, 0.0, distance], [0.0, 1.7, distance]]))
    assert bool(conf.all()) is in_view


def test_the_image_right_is_world_minus_x_for_a_camera_looking_along_plus_z() -> None:
    # Right-handed, y up, looking along +z: +x is on the camera's left.
    uv, _ = project_points(_camera_at_origin(), np.array([[1.0, 1.0, 4.0], [-1.0, 1.0, 4.0]]))
    assert uv[0, 0] < 320 < uv[1, 0]


def test_unplaced_camera_refuses_to_project() -> None:
    with pytest.raises(ValueError, match="not placed"):
        project_points(CeilingCamera(), np.zeros((1, 3)))


# --- real Bandai clips ---------------------------------------------------------------------------


def _world(path: Path) -> tuple[np.ndarray, dict[str, int], float]:
    clip = read_bvh(path)
    return forward_kinematics(clip), {n: i for i, n in enumerate(clip.joint_names)}, clip.fps


@needs_bandai
def test_normal_walk_covers_about_8_m_in_6_5_s() -> None:
    pos, j, fps = _world(WALK)
    assert pos.shape == (195, 22, 3)
    assert fps == pytest.approx(30.0, rel=1e-4)
    assert len(pos) / fps == pytest.approx(6.5, abs=0.01)
    hips = pos[:, j["Hips"]]
    displacement_m = np.linalg.norm((hips[-1] - hips[0])[[0, 2]]) / 100
    assert displacement_m == pytest.approx(8.08, abs=0.05)  # the data README rounds this to 7.9 m
    assert abs(hips[-1, 0] - hips[0, 0]) < 10  # straight along +z within 10 cm


@needs_bandai
def test_walk_keeps_the_feet_on_the_floor_and_the_head_at_135_to_140_cm() -> None:
    pos, j, _ = _world(WALK)
    y = pos[..., 1]
    toes = np.minimum(y[:, j["Toes_L"]], y[:, j["Toes_R"]])
    ankles = np.minimum(y[:, j["Foot_L"]], y[:, j["Foot_R"]])
    # The floor is y = 0: the lower toe joint stays 4-5.5 cm, the lower ankle 11.7-13.7 cm above it.
    assert toes.min() > 3.0 and toes.max() < 6.0
    assert ankles.min() > 11.0 and ankles.max() < 14.5
    head = y[:, j["Head"]]
    assert head.min() > 130 and head.max() < 145
    assert 135 < np.median(head) < 140
    assert (head - ankles).min() > 120  # and over 1.2 m above the lower ankle joint, every frame


@needs_bandai
def test_run_has_a_higher_mean_root_speed_than_a_walk() -> None:
    def speed(path: Path) -> float:
        pos, j, fps = _world(path)
        steps = np.diff(pos[:, j["Hips"]][:, [0, 2]], axis=0)
        return float(np.linalg.norm(steps, axis=1).mean() * fps / 100)

    walk, run = speed(WALK2), speed(RUN2)
    assert 1.0 < walk < 1.3 and 3.3 < run < 4.0  # m/s: measured 1.12 and 3.65
    assert run > 2.5 * walk


@needs_bandai
def test_projected_walk_is_a_coco17_sequence_with_camera_meta() -> None:
    seq = project_bvh(WALK)
    assert seq.layout is COCO17 and seq.keypoints.shape == (195, 17, 3)
    assert (seq.width, seq.height, seq.fps, seq.labels) == (640, 480, 30.0, None)
    np.testing.assert_array_equal(seq.frames, np.arange(195))
    assert seq.name == "dataset-1_walk_normal_001" and seq.meta["clip"] == seq.name
    camera = seq.meta["camera"]
    assert camera["height_m"] == 2.7 and camera["distance_m"] == 4.0 and camera["yaw_deg"] is not None
    for eye_or_ear in ("left_eye", "right_eye", "left_ear", "right_ear"):
        assert (seq.keypoints[:, C(eye_or_ear), 2] == 0).all()
    conf = seq.keypoints[:, OBSERVED, 2]
    assert set(np.unique(conf)) <= {0.0, 1.0}


@needs_bandai
def test_projected_head_is_above_the_ankles_in_every_frame() -> None:
    kp = project_bvh(WALK).keypoints
    ankles_y = np.minimum(kp[:, C("left_ankle"), 1], kp[:, C("right_ankle"), 1])
    assert (kp[:, C("nose"), 1] < ankles_y - 100).all()  # and the person is over 100 px tall


@needs_bandai
def test_default_side_view_shows_the_walk_crossing_the_image_mostly_in_view() -> None:
    kp = project_bvh(WALK).keypoints
    all_in = (kp[:, OBSERVED, 2] > 0).all(axis=1)
    # Camera 4 m from the middle of an 8 m walk: the walker enters and leaves the image.
    assert 0.60 < all_in.mean() < 0.66  # measured 0.626
    middle = slice(len(kp) // 2 - 30, len(kp) // 2 + 30)
    assert all_in[middle].all()
    hip_u = kp[:, C("left_hip"), 0]
    assert hip_u[0] < 0 and hip_u[-1] > 640  # azimuth 90: left to right, from off-image to off-image


@needs_bandai
def test_fit_in_view_moves_the_camera_back_until_the_whole_walk_is_in_view() -> None:
    seq = project_bvh(WALK, CeilingCamera(fit_in_view=True))
    assert (seq.keypoints[:, OBSERVED, 2] > 0).all()
    assert 6.0 < seq.meta["camera"]["distance_m"] < 9.0


@needs_bandai
@pytest.mark.parametrize(("azimuth", "left_on_image_right"), [(180.0, True), (0.0, False)])
def test_person_left_is_on_the_image_right_when_seen_from_the_front(
    azimuth: float, left_on_image_right: bool
) -> None:
    kp = project_bvh(WALK, CeilingCamera(azimuth_deg=azimuth)).keypoints
    left_right = kp[:, C("left_shoulder"), 0] > kp[:, C("right_shoulder"), 0]
    assert left_right.mean() == (1.0 if left_on_image_right else 0.0)


@needs_bandai
def test_placement_is_deterministic_and_resampling_follows_the_camera_fps() -> None:
    a, b = project_bvh(WALK), project_bvh(WALK, name="other")
    np.testing.assert_array_equal(a.keypoints, b.keypoints)
    assert b.name == "other"
    half = project_bvh(WALK, CeilingCamera(fps=15.0))
    assert len(half) == 98 and half.fps == 15.0  # 6.47 s span at 15 fps
    np.testing.assert_allclose(half.keypoints[1, OBSERVED], a.keypoints[2, OBSERVED], atol=0.05)
    assert clip_azimuth("dataset-1_walk_normal_001") == clip_azimuth("dataset-1_walk_normal_001")
    assert len({clip_azimuth(f"walk_{i}") for i in range(50)}) > 3


@needs_bandai
def test_parse_and_project_one_clip_takes_well_under_100_ms() -> None:
    project_bvh(WALK)  # warm imports and caches
    start = time.perf_counter()
    project_bvh(WALK2)  # 273 frames
    assert time.perf_counter() - start < 0.1


def test_projecting_a_non_bandai_skeleton_names_the_missing_joints(tmp_path: Path) -> None:
    with pytest.raises(InputFormatError, match="no joint"):
        project_bvh(_bvh_file(tmp_path, TINY))
