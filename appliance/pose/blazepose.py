"""The default pose backend: Google's BlazePose (detector + "full" landmark model) on LiteRT.

Per frame: every tracked person's landmark model runs on the ROI its previous frame's alignment points
(33, 34) give; a person whose pose-present flag falls under ``min_presence`` is dropped. The person
detector runs only when nobody is tracked or every ``detect_interval`` frames (to find newcomers);
its detections that overlap a tracked person are dropped, the others seed new tracks. Small, distant
people, whom the face-based detector misses, come from a proposal stage (:mod:`appliance.pose.proposals`)
checked by the landmark model's own flag. The model files are installed once by
``python -m appliance.pose.model_files``; nothing is downloaded here.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from appliance.accelerators import CPU, Accelerator
from appliance.errors import ApplianceError
from appliance.pose.base import Person
from appliance.pose.blazepose_detector import PoseDetector
from appliance.pose.blazepose_landmarks import NUM_JOINTS, LandmarkModel, LandmarkResult
from appliance.pose.engine import ModelPool
from appliance.pose.layouts import BLAZEPOSE33, JointLayout
from appliance.pose.model_files import find_model_files
from appliance.pose.proposals import MotionProposals, ProposalSource, TileProposals
from appliance.pose.roi import Roi, box_iou

SMALL_PEOPLE_MODES = ("off", "motion", "tiles")
MIN_ROI_SIZE = 16.0  # px; a track whose ROI shrinks below this is dropped
SAME_PERSON_IOU = 0.4  # boxes overlapping more than this are taken for one person
SAME_PERSON_CONTAINED = 0.6  # ... or a box lying this much inside another (a face taken for a body)
BOX_PAD = 0.15  # a person's keypoint box grown by this fraction of its height when testing overlap
PROPOSAL_TRIES = 3  # landmark runs per small-people proposal pass, at most
STILL_PATCH = 24  # side of the grey crop that tells a still body from a moving one, px
SHED_LIMIT = 3  # over budget, a person's landmarks are carried at most this many frames in a row


def _same_person(new: tuple[float, float, float, float], old: tuple[float, float, float, float]) -> bool:
    """Whether box ``new`` mostly repeats box ``old``: high IoU, or lying mostly inside it."""
    ix = max(0.0, min(new[2], old[2]) - max(new[0], old[0]))
    iy = max(0.0, min(new[3], old[3]) - max(new[1], old[1]))
    area = (new[2] - new[0]) * (new[3] - new[1])
    return box_iou(new, old) > SAME_PERSON_IOU or (area > 0 and ix * iy / area > SAME_PERSON_CONTAINED)


def _near_any(roi: Roi, others: list[Roi]) -> bool:
    """Whether ``roi``'s centre lies within a quarter side of one of ``others``' centres."""
    return any(abs(roi.cx - o.cx) + abs(roi.cy - o.cy) < 0.25 * o.size for o in others)


def _overlaps(roi: Roi, people: list[Person]) -> bool:
    """Whether a candidate ROI's centre lies in, or its box mostly covers, a person already found."""
    for p in people:
        x0, y0, x1, y1 = p.box
        pad = BOX_PAD * (y1 - y0)  # keypoints stop short of the head top and the body's outline
        if x0 - pad <= roi.cx <= x1 + pad and y0 - pad <= roi.cy <= y1 + pad:
            return True
        if box_iou(roi.box(), p.box) > SAME_PERSON_IOU:
            return True
    return False


def _to_person(res: LandmarkResult, track_id: int | None) -> Person:
    kp = np.empty((NUM_JOINTS, 3), dtype=np.float32)
    kp[:, :2] = res.points[:NUM_JOINTS, :2]
    kp[:, 2] = res.visibility[:NUM_JOINTS]
    x0, y0 = kp[:, :2].min(axis=0)
    x1, y1 = kp[:, :2].max(axis=0)
    return Person(
        keypoints=kp,
        layout=BLAZEPOSE33,
        box=(float(x0), float(y0), float(x1), float(y1)),
        score=res.flag,
        track_hint=track_id,
    )


@dataclass
class BlazePoseModels:
    """One copy of the two interpreters; the pose engine lends it to one camera's frame at a time."""

    detector: PoseDetector
    landmarks: LandmarkModel

    def close(self) -> None:
        self.detector.close()
        self.landmarks.close()


