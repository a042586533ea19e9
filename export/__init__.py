"""Server side (``appliance-export``): training, evaluation, export to ONNX/TFLite, int8, parity, signed
bundles, and the motion-capture training tools (:mod:`.mocap`). Needs the ``[export]`` extra."""
