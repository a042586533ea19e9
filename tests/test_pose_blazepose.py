"""The blazepose backend on real footage: accuracy against reference keypoints, small distant people,
tracking, and the model-file setup step (hashes, clear errors, offline install from a wheel)."""

from __future__ import annotations

import itertools
import json
import math
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from appliance.errors import ApplianceError
from appliance.pose.base import Person, PoseBackend
from appliance.pose.blazepose_detector import ssd_anchors
from appliance.pose.layouts import BLAZEPOSE33, COCO17
from appliance.pose.model_files import (
    DETECTOR,
    INSTALL_COMMAND,
    LANDMARK,
    find_model_files,
    install_pose_models,
)
from appliance.pose.roi import Roi

BODY13 = [BLAZEPOSE33.joints.index(j) for j in COCO17.joints if "eye" not in j and "ear" not in j]


@pytest.fixture(scope="module")
def data_dir() -> Path:
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def model_dir() -> Path:
    try:
        detector, _ = find_model_files(None)
    except ApplianceError as exc:
        if os.environ.get("CI"):  # CI's setup installs them: a missing model is a failure there
            pytest.fail(f"BlazePose model files not installed by the setup command: {exc}")
        pytest.skip(f"BlazePose model files not installed ({INSTALL_COMMAND}): {exc}")
    return detector.parent


def _onnx_model_dir(model_dir: Path) -> Path:
    """The model folder when it holds the landmark models' ONNX conversion (make pose-onnx)."""
    try:
        find_model_files(model_dir, "full", "onnxruntime")
    except ApplianceError as exc:
        if os.environ.get("CI"):  # make test converts them first: missing is a failure there
            pytest.fail(f"the ONNX landmark model is not there: {exc}")
        pytest.skip(f"the ONNX landmark model is not there (make pose-onnx): {exc}")
    return model_dir


@pytest.fixture(params=[("full", "tflite"), ("lite", "tflite"), ("full", "onnxruntime")], ids="-".join)
def backend(request, model_dir: Path):
    """The backend with each landmark model and runtime: every accuracy test holds for each."""
    from appliance.pose.blazepose import BlazePoseBackend

    landmark, runtime = request.param
    if runtime == "onnxruntime":
        _onnx_model_dir(model_dir)
    b = BlazePoseBackend(model_dir=model_dir, threads=2, landmark_model=landmark, runtime=runtime)
    yield b
    b.close()


def _frames(path: Path, limit: int | None = None) -> Iterator[np.ndarray]:
    if not path.is_file():
        pytest.skip(f"test data {path} not present")
    cap = cv2.VideoCapture(str(path))
    n = 0
    while limit is None or n < limit:
        ok, frame = cap.read()
        if not ok:
            break
        n += 1
        yield frame
    cap.release()


def _good(person: Person) -> bool:
    """A usable skeleton: at least 8 of the 13 main body joints visible."""
    return int((person.keypoints[BODY13, 2] >= 0.5).sum()) >= 8


# -- accuracy on real clips ------------------------------------------------------------------------
def test_squats_keypoints_within_30px_of_blazepose_reference(backend, data_dir: Path) -> None:
    ref = np.asarray(json.loads((data_dir / "pose-testdata/pose_squats.full.json").read_text()))[..., :2]
    errors = []
    for i, frame in enumerate(_frames(data_dir / "pose-testdata/pose_squats.mp4")):
        people = backend.infer(frame)
        assert len(people) == 1, f"frame {i}: {len(people)} people"
        errors.append(np.linalg.norm(people[0].keypoints[:, :2] - ref[i], axis=1))
    assert len(errors) == len(ref) == 65
    assert np.median(errors) <= 30.0  # measured 6.0 px (full, either runtime), 9.3 px (lite)


