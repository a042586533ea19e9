"""A virtual ceiling camera: 3D motion capture (BVH) projected to the 2D COCO-17 keypoints it would see.

The camera is a distortion-free pinhole ``height_m`` above the floor, pitched down by ``tilt_deg``
(no roll), with the principal point at the image centre. World coordinates are metres, y up, right
handed (as the Bandai Namco BVH files, converted from centimetres). Camera coordinates follow
OpenCV: x right, y down, z along the optical axis.

Automatic placement (``x_m``, ``z_m``, ``yaw_deg`` left as None), deterministic per clip:

1. the *travel direction* is the horizontal displacement of the root (the ``Hips`` joint) from the
   first to the last frame; for a clip that moves less than 0.5 m (bow, punch, ...) it is the
   direction the actor faces on average (perpendicular to the hip line, forward);
2. the camera looks along the travel direction turned by ``azimuth_deg`` about the vertical axis
   (right handed, y up): 0 = from behind (the actor walks away), 180 = from the front (walks
   towards the camera), 90 = from the actor's right side (moves left to right in the image),
   270 = from the left side (right to left);
3. the camera stands ``distance_m`` (horizontally) before the centre of the bounding box of the
   root's floor trajectory, looking at it.

The default ``distance_m`` = 4 m is the middle of the 2-6 m band in which the default optics
(2.7 m, 32 degrees, 500 px, 640x480) keep a 1.7 m person fully in view: on the image's centre
column the feet are in view from 1.7 m and the head up to 8.9 m. It is the same for every clip on
purpose, so a clip's apparent size says nothing about its class (in-place actions and walks are
centred at the same distance); a long walk (8-10 m in this data) therefore enters or leaves the
image at its ends, as a worker walking through a real camera's view does. ``fit_in_view`` instead
moves the camera back (up to ``max_distance_m``) until every frame is fully in view.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from appliance.errors import InputFormatError
from appliance.keypoints.sequence import KeypointSequence
from appliance.pose.layouts import COCO17
from export.mocap.bvh import BvhClip, forward_kinematics, read_bvh

_UP = np.array([0.0, 1.0, 0.0])
_NEAR_M = 0.05  # points closer than this in front of the camera count as behind it
_STATIC_CLIP_M = 0.5  # below this root displacement the actor's facing defines the clip direction

# COCO-17 joint -> Bandai BVH joint (None: not observed in the data). The Bandai "Head" joint sits
# at about mid-head height (eye level, centred in the skull), so it stands in for the nose: a few
# cm higher and further back than a detector's nose, well within keypoint-detector noise.
BANDAI_TO_COCO17: dict[str, str | None] = {
    "nose": "Head",
    "left_eye": None,
    "right_eye": None,
    "left_ear": None,
    "right_ear": None,
    "left_shoulder": "UpperArm_L",
    "right_shoulder": "UpperArm_R",
    "left_elbow": "LowerArm_L",
    "right_elbow": "LowerArm_R",
    "left_wrist": "Hand_L",
    "right_wrist": "Hand_R",
    "left_hip": "UpperLeg_L",
    "right_hip": "UpperLeg_R",
    "left_knee": "LowerLeg_L",
    "right_knee": "LowerLeg_R",
    "left_ankle": "Foot_L",
    "right_ankle": "Foot_R",
}
_ROOT_JOINT = "Hips"


@dataclass(frozen=True)
class CeilingCamera:
    """Optics and placement of the virtual camera (see the module docstring for auto placement).

    ``x_m``, ``z_m`` (floor position) and ``yaw_deg`` (view direction ``(sin yaw, 0, cos yaw)``)
    place the camera explicitly; left as None, :func:`place_camera` fills them in from the clip.
    """

    height_m: float = 2.7
    tilt_deg: float = 32.0  # pitch down from horizontal
    focal_px: float = 500.0
    width: int = 640
    height: int = 480
    fps: float = 30.0  # output frame rate; the clip is resampled if its own rate differs
    azimuth_deg: float = 90.0  # view direction relative to the clip's travel direction
    distance_m: float = 4.0  # horizontal distance from the camera to the trajectory centre
    fit_in_view: bool = False  # move back from distance_m until every frame is fully in view
    max_distance_m: float = 12.0
    x_m: float | None = None
    z_m: float | None = None
    yaw_deg: float | None = None

    @property
    def is_placed(self) -> bool:
        return self.x_m is not None and self.z_m is not None and self.yaw_deg is not None

    @property
    def position(self) -> np.ndarray:
        """World position of the optical centre (metres)."""
        self._require_placed()
        return np.array([self.x_m, self.height_m, self.z_m], dtype=np.float64)

    def rotation(self) -> np.ndarray:
        """World-to-camera rotation: rows are the camera's right, down and forward axes in world."""
        self._require_placed()
        yaw, tilt = math.radians(self.yaw_deg), math.radians(self.tilt_deg)
        view = np.array([math.sin(yaw), 0.0, math.cos(yaw)])
        forward = math.cos(tilt) * view - math.sin(tilt) * _UP
        right = np.cross(forward, _UP)
        right /= np.linalg.norm(right)
        down = np.cross(forward, right)
        return np.stack([right, down, forward])

    def _require_placed(self) -> None:
        if not self.is_placed:
            raise ValueError("camera is not placed: set x_m, z_m and yaw_deg or use place_camera()")


