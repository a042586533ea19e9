"""The two real benchmark sets and their splits (by video or clip, never by frame).

URFD falls (``urfd-falls/pose_urfd_3classes.csv``): 30 fall videos, labels 0 upright, 1 falling,
2 lying. There are no normal-only videos, so models train on the upright (label 0) stretches of the
training videos. Test = videos whose number is a multiple of 3 (fall-03, -06, ..., -30: 10 videos,
every frame, label 1-2 = anomaly). Validation = every fifth of the remaining 20 videos (fall-07,
-14, -22, -29). Train = the other 16.

Bandai mocap (``mocap-bandai``), projected through a virtual ceiling camera (2.7 m, 640x480, 30 fps)
to COCO-17: normal = walking (dataset-1 walk, walk-back, walk-left, walk-right in 15 styles;
dataset-2 walk in 4 styles); anomaly = run, dash, kick, punch, slash (dataset-1) and run (dataset-2).
Other actions (bow, wave, guide, dance, ...) are neither and are not used. Normal clips, sorted by
name: every third is test, every fifth of the rest validation, the others train. Anomalous clips:
for a type with at least 5 clips every fifth is validation, the rest test. Labels are per clip
(a kick clip also holds stretches of standing); every frame of an anomalous clip carries the label.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from appliance.errors import ApplianceError
from appliance.features.skeleton_map import MapSpec, render_keypoints
from appliance.keypoints.sequence import KeypointSequence
from appliance.keypoints.urfd import read_urfd_csv

DATASETS = ("urfd", "mocap")
MOCAP_NORMAL = ("walk", "walk-back", "walk-left", "walk-right")
MOCAP_ANOMALY = ("run", "dash", "kick", "punch", "slash")
URFD_CLASSES = {0: "upright", 1: "falling", 2: "lying"}


@dataclass
class Split:
    """Sequences of one benchmark, split by video/clip; labels: 0 normal, > 0 anomaly class."""

    name: str
    train: list[KeypointSequence]
    val: list[KeypointSequence]
    test: list[KeypointSequence]
    classes: dict[int, str]  # label -> name (0 = normal)
    test_split: str = "test"  # what ``test`` is, as the manifests and parity tables say it

    def summary(self) -> dict:
        def part(seqs: list[KeypointSequence]) -> dict:
            labels = np.concatenate([s.labels for s in seqs]) if seqs else np.zeros(0, int)
            return {
                "sequences": [s.name for s in seqs],
                "frames": len(labels),
                "frames_per_class": {self.classes[c]: int((labels == c).sum()) for c in np.unique(labels)},
            }

        return {
            "dataset": self.name,
            "train": part(self.train),
            "val": part(self.val),
            "test": part(self.test),
        }


def urfd_split(data_dir: str | Path) -> Split:
    sequences = read_urfd_csv(Path(data_dir) / "urfd-falls" / "pose_urfd_3classes.csv")
    number = {s.name: int(s.name.split("-")[1]) for s in sequences}
    test = [s for s in sequences if number[s.name] % 3 == 0]
    rest = [s for s in sequences if number[s.name] % 3 != 0]
    val = rest[4::5]
    train = [s for s in rest if s not in val]
    return Split("urfd", train, val, test, dict(URFD_CLASSES))


_MOCAP_NAME = re.compile(r"dataset-(?P<set>\d)_(?P<content>[a-z-]+)_(?P<style>[a-z-]+)_(?P<n>\d+)\.bvh$")


def mocap_clips(data_dir: str | Path) -> list[tuple[Path, str]]:
    """(path, content) of the walking and anomalous clips, sorted by file name."""
    root = Path(data_dir) / "mocap-bandai"
    clips = []
    for path in sorted(root.glob("dataset-*/data/*.bvh"), key=lambda p: p.name):
        m = _MOCAP_NAME.match(path.name)
        if m and m["content"] in MOCAP_NORMAL + MOCAP_ANOMALY:
            clips.append((path, m["content"]))
    if not clips:
        raise FileNotFoundError(f"no Bandai mocap clips under {root}")
    return clips


def mocap_split(data_dir: str | Path) -> Split:
    from export.mocap.ceiling_camera import project_bvh

    classes = {0: "walk", **{i + 1: c for i, c in enumerate(MOCAP_ANOMALY)}}
    label_of = {"walk": 0, **{c: i + 1 for i, c in enumerate(MOCAP_ANOMALY)}}
    clips = mocap_clips(data_dir)
    normal = [(p, c) for p, c in clips if c in MOCAP_NORMAL]
    train, val, test = [], [], []
    rest = [clip for i, clip in enumerate(normal) if i % 3 != 0]
    test_clips = [clip for i, clip in enumerate(normal) if i % 3 == 0]
    val_clips = rest[4::5]
    train_clips = [clip for clip in rest if clip not in val_clips]
    for content in MOCAP_ANOMALY:
        of_type = [clip for clip in clips if clip[1] == content]
        held = of_type[4::5] if len(of_type) >= 5 else []
        val_clips += held
        test_clips += [clip for clip in of_type if clip not in held]

    def load(selection: list[tuple[Path, str]], out: list[KeypointSequence]) -> None:
        for path, content in selection:
            seq = project_bvh(path)
            label = label_of["walk" if content in MOCAP_NORMAL else content]
            seq.labels = np.full(len(seq), label, dtype=np.int64)
            seq.meta["action"] = content
            out.append(seq)

    load(train_clips, train)
    load(val_clips, val)
    load(test_clips, test)
    return Split("mocap", train, val, test, classes)


VAL_EVERY = 5  # a user's own data: every fifth track validates (as the benchmark sets' rest[4::5])
SPLIT_RULE = (
    "whole tracks are held out, never frames: of the tracks (clips) with at least one window of normal "
    f"frames, in file order, every {VAL_EVERY}th (the {VAL_EVERY}th, {2 * VAL_EVERY}th, ...) validates; "
    f"with fewer than {VAL_EVERY} such tracks the last one does"
)


def has_normal_window(seq: KeypointSequence, window: int) -> bool:
    """Whether the sequence holds ``window`` consecutive normal (label 0 or unlabelled) frames."""
    if len(seq) < window:
        return False
    if seq.labels is None:
        return True
    run = np.convolve((seq.labels == 0).astype(int), np.ones(window, int), "valid")
    return bool(run.max() == window)


def split_by_track(
    sequences: list[KeypointSequence], window: int = 30
) -> tuple[list[KeypointSequence], list[KeypointSequence]]:
    """(fit, validation) of a user's own keypoints when no validation file is given: whole tracks
    are held out (:data:`SPLIT_RULE`), so shrinkage, z-scores and default thresholds are chosen on
    windows the model was not fitted on. Deterministic: the same files split the same way in
    ``train``, ``bundle`` and ``posture-motion``."""
    eligible = [i for i, s in enumerate(sequences) if has_normal_window(s, window)]
    if len(eligible) < 2:
        raise ApplianceError(
            f"cannot hold out a whole track for validation: {len(eligible)} of the {len(sequences)} "
            f"tracks hold {window} consecutive normal frames (2 needed); pass --val FILE with keypoints "
            "of other normal footage"
        )
    held = set(eligible[VAL_EVERY - 1 :: VAL_EVERY] or eligible[-1:])
    fit = [s for i, s in enumerate(sequences) if i not in held]
    return fit, [s for i, s in enumerate(sequences) if i in held]


def load_split(name: str, data_dir: str | Path) -> Split:
    if name == "urfd":
        return urfd_split(data_dir)
    if name == "mocap":
        return mocap_split(data_dir)
    raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")


@dataclass
class RenderedSequence:
    """A sequence turned into skeleton maps, ready for training or scoring."""

    name: str
    maps: np.ndarray  # (N, S, S) uint8 0/1
    labels: np.ndarray  # (N,)
    meta: dict = field(default_factory=dict)


def learning_fps(sequences: list[KeypointSequence]) -> float | None:
    """The frame rate a model learned from these sequences is learned at (its time base, recorded in
    the bundle's input contract); None when they disagree or do not say."""
    rates = {round(float(s.fps), 3) for s in sequences if getattr(s, "fps", None)}
    return rates.pop() if len(rates) == 1 else None


def render_sequences(sequences: list[KeypointSequence], spec: MapSpec = MapSpec()) -> list[RenderedSequence]:
    return [
        RenderedSequence(
            name=s.name,
            maps=render_keypoints(s.keypoints, s.layout, (s.width, s.height), spec),
            labels=s.labels if s.labels is not None else np.zeros(len(s), dtype=np.int64),
            meta=dict(s.meta),
        )
        for s in sequences
    ]