def test_the_onnx_landmark_model_gives_the_joints_litert_gives(model_dir: Path, data_dir: Path) -> None:
    """The accelerator path's model (tf2onnx conversion on onnxruntime, here on the CPU provider) and
    LiteRT on the same body crops: the crops the backend tracked on the squats clip. (Through the
    tracker the two drift apart by a pixel or so, since each frame's crop follows the last frame's
    joints; both stay within the reference tolerance: the accuracy tests above run on either.)"""
    from appliance.pose.blazepose import BlazePoseBackend
    from appliance.pose.blazepose_landmarks import LandmarkModel

    _, onnx_path = find_model_files(_onnx_model_dir(model_dir), "full", "onnxruntime")
    on_litert, on_onnx = LandmarkModel(onnx_path.with_suffix(".tflite"), 2), LandmarkModel(onnx_path, 2)
    assert (on_litert.device, on_onnx.device) == ("cpu", "cpu")
    tracker = BlazePoseBackend(model_dir=model_dir, threads=2, still_skip=0)
    frames = list(_frames(data_dir / "pose-testdata/pose_squats.mp4"))
    diffs = []
    for before, frame in itertools.pairwise(frames):
        tracker.infer(before)
        roi = tracker._tracks[0].roi  # where the backend looks for the body in the next frame
        a, b = on_litert.run(frame, roi), on_onnx.run(frame, roi)
        diffs.append(np.abs(a.points[:33, :2] - b.points[:33, :2]).max())
        assert abs(a.flag - b.flag) <= 1e-4
    tracker.close()
    assert len(diffs) == 64 and max(diffs) <= 0.05, max(diffs)  # frame pixels


def test_pose_1_coco_joints_within_60px_of_movenet_reference(backend, data_dir: Path) -> None:
    ref_frames = json.loads((data_dir / "pose-testdata/pose_1.json").read_text())
    ref = np.array([[[f[j]["x"], f[j]["y"]] for j in COCO17.joints] for f in ref_frames])
    idx = [BLAZEPOSE33.joints.index(j) for j in COCO17.joints]
    errors = []
    for i, frame in enumerate(_frames(data_dir / "pose-testdata/pose_1.mp4")):
        people = backend.infer(frame)
        assert len(people) == 1, f"frame {i}: {len(people)} people"
        errors.append(np.linalg.norm(people[0].keypoints[idx, :2] - ref[i], axis=1))
    assert len(errors) == 120
    assert np.median(errors) <= 60.0  # measured 3.6 px (full), 4.1 px (lite)
    # tracking: the detector ran on a fraction of the frames, the landmark model on each
    assert backend.stats["detector"] <= 120 // backend.detect_interval + 2


def test_a_still_person_costs_a_third_of_the_landmark_runs_and_a_moving_one_is_refreshed(
    model_dir: Path, data_dir: Path
) -> None:
    """A worker standing still (the photo, with camera noise) is reported on every frame, the
    landmark model running on one frame in three; people walking through the walkway are run on
    every frame; the dancer at the daemon's 10 fps keeps her accuracy."""
    from appliance.pose.blazepose import BlazePoseBackend

    photo = cv2.imread(str(data_dir / "pose-testdata/pose.jpg"))
    rng = np.random.default_rng(0)
    b = BlazePoseBackend(model_dir=model_dir)
    for _ in range(30):
        noisy = np.clip(photo.astype(np.int16) + rng.normal(0, 2, photo.shape), 0, 255).astype(np.uint8)
        assert len(b.infer(noisy)) == 1
    assert b.stats["landmark"] == 10 and b.stats["carried"] == 20, b.stats
    b.close()

    b = BlazePoseBackend(model_dir=model_dir)
    for frame in _frames(data_dir / "cctv-walking/vtest.avi", limit=60):
        b.infer(frame)
    assert b.stats["carried"] <= 0.05 * b.stats["landmark"], b.stats  # walkers move: measured 0 %
    b.close()

    ref_frames = json.loads((data_dir / "pose-testdata/pose_1.json").read_text())[::3]
    ref = np.array([[[f[j]["x"], f[j]["y"]] for j in COCO17.joints] for f in ref_frames])
    idx = [BLAZEPOSE33.joints.index(j) for j in COCO17.joints]
    errors = {}
    for skip in (0, 2):
        b = BlazePoseBackend(model_dir=model_dir, still_skip=skip)
        frames = list(_frames(data_dir / "pose-testdata/pose_1.mp4"))[::3]  # 10 fps, as the daemon runs it
        errors[skip] = np.median(
            [np.linalg.norm(b.infer(f)[0].keypoints[idx, :2] - ref[i], axis=1) for i, f in enumerate(frames)]
        )
        carried = b.stats["carried"]
        b.close()
    assert carried >= 10  # measured 16 of 40 frames
    assert errors[2] <= errors[0] + 0.5, errors  # measured 3.62 vs 3.50 px