def world_to_camera(camera: CeilingCamera, points: np.ndarray) -> np.ndarray:
    """(..., 3) world points (metres) in camera coordinates (x right, y down, z forward)."""
    return (np.asarray(points, dtype=np.float64) - camera.position) @ camera.rotation().T


def project_points(camera: CeilingCamera, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (..., 2) and confidences (...,) of world points (metres, y up).

    Confidence is 1 inside the image, 0 outside it (the pixels are still given) and 0 behind
    the camera (pixels NaN: a point behind a pinhole has no image).
    """
    cam = world_to_camera(camera, points)
    depth = cam[..., 2]
    in_front = depth > _NEAR_M
    safe = np.where(in_front, depth, 1.0)
    uv = camera.focal_px * cam[..., :2] / safe[..., None]
    uv += np.array([camera.width / 2.0, camera.height / 2.0])
    uv[~in_front] = np.nan
    inside = in_front & (uv[..., 0] >= 0) & (uv[..., 0] < camera.width)
    inside &= (uv[..., 1] >= 0) & (uv[..., 1] < camera.height)
    return uv, inside.astype(np.float64)


def clip_direction(positions_m: np.ndarray, joint_names: tuple[str, ...]) -> np.ndarray:
    """Unit horizontal (x, z) travel direction of a clip, or its facing for a clip that stays put."""
    root = positions_m[:, joint_names.index(_ROOT_JOINT)] if _ROOT_JOINT in joint_names else positions_m[:, 0]
    travel = (root[-1] - root[0])[[0, 2]]
    if np.linalg.norm(travel) >= _STATIC_CLIP_M:
        return travel / np.linalg.norm(travel)
    if "UpperLeg_L" in joint_names and "UpperLeg_R" in joint_names:
        hip_line = (
            positions_m[:, joint_names.index("UpperLeg_L")] - positions_m[:, joint_names.index("UpperLeg_R")]
        )
        facing = np.cross(hip_line.mean(axis=0), _UP)[[0, 2]]  # person's left x up = forward
        if np.linalg.norm(facing) > 1e-9:
            return facing / np.linalg.norm(facing)
    return np.array([0.0, 1.0])


def _trajectory_centre(positions_m: np.ndarray, joint_names: tuple[str, ...]) -> np.ndarray:
    root = positions_m[:, joint_names.index(_ROOT_JOINT)] if _ROOT_JOINT in joint_names else positions_m[:, 0]
    floor = root[:, [0, 2]]
    return (floor.min(axis=0) + floor.max(axis=0)) / 2.0


def _at_distance(camera: CeilingCamera, centre: np.ndarray, yaw_deg: float, distance: float) -> CeilingCamera:
    yaw = math.radians(yaw_deg)
    x, z = centre - distance * np.array([math.sin(yaw), math.cos(yaw)])
    return replace(camera, x_m=float(x), z_m=float(z), yaw_deg=float(yaw_deg), distance_m=float(distance))


def all_in_view_fraction(camera: CeilingCamera, points_m: np.ndarray) -> float:
    """Fraction of frames of (N, J, 3) world points whose joints all land inside the image."""
    _, conf = project_points(camera, points_m)
    return float((conf > 0).all(axis=1).mean()) if len(points_m) else 0.0


def place_camera(
    camera: CeilingCamera, positions_m: np.ndarray, joint_names: tuple[str, ...]
) -> CeilingCamera:
    """The camera with x_m, z_m and yaw_deg filled in for a clip's (N, J, 3) world positions (metres).

    An already placed camera is returned unchanged. With ``fit_in_view`` the distance grows in
    0.1 m steps from ``distance_m`` to the first one where every joint of every frame (all BVH
    joints, toes included) is in the image, or, if none is, the one with the most such frames.
    """
    if camera.is_placed:
        return camera
    direction = clip_direction(positions_m, joint_names)
    yaw_deg = (math.degrees(math.atan2(direction[0], direction[1])) + camera.azimuth_deg) % 360.0
    centre = _trajectory_centre(positions_m, joint_names)
    placed = _at_distance(camera, centre, yaw_deg, camera.distance_m)
    if not camera.fit_in_view:
        return placed
    best, best_fraction = placed, -1.0
    for distance in np.arange(camera.distance_m, camera.max_distance_m + 1e-9, 0.1):
        candidate = _at_distance(camera, centre, yaw_deg, distance)
        fraction = all_in_view_fraction(candidate, positions_m)
        if fraction > best_fraction:
            best, best_fraction = candidate, fraction
        if fraction >= 1.0:
            break
    return best


def clip_azimuth(name: str, choices: tuple[float, ...] = (45.0, 90.0, 135.0, 225.0, 270.0, 315.0)) -> float:
    """A deterministic per-clip azimuth picked from ``choices`` by a hash of the clip name.

    For data sets that should see walks from several sides without a random seed to carry around.
    """
    return choices[zlib.crc32(name.encode("utf-8")) % len(choices)]


def _resample(positions: np.ndarray, src_fps: float, dst_fps: float) -> np.ndarray:
    """Linearly interpolate (N, J, 3) positions from ``src_fps`` to ``dst_fps`` over the same span."""
    if len(positions) < 2 or math.isclose(src_fps, dst_fps, rel_tol=1e-4):
        return positions
    duration = (len(positions) - 1) / src_fps
    # The tolerance absorbs frame times written with few digits (0.0333333 s is not quite 1/30 s).
    t_dst = np.arange(math.floor(duration * dst_fps + 1e-3) + 1) / dst_fps
    pos = t_dst * src_fps
    lo = np.minimum(np.floor(pos).astype(int), len(positions) - 2)
    w = np.clip(pos - lo, 0.0, 1.0)[:, None, None]
    return positions[lo] * (1.0 - w) + positions[lo + 1] * w


def clip_positions_m(clip: BvhClip, units_per_m: float = 100.0) -> np.ndarray:
    """World joint positions (N, J, 3) of a clip in metres (Bandai files are in centimetres)."""
    return forward_kinematics(clip) / units_per_m


def project_clip(
    clip: BvhClip, camera: CeilingCamera = CeilingCamera(), source: str = ""
) -> KeypointSequence:
    """Project a parsed BVH clip through the (auto-placed) camera to COCO-17 keypoints."""
    missing = [j for j in BANDAI_TO_COCO17.values() if j is not None and j not in clip.joint_names]
    if missing:
        raise InputFormatError(source or clip.name, f"not a Bandai Namco skeleton: no joint(s) {missing}")
    if clip.num_frames == 0:
        raise InputFormatError(source or clip.name, "no motion frames to project")
    positions = _resample(clip_positions_m(clip), clip.fps, camera.fps)
    camera = place_camera(camera, positions, clip.joint_names)
    keypoints = np.full((len(positions), COCO17.num_joints, 3), np.nan, dtype=np.float64)
    keypoints[..., 2] = 0.0
    observed = [(k, clip.joint_index(j)) for k, j in enumerate(BANDAI_TO_COCO17.values()) if j is not None]
    coco_idx, bvh_idx = (list(t) for t in zip(*observed, strict=True))
    uv, conf = project_points(camera, positions[:, bvh_idx])
    keypoints[:, coco_idx, :2] = uv
    keypoints[:, coco_idx, 2] = conf
    return KeypointSequence(
        name=clip.name,
        layout=COCO17,
        keypoints=keypoints,
        frames=np.arange(len(positions)),
        width=camera.width,
        height=camera.height,
        fps=camera.fps,
        labels=None,
        meta={
            "source": source,
            "clip": clip.name,
            "camera": asdict(camera),
            "bvh_fps": clip.fps,
            "joint_map": dict(BANDAI_TO_COCO17),
        },
    )


def project_bvh(
    path: str | Path, camera: CeilingCamera = CeilingCamera(), name: str | None = None
) -> KeypointSequence:
    """Read a BVH file, run forward kinematics and project it as the virtual ceiling camera sees it.

    Returns COCO-17 keypoints in pixels of a ``camera.width`` x ``camera.height`` image; eyes and
    ears are not observed (confidence 0, NaN pixels); joints outside the image have confidence 0.
    """
    clip = read_bvh(path, name=name)
    return project_clip(clip, camera, source=str(path))
