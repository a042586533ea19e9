"""Keypoint files: readers that turn pose files (our CSV/NPZ, OpenPose, AlphaPose, URFD) into
:class:`KeypointSequence` objects, and the CSV writer (``docs/keypoints.md``)."""

from appliance.keypoints.sequence import KeypointSequence

__all__ = ["KeypointSequence"]
