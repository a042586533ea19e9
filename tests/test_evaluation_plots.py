"""The evaluation timeline, read back from the drawn figure: a legend naming the score, the shaded
anomalous frames, the boundaries between videos and the validation threshold; the boundaries at the
videos' joins and the threshold line at its value."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("torch")

from export.evaluate import Evaluation, draw_score_timeline


def test_the_timeline_has_a_legend_the_threshold_at_its_value_and_a_line_at_each_join_of_videos():
    lengths = (120, 80, 150)
    rng = np.random.default_rng(0)
    sequences = [SimpleNamespace(labels=np.r_[np.zeros(n - 30), np.ones(30)]) for n in lengths]
    scores = [rng.normal(50.0, 5.0, n) for n in lengths]
    ev = Evaluation("lstm_vae", sequences, scores, {0: "normal", 1: "fall"})
    fig = draw_score_timeline(ev, "urfd: LSTM-VAE anomaly score", threshold=61.25)
    ax = fig.axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == [
        "anomalous frames (ground truth)", "anomaly score", "boundary between two videos",
        "threshold 61.25 (99% of normal validation frames below)",
    ]  # fmt: skip
    threshold = next(x for x in ax.get_lines() if x.get_label().startswith("threshold"))
    assert list(threshold.get_ydata()) == [61.25, 61.25]
    joins = [x.get_xdata()[0] for x in ax.get_lines() if x.get_linestyle() == ":"]
    assert joins == [120, 200]  # between the first and second, second and third video; none at the end
    assert ax.get_xlabel() == "frame (test videos one after another)" and ax.get_ylabel() == "anomaly score"