def test_over_its_budget_a_frame_carries_the_least_changing_people_instead_of_running_late(
    model_dir: Path, data_dir: Path
) -> None:
    """The walkway (3-6 walkers) with a 20 ms landmark budget per frame: every frame is answered,
    fewer landmark runs are made, the ones skipped are counted as shed, and people are still found."""
    from appliance.pose.blazepose import BlazePoseBackend

    frames = list(_frames(data_dir / "cctv-walking/vtest.avi", limit=60))
    found = {}
    stats = {}
    for budget in (None, 20.0):
        b = BlazePoseBackend(model_dir=model_dir, frame_budget_ms=budget)
        found[budget] = sum(len(b.infer(f)) for f in frames)
        stats[budget] = dict(b.stats)
        b.close()
    assert stats[None]["shed"] == 0 and stats[20.0]["shed"] > 20, stats
    assert stats[20.0]["frames"] == 60
    assert stats[20.0]["landmark"] < 0.7 * stats[None]["landmark"], stats
    assert found[20.0] >= 0.8 * found[None], found


def test_photo_gives_one_person_in_frame_pixels(backend, data_dir: Path) -> None:
    image = cv2.imread(str(data_dir / "pose-testdata/pose.jpg"))
    people = backend.infer(image)
    assert len(people) == 1
    p = people[0]
    assert isinstance(backend, PoseBackend) and p.layout is BLAZEPOSE33
    assert p.keypoints.shape == (33, 3)
    assert ((p.keypoints[:, 2] >= 0) & (p.keypoints[:, 2] <= 1)).all()
    x0, y0, x1, y1 = p.box
    assert 0 <= x0 < x1 <= image.shape[1] and 0 <= y0 < y1 <= image.shape[0]
    assert _good(p) and p.score >= 0.5


def test_blank_frame_gives_no_person(backend) -> None:
    assert backend.infer(np.zeros((480, 640, 3), np.uint8)) == []
    assert backend.infer(np.full((480, 640, 3), 128, np.uint8)) == []


def test_reset_forgets_tracked_people(backend, data_dir: Path) -> None:
    image = cv2.imread(str(data_dir / "pose-testdata/pose.jpg"))
    first = backend.infer(image)[0].track_hint
    assert backend.infer(image)[0].track_hint == first  # tracked: same identity
    backend.reset()
    assert backend.infer(image)[0].track_hint != first


def test_small_distant_people_on_cctv_are_found(model_dir: Path, data_dir: Path) -> None:
    from appliance.pose.blazepose import BlazePoseBackend

    frames = list(_frames(data_dir / "cctv-walking/vtest.avi", limit=100))
    counts = {}
    for mode in ("off", "motion"):
        b = BlazePoseBackend(model_dir=model_dir, threads=2, small_people=mode)
        counts[mode] = np.array([sum(_good(p) for p in b.infer(f)) for f in frames])
        b.close()
    # the face-based detector alone finds nobody in these 100 frames; motion proposals (measured:
    # >= 1 good skeleton on 95% of frames, 2.8 people per frame, max_people=4) find most walkers
    assert (counts["motion"] >= 1).mean() >= 0.8
    assert counts["motion"].mean() >= 1.5
    assert counts["motion"].sum() > 5 * max(1, counts["off"].sum())


# -- options and input errors ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "option",
    [
        {"small_people": "hog"},
        {"max_people": 0},
        {"detect_interval": 0},
        {"min_presence": 1.5},
        {"still_skip": -1},
        {"frame_budget_ms": 0},
    ],
)
def test_bad_option_is_a_clear_error(model_dir: Path, option: dict) -> None:
    from appliance.pose.blazepose import BlazePoseBackend

    with pytest.raises(ApplianceError, match=next(iter(option))):
        BlazePoseBackend(model_dir=model_dir, **option)


def test_grey_frame_is_a_clear_error(backend) -> None:
    with pytest.raises(ApplianceError, match="BGR uint8"):
        backend.infer(np.zeros((480, 640), np.uint8))


# -- geometry (no model needed) --------------------------------------------------------------------
def test_detector_has_2254_anchors() -> None:
    anchors = ssd_anchors()
    assert anchors.shape == (2254, 2)
    assert anchors.min() > 0 and anchors.max() < 1


def test_roi_crop_and_inverse_mapping_agree() -> None:
    frame = np.zeros((300, 400, 3), np.uint8)
    cv2.circle(frame, (250, 120), 3, (255, 255, 255), -1)
    roi = Roi(200.0, 150.0, 180.0, math.radians(30))
    crop = roi.crop(frame, 256)
    ys, xs = np.nonzero(crop[:, :, 0] > 128)
    back = roi.to_frame(np.array([[xs.mean() + 0.5, ys.mean() + 0.5]]), 256)[0] - 0.5
    np.testing.assert_allclose(back, [250, 120], atol=0.5)


