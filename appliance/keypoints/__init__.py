"""Keypoint sources: readers that turn pose files into :class:`KeypointSequence` objects."""

from appliance.keypoints.sequence import KeypointSequence

__all__ = ["KeypointSequence"]
