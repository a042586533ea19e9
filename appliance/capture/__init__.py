"""Capture: frames from a camera (V4L2, RTSP, a file) with reconnects and a newest-frame buffer
(:mod:`.camera`), and the model's time base, which frames are kept before pose (:mod:`.frame_rate`)."""
