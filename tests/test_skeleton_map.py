"""Skeleton maps: geometry, crop at image borders, missing joints, equality across joint layouts."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from appliance.features.skeleton_map import (
    MapSpec,
    draw_crop,
    render_keypoints,
    render_map,
    resize_bilinear_antialiased,
)
from appliance.pose.layouts import (
    BLAZEPOSE33,
    BODY25,
    BODY_JOINTS,
    BODY_LIMBS,
    COCO17,
    LAYOUTS,
    URFD13,
    JointLayout,
    to_body_graph,
)

# 800x560 image: the 560 crop maps 20 canvas pixels onto one map pixel, so expectations are exact.
W, H = 800, 560
SPEC = MapSpec(limb_thickness=0.5, binarize_threshold=0.2)
# The first 15 BODY_25 joints are the body graph itself.
BODY25_15 = JointLayout("body25_15", BODY_JOINTS, tuple(range(len(BODY_JOINTS))))


def body(**joints: tuple[float, float]) -> np.ndarray:
    """A (15, 3) body-graph skeleton with the named joints seen (confidence 1), others missing."""
    out = np.zeros((len(BODY_JOINTS), 3), dtype=np.float32)
    for name, (x, y) in joints.items():
        out[BODY_JOINTS.index(name)] = (x, y, 1.0)
    return out


STANDING = {
    "nose": (400, 230),
    "neck": (400, 280),
    "right_shoulder": (360, 280),
    "right_elbow": (350, 340),
    "right_wrist": (345, 395),
    "left_shoulder": (440, 280),
    "left_elbow": (450, 340),
    "left_wrist": (455, 395),
    "mid_hip": (400, 410),
    "right_hip": (380, 410),
    "right_knee": (378, 490),
    "right_ankle": (376, 550),
    "left_hip": (420, 410),
    "left_knee": (422, 490),
    "left_ankle": (424, 550),
}


def test_horizontal_limb_lights_exactly_the_expected_map_pixels():
    # neck at the crop centre (280, 280), the corner of map pixels 13/14; limb 200 px = 10 map px right
    skeleton = body(neck=(400, 280), right_shoulder=(600, 280))
    m = render_map(skeleton, skeleton[1, :2], (W, H), SPEC)
    expected = np.zeros((28, 28), dtype=np.uint8)
    expected[13:15, 14:24] = 1  # rows straddle the limb; columns 14..23 cover x in [280, 480]
    np.testing.assert_array_equal(m, expected)


def test_standing_person_is_upright_and_centred_on_the_neck():
    skeleton = body(**STANDING)
    m = render_map(skeleton, skeleton[1, :2], (W, H), SPEC)
    rows = np.flatnonzero(m.any(axis=1))
    cols = np.flatnonzero(m.any(axis=0))
    # the nose is 50 px (2.5 map px) above the neck: row 11 gets only 0.15 of full intensity (< 0.2),
    # so the head starts at row 12; the ankles 270 px below the neck reach the last row
    assert rows.min() == 12 and rows.max() == 27
    # shoulders span +-40 px, wrists +-55 px: columns 11..16 around the centre 14
    assert cols.min() == 11 and cols.max() == 16
    assert m[14, 13] == 1 and m[14, 14] == 1  # the neck itself
    # the pose is mirror-symmetric about the neck; rasterisation may differ by a pixel at 2 places
    assert (m != m[:, ::-1]).sum() <= 4


def test_map_is_binary_uint8():
    m = render_map(body(**STANDING), np.array([400, 280]), (W, H), SPEC)
    assert m.dtype == np.uint8
    assert set(np.unique(m)) <= {0, 1}


def _reference_map(skeleton: np.ndarray, centre, spec: MapSpec) -> np.ndarray:
    """The paper's steps literally: draw the whole image, pad it, crop around the neck, resize, binarise."""
    side = spec.crop_side(H)
    t = spec.canvas_thickness(side)
    image = np.zeros((H, W), dtype=np.uint8)  # what falls outside the image is lost, as in a rendered frame
    pts = np.round(skeleton[:, :2] * 16).astype(np.int64)
    seen = skeleton[:, 2] >= spec.min_confidence
    for a, b in BODY_LIMBS:
        if seen[a] and seen[b]:
            cv2.line(image, tuple(pts[a]), tuple(pts[b]), 255, t, cv2.LINE_8, 4)
    for j in np.flatnonzero(seen):
        cv2.circle(image, tuple(pts[j]), (t * 16) // 2, 255, -1, cv2.LINE_8, 4)
    padded = np.pad(image, side)
    x0, y0 = (np.floor(np.asarray(centre) - side / 2.0) + side).astype(int)
    crop = padded[y0 : y0 + side, x0 : x0 + side]
    small = resize_bilinear_antialiased(crop, spec.map_size)
    return (small >= spec.binarize_threshold * 255).astype(np.uint8)


@pytest.mark.parametrize(
    "shift",
    [(0, 0), (-385, 0), (385, 0), (0, -270), (0, 260), (-390, -275), (390, 270)],
    ids=["centre", "left", "right", "top", "bottom", "top-left", "bottom-right"],
)
def test_crop_at_image_borders_matches_drawing_the_full_image_then_cropping(shift):
    joints = {k: (x + shift[0], y + shift[1]) for k, (x, y) in STANDING.items()}
    skeleton = body(**joints)
    centre = skeleton[1, :2]
    m = render_map(skeleton, centre, (W, H), SPEC)
    np.testing.assert_array_equal(m, _reference_map(skeleton, centre, SPEC))


def test_limbs_outside_the_image_are_not_drawn():
    # neck 10 px from the left edge; a limb reaching 200 px further left leaves the image after 10 px
    skeleton = body(neck=(10, 280), right_shoulder=(-190, 280))
    m = render_map(skeleton, skeleton[1, :2], (W, H), SPEC)
    inside = body(neck=(10, 280), right_shoulder=(0, 280))
    assert m[:, :13].sum() == 0  # the crop columns left of x=0 are padding
    np.testing.assert_array_equal(m, render_map(inside, inside[1, :2], (W, H), SPEC))


def test_joints_below_confidence_are_not_drawn():
    full = body(**STANDING)
    low = full.copy()
    low[BODY_JOINTS.index("left_wrist"), 2] = 0.05  # below min_confidence 0.1
    no_forearm = body(**{k: v for k, v in STANDING.items() if k != "left_wrist"})
    centre = full[1, :2]
    np.testing.assert_array_equal(
        render_map(low, centre, (W, H), SPEC), render_map(no_forearm, centre, (W, H), SPEC)
    )
    assert render_map(full, centre, (W, H), SPEC).sum() > render_map(low, centre, (W, H), SPEC).sum()


def test_missing_neck_keeps_the_last_seen_neck_as_crop_centre():
    frames = np.stack([body(**STANDING)] * 3)
    frames[1, BODY_JOINTS.index("neck"), 2] = 0.0  # neck lost in frame 1
    frames[:, :, 0] += np.array([0, 40, 80])[:, None]  # the person moves right
    maps = render_keypoints(frames, BODY25_15, (W, H), SPEC)
    # frame 1 is centred where the neck was in frame 0, so its body sits 2 map px right of centre
    expected = render_map(frames[1], frames[0, 1, :2], (W, H), SPEC)
    np.testing.assert_array_equal(maps[1], expected)


def test_empty_skeleton_gives_an_empty_map():
    maps = render_keypoints(np.zeros((2, 17, 3), np.float32), COCO17, (W, H), SPEC)
    assert maps.shape == (2, 28, 28) and maps.sum() == 0


def test_nan_coordinates_count_as_missing_joints():
    kp = np.full((1, 17, 3), np.nan, dtype=np.float32)
    body_graph = to_body_graph(kp, COCO17)
    assert np.all(body_graph == 0)


def _as_layout(layout: JointLayout, joints: dict[str, tuple[float, float]]) -> np.ndarray:
    """Write named joint positions into a layout's keypoint array (unknown joints missing)."""
    kp = np.zeros((layout.num_joints, 3), dtype=np.float32)
    for i, name in enumerate(layout.joints):
        if name in joints:
            kp[i] = (*joints[name], 0.9)
    return kp


@pytest.mark.parametrize("layout", [COCO17, BLAZEPOSE33, URFD13, BODY25], ids=lambda x: x.name)
def test_same_body_gives_the_same_map_in_every_layout(layout):
    # a crouching, asymmetric pose, so a wrongly mapped joint would show
    joints = {
        "nose": (300, 250),
        "right_shoulder": (270, 300),
        "left_shoulder": (330, 296),
        "right_elbow": (240, 350),
        "left_elbow": (380, 320),
        "right_wrist": (250, 400),
        "left_wrist": (420, 300),
        "right_hip": (285, 420),
        "left_hip": (325, 418),
        "right_knee": (250, 470),
        "left_knee": (360, 480),
        "right_ankle": (260, 540),
        "left_ankle": (350, 545),
        # extra joints some layouts have: they must not change the map
        "left_eye": (305, 245),
        "right_ear": (290, 250),
        "left_heel": (352, 548),
        "right_thumb": (252, 402),
    }
    # BODY_25 carries neck and mid-hip itself: put them where the other layouts derive them
    joints["neck"] = (300.0, 298.0)
    joints["mid_hip"] = (305.0, 419.0)
    reference = render_keypoints(_as_layout(BODY25, joints)[None], BODY25, (640, 480))
    maps = render_keypoints(_as_layout(layout, joints)[None], layout, (640, 480))
    assert reference.sum() > 40
    np.testing.assert_array_equal(maps, reference)


def test_every_layout_maps_each_body_joint_to_a_joint_of_the_same_name():
    for layout in LAYOUTS.values():
        for body_name, src in zip(BODY_JOINTS, layout.to_body, strict=True):
            if isinstance(src, tuple):
                assert body_name in ("neck", "mid_hip")
                assert {layout.joints[i].split("_", 1)[1] for i in src} == {
                    body_name.replace("neck", "shoulder").replace("mid_", "")
                }
            else:
                assert layout.joints[src] == body_name


def test_derived_neck_confidence_is_the_lower_shoulder_confidence():
    kp = np.zeros((17, 3), np.float32)
    kp[5] = (100, 100, 0.9)
    kp[6] = (140, 104, 0.3)
    b = to_body_graph(kp, COCO17)
    np.testing.assert_allclose(b[1], (120, 102, 0.3), rtol=1e-6)


def test_antialiased_resize_keeps_every_limb_connected_where_plain_bilinear_breaks_them():
    # why the resize is antialiased: 100 random 150 px limbs, each must stay one 8-connected stroke
    rng = np.random.default_rng(0)
    broken_ours = broken_plain = 0
    for _ in range(100):
        a = rng.uniform(250, 550, 2)
        angle = rng.uniform(0, np.pi)
        b = a + 150 * np.array([np.cos(angle), np.sin(angle)])
        canvas = draw_crop(
            body(right_shoulder=tuple(a), right_elbow=tuple(b))[None], np.array([400, 280]), (W, H), SPEC
        )
        ours = (resize_bilinear_antialiased(canvas, 28) >= 0.2 * 255).astype(np.uint8)
        plain = (cv2.resize(canvas, (28, 28), interpolation=cv2.INTER_LINEAR) >= 0.2 * 255).astype(np.uint8)
        broken_ours += cv2.connectedComponents(ours, connectivity=8)[0] - 1 != 1
        broken_plain += cv2.connectedComponents(plain, connectivity=8)[0] - 1 != 1
    assert broken_ours == 0
    assert broken_plain > 30  # measured: 66 of 100 limbs split or vanish with cv2.INTER_LINEAR


def test_resize_preserves_mean_intensity():
    rng = np.random.default_rng(0)
    img = (rng.random((560, 560)) * 255).astype(np.uint8)
    small = resize_bilinear_antialiased(img, 28)
    assert abs(small.mean() - img.mean()) < 0.5


def test_map_size_and_thickness_are_parameters():
    skeleton = body(**STANDING)
    small = render_map(skeleton, skeleton[1, :2], (W, H), MapSpec(map_size=56, limb_thickness=0.5))
    assert small.shape == (56, 56)
    thin = render_map(skeleton, skeleton[1, :2], (W, H), MapSpec(limb_thickness=0.3))
    thick = render_map(skeleton, skeleton[1, :2], (W, H), MapSpec(limb_thickness=1.0))
    assert thick.sum() > thin.sum()
