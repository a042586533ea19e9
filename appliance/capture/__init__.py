"""Capture: frames from a camera (V4L2, RTSP, a file). :mod:`.sources` says what a source is and opens
it; :mod:`.camera` supervises it (state, reconnects with backoff, stats) through its capture and
watchdog threads (:mod:`.capture_thread`) and hands the newest frame on (:mod:`.newest_frame`);
:mod:`.frame_rate` is the model's time base, which frames are kept before pose."""
