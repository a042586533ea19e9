"""The posture-motion features this research used, now served by the product module
(:mod:`appliance.motion_features`, moved there unchanged), plus the horizontal flip that was tried
as augmentation and is not in the product.
"""

from __future__ import annotations

import numpy as np

from appliance.motion_features import (  # noqa: F401  (re-exported for the research scripts)
    CENTRE_VELOCITY,
    EXTENT,
    FEATURE_DIM,
    MASK,
    NUM_JOINTS,
    POSTURE,
    RAW_DIM,
    SPEED,
    TORSO,
    VELOCITY,
    FeatureStream,
    model_input,
    normalise_window,
    sequence_features,
    window_scale,
)


def flip_features(f: np.ndarray) -> np.ndarray:
    """Features of the horizontally mirrored person (x -> -x, left and right joints swapped)."""
    left_right = [0, 1, 5, 6, 7, 2, 3, 4, 8, 12, 13, 14, 9, 10, 11]
    g = np.array(f, copy=True)
    for block in (POSTURE, VELOCITY):
        xy = g[..., block].reshape(*g.shape[:-1], NUM_JOINTS, 2)[..., left_right, :]
        xy[..., 0] *= -1
        g[..., block] = xy.reshape(*g.shape[:-1], 2 * NUM_JOINTS)
    g[..., MASK] = g[..., MASK][..., left_right]
    g[..., CENTRE_VELOCITY.start] *= -1
    return g
