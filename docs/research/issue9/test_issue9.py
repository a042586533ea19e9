"""Checks of the issue #9 research code (not collected by the project's pytest run; run explicitly):

    .venv/bin/python -m pytest docs/research/issue9/test_issue9.py -q -p no:cacheprovider

The feature checks run on the product's features (appliance.features.motion), which the report's
design section describes; the model checks run on the research fusion (model.py) over the product's
Gaussians (export.posture_motion).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[2])]

import numpy as np  # noqa: E402
import torch  # noqa: E402

from appliance.features.motion import (  # noqa: E402
    FEATURE_DIM, MASK, RAW_DIM, SPEED, FeatureStream, model_input, normalise_window, sequence_features,
)
from appliance.pose.layouts import BLAZEPOSE33, COCO17, to_body_graph  # noqa: E402
from appliance.models.posture_motion_fit import STAT_GROUPS  # noqa: E402
from appliance.features.window import WindowBuffer, sliding_windows  # noqa: E402
from export.posture_motion import GaussianWindowScorer  # noqa: E402
from model import FusionScorer, fit_fusion, score  # noqa: E402


def _walker(n: int = 90, seed: int = 0) -> np.ndarray:
    """(n, 17, 3) COCO keypoints of a stick figure walking right at 3 px/frame, some joints unseen."""
    rng = np.random.default_rng(seed)
    base = np.array([[0, -160], [0, -165], [0, -165], [0, -160], [0, -160], [-20, -130], [20, -130],
                     [-25, -90], [25, -90], [-25, -55], [25, -55], [-12, -40], [12, -40], [-12, 0],
                     [12, 0], [-12, 40], [12, 40]], dtype=float)
    kp = np.zeros((n, 17, 3))
    for t in range(n):
        swing = np.sin(t / 5.0) * 15
        xy = base.copy()
        xy[[13, 15], 0] += swing
        xy[[14, 16], 0] -= swing
        kp[t, :, :2] = xy + [100 + 3 * t, 300] + rng.normal(0, 0.5, xy.shape)
        kp[t, :, 2] = 1.0
    kp[:, 1:5, 2] = 0.0  # eyes and ears unseen, as in the mocap projection
    kp[:, 1:5, :2] = np.nan
    kp[40:45, 15, 2] = 0.0  # an ankle leaves the image for a few frames
    return kp


def test_stream_equals_offline_and_buffer():
    body = to_body_graph(_walker(), COCO17)
    offline = sequence_features(body)
    assert offline.shape == (len(body), RAW_DIM)
    stream, buf = FeatureStream(), WindowBuffer(30, (RAW_DIM,), np.float32)
    windows = []
    for frame in body:
        w = buf.push(stream.push(frame))
        if w is not None:
            windows.append(normalise_window(w.copy()))
    np.testing.assert_array_equal(np.stack(windows), normalise_window(sliding_windows(offline, 30)))


def test_features_scale_and_translation_invariant():
    kp = _walker()
    moved = kp.copy()
    moved[..., :2] = kp[..., :2] * 2.0 + [37.0, -11.0]
    a = normalise_window(sliding_windows(sequence_features(to_body_graph(kp, COCO17)), 30))
    b = normalise_window(sliding_windows(sequence_features(to_body_graph(moved, COCO17)), 30))
    np.testing.assert_allclose(np.nan_to_num(a), np.nan_to_num(b), atol=1e-4)
    assert a.shape[-1] == FEATURE_DIM
    speed = a[..., SPEED]
    assert np.nanmean(speed) > 0.02  # a walker moves
    assert np.all(np.isfinite(model_input(a)))


def test_unseen_joints_are_masked_not_nan():
    f = sequence_features(to_body_graph(_walker(), COCO17))
    assert np.isfinite(f[:, :SPEED]).all()
    assert f[42, MASK].sum() < f[10, MASK].sum()


def test_other_layouts_work():
    kp = np.zeros((40, 33, 3))
    kp[..., :2] = np.random.default_rng(0).uniform(100, 300, (40, 33, 2))
    kp[..., 2] = 0.9
    f = sequence_features(to_body_graph(kp, BLAZEPOSE33))
    assert f.shape == (40, RAW_DIM) and np.isfinite(f[1:, :SPEED]).all()


def test_gaussian_and_fusion_rank_a_runner_above_walkers():
    walk = [model_input(normalise_window(sliding_windows(sequence_features(to_body_graph(_walker(seed=s), COCO17)), 30)))
            for s in range(4)]
    train, val = np.concatenate(walk[:3]), walk[3]
    runner = _walker(seed=9)
    runner[..., 0] = runner[..., 0] * 1.0 + np.arange(len(runner))[:, None] * 9.0  # 12 px/frame
    run = model_input(normalise_window(sliding_windows(sequence_features(to_body_graph(runner, COCO17)), 30)))
    g = GaussianWindowScorer.fit(train, 0.5, STAT_GROUPS)
    assert score(g, run).min() > score(g, val).max()
    fusion, info = fit_fusion(train, val, ("GS", "GM", "GA"), "max")
    assert isinstance(fusion, FusionScorer) and set(info) >= {"shrink_GS", "shrink_GM", "shrink_GA"}
    assert score(fusion, run).min() > score(fusion, val).max()
    with torch.no_grad():
        assert fusion.components(torch.from_numpy(run)).shape == (len(run), 3)
