"""Pose: people's 2D keypoints per frame. Backends keyed on ``pose.type`` (:mod:`.registry`): BlazePose
on LiteRT, an ONNX keypoint model, or a replay of skeletons a site already has; joint layouts and
their mapping to the body graph (:mod:`.layouts`); ``appliance extract`` (:mod:`.extract`)."""