def blazepose_models(
    model_dir: Path | None = None,
    threads: int = 1,
    min_detection_score: float = 0.5,
    copies: int = 1,
    refine_landmarks: bool = True,
    landmark_model: str = "full",
    runtime: str = "tflite",
    accelerator: Accelerator = CPU,
) -> ModelPool[BlazePoseModels]:
    """The pose engine's model copies (files checked by SHA-256 first; nothing is downloaded)."""
    detector_path, landmark_path = find_model_files(model_dir, landmark_model, runtime)
    return ModelPool(
        lambda: BlazePoseModels(
            PoseDetector(detector_path, threads, min_detection_score, accelerator),
            LandmarkModel(landmark_path, threads, refine_landmarks, accelerator),
        ),
        copies,
    )


@dataclass
class _Track:
    track_id: int
    roi: Roi
    person: Person | None = None  # the landmarks of the last refresh, carried while the body is still
    patch: np.ndarray | None = None  # the ROI's look (small grey crop) when the landmarks were taken
    carried: int = 0  # frames in a row the landmarks were carried forward


def still_patch(frame: np.ndarray, roi: Roi) -> np.ndarray:
    """A cheap look at a ROI (a 24x24 grey crop, ~0.1 ms) to tell a still body from a moving one."""
    return cv2.cvtColor(roi.crop(frame, STILL_PATCH), cv2.COLOR_BGR2GRAY).astype(np.int16)


