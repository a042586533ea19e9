"""Sliding windows of T consecutive items (maps or per-frame encodings), stride 1.

Two forms of one definition: :class:`WindowBuffer` for a live stream (one window per new frame,
no copying) and :func:`sliding_windows` for training and offline scoring (a zero-copy view).
"""

from __future__ import annotations

import numpy as np

DEFAULT_WINDOW = 30  # T in the paper: one second at 30 fps


class WindowBuffer:
    """Ring buffer that yields the last ``length`` items in time order after every push.

    Every item is stored twice, at ``i`` and ``i + length`` of a buffer of ``2 * length``, so the
    newest window is always one contiguous slice: pushing costs two item copies and returns a view.
    """

    def __init__(self, length: int = DEFAULT_WINDOW, item_shape: tuple[int, ...] = (), dtype=np.float32):
        if length < 1:
            raise ValueError(f"window length must be >= 1, got {length}")
        self.length = length
        self._buf = np.zeros((2 * length, *item_shape), dtype=dtype)
        self._pos = 0  # where the next item goes, in [0, length)
        self._count = 0

    def __len__(self) -> int:
        """Number of items held (at most ``length``)."""
        return min(self._count, self.length)

    @property
    def full(self) -> bool:
        return self._count >= self.length

    def push(self, item: np.ndarray) -> np.ndarray | None:
        """Add the newest item; return the window ending with it once ``length`` items were seen.

        The returned array is a read-only view that the next push overwrites: copy it to keep it.
        """
        self._buf[self._pos] = item
        self._buf[self._pos + self.length] = item
        self._pos = (self._pos + 1) % self.length
        self._count += 1
        if not self.full:
            return None
        view = self._buf[self._pos : self._pos + self.length]
        view.flags.writeable = False
        return view

    def items(self) -> np.ndarray:
        """A copy of the items held, oldest first (fewer than ``length`` before the window is full)."""
        if self.full:
            return self._buf[self._pos : self._pos + self.length].copy()
        return self._buf[: self._count].copy()

    def clear(self) -> None:
        """Forget everything (a track was lost, or the stream restarted)."""
        self._pos = 0
        self._count = 0


def sliding_windows(items: np.ndarray, length: int = DEFAULT_WINDOW, stride: int = 1) -> np.ndarray:
    """Read-only (W, length, ...) windows of ``items`` (N, ...); W = (N - length) // stride + 1."""
    items = np.asarray(items)
    if len(items) < length:
        return np.empty((0, length, *items.shape[1:]), dtype=items.dtype)
    view = np.lib.stride_tricks.sliding_window_view(items, length, axis=0)  # (N-L+1, ..., L)
    return np.moveaxis(view, -1, 1)[::stride]


def window_scores_to_frames(
    window_scores: np.ndarray, num_frames: int, length: int = DEFAULT_WINDOW
) -> np.ndarray:
    """Per-frame scores from stride-1 window scores, as a live stream would report them.

    A window's score belongs to its last frame; the first ``length - 1`` frames, which end no full
    window, take the first window's score. A sequence shorter than one window gets NaN.
    """
    frames = np.full(num_frames, np.nan, dtype=np.float64)
    if len(window_scores) == 0:
        return frames
    if len(window_scores) != num_frames - length + 1:
        raise ValueError(f"{len(window_scores)} window scores do not fit {num_frames} frames with T={length}")
    frames[length - 1 :] = window_scores
    frames[: length - 1] = window_scores[0]
    return frames