def test_roi_from_points_puts_the_scale_point_on_top() -> None:
    upright = Roi.from_points(np.array([100.0, 200.0]), np.array([100.0, 100.0]))
    assert upright.rotation == pytest.approx(0.0) and upright.size == pytest.approx(250.0)
    lying = Roi.from_points(np.array([100.0, 200.0]), np.array([200.0, 200.0]))  # head to the right
    top = lying.to_frame(np.array([[128.0, 0.0]]), 256)[0]
    np.testing.assert_allclose(top, [100 + 125, 200], atol=1e-6)


# -- model files -----------------------------------------------------------------------------------
def test_missing_model_files_error_names_file_and_install_command(tmp_path: Path) -> None:
    with pytest.raises(ApplianceError) as info:
        find_model_files(tmp_path)
    message = str(info.value)
    assert DETECTOR.name in message and LANDMARK.name in message and "missing" in message
    assert f"{INSTALL_COMMAND} --dest {tmp_path}" in message


def test_model_file_with_wrong_hash_is_refused(tmp_path: Path, model_dir: Path) -> None:
    (tmp_path / DETECTOR.name).write_bytes((model_dir / DETECTOR.name).read_bytes())
    corrupt = bytearray((model_dir / LANDMARK.name).read_bytes())
    corrupt[1000] ^= 0xFF
    (tmp_path / LANDMARK.name).write_bytes(bytes(corrupt))
    with pytest.raises(ApplianceError, match=f"{LANDMARK.name} has the wrong SHA-256"):
        find_model_files(tmp_path)


def test_offline_install_from_wheel_verifies_and_skips_when_present(tmp_path: Path, model_dir: Path) -> None:
    wheel = tmp_path / "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for spec in (DETECTOR, LANDMARK):
            zf.writestr(spec.archive_path, (model_dir / spec.name).read_bytes())
    dest = install_pose_models(tmp_path / "models", wheel=wheel, landmarks=("full",))
    assert find_model_files(dest) == (dest / DETECTOR.name, dest / LANDMARK.name)
    assert install_pose_models(dest, wheel=tmp_path / "absent.whl", landmarks=("full",)) == dest  # no-op

    bad = tmp_path / "bad.whl"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr(DETECTOR.archive_path, b"not a model")
        zf.writestr(LANDMARK.archive_path, b"not a model")
    with pytest.raises(ApplianceError, match="unexpected SHA-256"):
        install_pose_models(tmp_path / "other", wheel=bad, landmarks=("full",))
    assert not (tmp_path / "other" / DETECTOR.name).exists()


def test_an_npm_tarball_that_is_not_the_pinned_one_is_refused_and_nothing_written(
    tmp_path: Path, model_dir: Path
) -> None:
    import io
    import tarfile

    from appliance.pose.model_files import LANDMARK_LITE

    fake = tmp_path / "pose.tgz"  # the right member under the right name, in a repacked tarball
    with tarfile.open(fake, "w:gz") as tf:
        data = (model_dir / LANDMARK.name).read_bytes()
        info = tarfile.TarInfo(LANDMARK_LITE.archive_path)
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    dest = tmp_path / "models"
    dest.mkdir()
    for spec in (DETECTOR, LANDMARK):
        (dest / spec.name).write_bytes((model_dir / spec.name).read_bytes())
    with pytest.raises(ApplianceError, match="SHA-256 differs"):
        install_pose_models(dest, npm_tarball=fake)
    assert not (dest / LANDMARK_LITE.name).exists()
    with pytest.raises(ApplianceError, match="appliance install-models"):
        find_model_files(dest, "lite")


def test_failed_download_is_a_clear_error_naming_the_offline_route(tmp_path: Path, monkeypatch) -> None:
    import subprocess

    from appliance.pose import model_files

    def no_network(cmd, **kwargs):
        assert "--no-deps" in cmd and "--only-binary=:all:" in cmd and kwargs["env"]["PIP_CONSTRAINT"] == ""
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found for mediapipe")

    monkeypatch.setattr(model_files.subprocess, "run", no_network)
    with pytest.raises(ApplianceError, match="--wheel FILE"):
        install_pose_models(tmp_path)


def test_command_line_reports_user_mistakes_in_one_line(tmp_path: Path, capsys) -> None:
    from appliance.pose.model_files import main

    assert main(["--dest", str(tmp_path), "--wheel", str(tmp_path / "absent.whl")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "absent.whl does not exist" in err and "Traceback" not in err