def patch_change(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute grey difference of two patches, as a fraction of the grey range."""
    return float(np.abs(a - b).mean()) / 255.0


class BlazePoseBackend:
    """BlazePose-33 keypoints for up to ``max_people`` people per frame, with per-person tracking."""

    layout: JointLayout = BLAZEPOSE33

    def __init__(
        self,
        model_dir: Path | None = None,
        threads: int = 2,
        min_detection_score: float = 0.5,
        min_presence: float = 0.5,
        max_people: int = 8,
        detect_interval: int = 10,
        small_people: str = "motion",
        proposal_interval: int = 5,
        refine_landmarks: bool = True,
        landmark_model: str = "full",
        runtime: str = "tflite",
        gpu_delegate: Path | None = None,
        accelerator: str = "cpu",
        still_skip: int = 2,
        still_change: float = 0.0075,
        frame_budget_ms: float | None = None,
        models: ModelPool[BlazePoseModels] | None = None,
    ) -> None:
        """
        Args:
            model_dir: directory holding the two ``.tflite`` files (default: ``$APPLIANCE_POSE_MODELS``
                or ``appliance/pose/models/``; install with ``python -m appliance.pose.model_files``).
            threads: CPU threads per LiteRT interpreter.
            min_detection_score: detector score (0-1) a detection needs to seed a person.
            min_presence: the landmark model's pose-present probability a person needs to be reported
                and to stay tracked; under it the person is dropped and must be found again.
            max_people: most people reported (and tracked) per frame.
            detect_interval: while someone is tracked, run the person detector only every N frames
                to find newcomers (1 = every frame); with nobody tracked it runs on every frame.
            small_people: proposal stage for people too small for the face-based detector:
                ``"motion"`` (moving blobs of a background model; cheap), ``"tiles"`` (the detector on
                zoomed overlapping tiles; slow, finds still people too) or ``"off"``.
            proposal_interval: run the small-people proposals every N frames (when not all
                ``max_people`` are tracked).
            refine_landmarks: refine joint positions with the model's heatmap (closer to MediaPipe).
            landmark_model: ``"full"`` or ``"lite"`` (faster, a little less exact).
            runtime: the landmark model's runtime, ``"tflite"`` or ``"onnxruntime"`` (its ONNX
                conversion); ``accelerator`` and ``gpu_delegate``: where the models run
                (:mod:`appliance.accelerators`).
            still_skip: frames in a row a still person's landmarks may be carried forward instead of
                run again (0: every person every frame). Still = the person's ROI looks the same as
                when the landmarks were last taken (mean grey change under ``still_change``).
            still_change: the change (fraction of the grey range) under which a body counts as still.
            frame_budget_ms: landmark time one frame may spend on the people already followed. Over
                it, the people whose crops changed least keep their last joints (at most
                ``SHED_LIMIT`` frames in a row) instead of the frame being late or dropped; counted
                in ``stats["shed"]``. None: no budget.
            models: the pose engine shared by every camera (:func:`blazepose_models`); None builds
                one copy for this backend alone (``model_dir``, ``threads``, ``min_detection_score``,
                ``refine_landmarks``, ``landmark_model``, ``runtime``, ``accelerator`` and
                ``gpu_delegate`` only matter then).
        """
        if small_people not in SMALL_PEOPLE_MODES:
            raise ApplianceError(
                f"pose small_people must be one of {', '.join(SMALL_PEOPLE_MODES)}, not {small_people!r}"
            )
        for name, value in (
            ("threads", threads),
            ("max_people", max_people),
            ("detect_interval", detect_interval),
            ("proposal_interval", proposal_interval),
        ):
            if value < 1:
                raise ApplianceError(f"pose {name} must be at least 1, not {value}")
        for name, prob in (("min_detection_score", min_detection_score), ("min_presence", min_presence)):
            if not 0.0 <= prob <= 1.0:
                raise ApplianceError(f"pose {name} must lie in [0, 1], not {prob}")
        self._own_models = models is None
        self._models = models or blazepose_models(
            model_dir, threads, min_detection_score, 1, refine_landmarks, landmark_model, runtime,
            Accelerator(accelerator, gpu_delegate),
        )  # fmt: skip
        if still_skip < 0 or not 0.0 <= still_change < 1.0:
            raise ApplianceError("pose still_skip must be at least 0 and still_change in [0, 1)")
        self.still_skip, self.still_change = still_skip, still_change
        self.set_frame_budget(frame_budget_ms)
        self._person_ms = 15.0  # running estimate of one landmark run, for the budget
        self.min_presence = min_presence
        self.max_people = max_people
        self.detect_interval = detect_interval
        self.proposal_interval = proposal_interval
        self.small_people = small_people
        self._proposals: ProposalSource | None = None
        if small_people == "motion":
            self._proposals = MotionProposals()
        elif small_people == "tiles":
            self._proposals = TileProposals()
        #: model invocations since construction (for benchmarks): detector, landmark, proposal passes
        self.stats = {"frames": 0, "detector": 0, "landmark": 0, "proposals": 0, "carried": 0, "shed": 0}
        self._ids = itertools.count()
        self._tracks: list[_Track] = []
        self._frame = 0
        self._last_detect = -(10**9)
        self._last_proposal = -(10**9)
        self._failed_proposals: list[Roi] = []
        self.last_wait_s = 0.0  # the last frame's wait for a copy of the shared models

    def set_frame_budget(self, ms: float | None) -> None:
        """Landmark time a frame may spend on the people already followed (None: no budget)."""
        if ms is not None and ms <= 0:
            raise ApplianceError(f"pose frame_budget_ms must be positive, not {ms}")
        self.frame_budget_ms = ms
        self._watch = bool(self.still_skip or ms)  # keep a look at each person's crop

    @property
    def landmark_device(self) -> str:
        """Where the landmark model runs: cpu, cuda, tensorrt or litert-gpu."""
        return self._models.sample().landmarks.device

    # -- PoseBackend ---------------------------------------------------------------------------
    def infer(self, frame: np.ndarray) -> list[Person]:
        """People in one BGR uint8 frame, tracked from the previous frame where possible."""
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ApplianceError(
                f"blazepose expects a BGR uint8 frame (H, W, 3), got {frame.dtype} {frame.shape}"
            )
        people: list[Person] = []
        tracks: list[_Track] = []
        asked = time.perf_counter()
        with self._models.lease() as m:
            self.last_wait_s = time.perf_counter() - asked
            for track, keep in zip(self._tracks, self._plan(frame), strict=True):
                if not (keep and self._carry(track, people, tracks, keep)):
                    self._try(m, frame, track.roi, track.track_id, people, tracks)

            full = len(tracks) >= self.max_people
            if not full and (not tracks or self._frame - self._last_detect >= self.detect_interval):
                self._last_detect = self._frame
                self.stats["detector"] += 1
                for det in m.detector.detect(frame):
                    if len(tracks) >= self.max_people:
                        break
                    roi = Roi.from_points(det.keypoints[0], det.keypoints[1])
                    if not _overlaps(roi, people):
                        self._try(m, frame, roi, None, people, tracks)
            if (
                self._proposals is not None
                and len(tracks) < self.max_people
                and self._frame - self._last_proposal >= self.proposal_interval
            ):
                self._last_proposal = self._frame
                self.stats["proposals"] += 1
                # At most PROPOSAL_TRIES landmark runs per pass (bounds the frame's cost); a spot that
                # failed in the previous pass waits one pass, so a still non-person blob cannot block others.
                tries, failed = 0, []
                for roi in self._proposals.propose(frame, m.detector):
                    if len(tracks) >= self.max_people or tries >= PROPOSAL_TRIES:
                        break
                    if _overlaps(roi, people) or _near_any(roi, self._failed_proposals):
                        continue
                    tries += 1
                    if not self._try(m, frame, roi, None, people, tracks):
                        failed.append(roi)
                self._failed_proposals = failed
        self._tracks = tracks
        self._frame += 1
        self.stats["frames"] += 1
        return people

    def reset(self) -> None:
        """Forget tracks and background state: the next frame does not continue the last."""
        self._tracks = []
        self._frame = 0
        self._last_detect = self._last_proposal = -(10**9)
        self._failed_proposals = []
        if self._proposals is not None:
            self._proposals.reset()

    def close(self) -> None:
        """Release the interpreters (when this backend built its own; the engine's stay)."""
        if self._own_models:
            self._models.close(BlazePoseModels.close)
        self._tracks = []

    # -- internals -----------------------------------------------------------------------------
    def _plan(self, frame: np.ndarray) -> list[str | None]:
        """For each followed person: ``"still"`` or ``"shed"`` (carry the last joints), None (run).

        Still: the crop changed less than ``still_change`` and fewer than ``still_skip`` frames were
        carried. Over ``frame_budget_ms``, the least-changing of the others are shed.
        """
        changes = [
            patch_change(still_patch(frame, tr.roi), tr.patch)
            if self._watch and tr.person is not None and tr.patch is not None
            else float("inf")
            for tr in self._tracks
        ]
        plan: list[str | None] = [
            "still" if tr.carried < self.still_skip and c < self.still_change else None
            for tr, c in zip(self._tracks, changes, strict=True)
        ]
        if self.frame_budget_ms:
            run = [i for i, p in enumerate(plan) if p is None]
            excess = len(run) - max(1, int(self.frame_budget_ms // self._person_ms))
            sheddable = [i for i in run if changes[i] < float("inf") and self._tracks[i].carried < SHED_LIMIT]
            for i in sorted(sheddable, key=lambda i: changes[i])[: max(0, excess)]:
                plan[i] = "shed"
        return plan

    def _carry(self, track: _Track, people: list[Person], tracks: list[_Track], why: str) -> bool:
        """Carry a person's last landmarks to this frame (no landmark run); False: run it after all."""
        assert track.person is not None
        if any(_same_person(track.person.box, p.box) for p in people):
            return False
        people.append(track.person)
        tracks.append(_Track(track.track_id, track.roi, track.person, track.patch, track.carried + 1))
        self.stats["carried" if why == "still" else "shed"] += 1
        return True

    def _try(
        self,
        m: BlazePoseModels,
        frame: np.ndarray,
        roi: Roi,
        track_id: int | None,
        people: list[Person],
        tracks: list[_Track],
    ) -> bool:
        """Run the landmark model on ``roi``; keep the person if present and not a duplicate."""
        if roi.size < MIN_ROI_SIZE:
            return False
        t0 = time.perf_counter()
        res = m.landmarks.run(frame, roi)
        self._person_ms = 0.8 * self._person_ms + 0.2 * (time.perf_counter() - t0) * 1e3
        self.stats["landmark"] += 1
        if res.flag < self.min_presence:
            return False
        person = _to_person(res, track_id)
        if any(_same_person(person.box, p.box) for p in people):
            return False
        if track_id is None:
            person.track_hint = next(self._ids)
        people.append(person)
        roi = Roi.from_points(res.points[33, :2], res.points[34, :2])
        patch = still_patch(frame, roi) if self._watch else None
        tracks.append(_Track(person.track_hint, roi, person, patch))
        return True
