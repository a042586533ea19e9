"""Pose: joint layouts (and, later, the pose backends that produce keypoints from frames)."""
