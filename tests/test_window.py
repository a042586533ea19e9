"""Sliding windows: the streaming ring buffer and the batch builder agree, and scores map to frames."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.features.window import WindowBuffer, sliding_windows, window_scores_to_frames


def test_ring_buffer_yields_the_same_windows_as_the_batch_builder():
    rng = np.random.default_rng(1)
    stream = rng.integers(0, 2, size=(95, 28, 28), dtype=np.uint8)
    buf = WindowBuffer(30, (28, 28), np.uint8)
    live = [w.copy() for item in stream if (w := buf.push(item)) is not None]
    batch = sliding_windows(stream, 30)
    assert len(live) == len(batch) == 95 - 30 + 1
    np.testing.assert_array_equal(np.stack(live), batch)


def test_ring_buffer_returns_nothing_until_full_then_one_window_per_push():
    buf = WindowBuffer(3)
    out = [buf.push(np.float32(i)) for i in range(5)]
    assert out[0] is None and out[1] is None
    np.testing.assert_array_equal(out[4], [2, 3, 4])
    assert len(buf) == 3 and buf.full


def test_ring_buffer_window_is_read_only_and_clear_restarts_it():
    buf = WindowBuffer(2)
    buf.push(np.float32(1))
    w = buf.push(np.float32(2))
    with pytest.raises(ValueError):
        w[0] = 5
    buf.clear()
    assert buf.push(np.float32(3)) is None
    np.testing.assert_array_equal(buf.push(np.float32(4)), [3, 4])


def test_batch_builder_is_a_view_with_stride():
    items = np.arange(40)
    w = sliding_windows(items, 30, stride=5)
    assert w.shape == (3, 30)
    np.testing.assert_array_equal(w[:, 0], [0, 5, 10])
    assert np.shares_memory(w, items)
    assert sliding_windows(np.arange(10), 30).shape == (0, 30)


def test_window_scores_belong_to_their_last_frame_and_fill_the_start():
    scores = window_scores_to_frames(np.array([1.0, 2.0, 3.0]), num_frames=32, length=30)
    assert scores.shape == (32,)
    np.testing.assert_array_equal(scores[:30], 1.0)  # frames 0..29: the first window (ends at 29)
    np.testing.assert_array_equal(scores[30:], [2.0, 3.0])
    assert np.isnan(window_scores_to_frames(np.array([]), 10, 30)).all()
    with pytest.raises(ValueError):
        window_scores_to_frames(np.array([1.0]), 40, 30)
