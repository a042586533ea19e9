"""Capture stage on real footage: order, end/loop, dropping, decimation, open errors, reconnects.

Sources are the real CCTV clip in ``../shared/data`` (or a short clip cut from it) and a local HTTP
MJPEG stream of its frames that the test can make stall, read by OpenCV's FFmpeg backend like a
network camera. Waits poll on conditions with generous deadlines, so a loaded CI machine only makes
the tests slower, not flaky.
"""

from __future__ import annotations

import itertools
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import pytest

from appliance.capture.camera import Camera, CameraState
from appliance.capture.sources import CameraError, SourceKind, parse_source
from appliance.errors import ApplianceError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
VTEST = DATA / "cctv-walking" / "vtest.avi"  # 768x576, 10 fps, 795 frames
CLIP_FRAMES = 12

pytestmark = pytest.mark.skipif(not VTEST.exists(), reason=f"real footage missing: {VTEST}")


def wait_for(
    condition: Callable[[], bool], timeout: float = 10.0, poll: Callable[[], object] | None = None
) -> bool:
    """Poll ``condition`` until true or ``timeout``; ``poll`` runs each turn (e.g. to consume frames)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if poll is not None:
            poll()
        else:
            time.sleep(0.02)
    return condition()


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first CLIP_FRAMES frames of the real clip, re-encoded (MJPG) into a small file."""
    src = cv2.VideoCapture(str(VTEST))
    path = tmp_path_factory.mktemp("clip") / "clip.avi"
    writer = None
    for _ in range(CLIP_FRAMES):
        ok, image = src.read()
        assert ok
        if writer is None:
            h, w = image.shape[:2]
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (w, h))
        writer.write(image)
    assert writer is not None
    writer.release()
    src.release()
    return path


class MjpegServer:
    """A local HTTP MJPEG camera (multipart/x-mixed-replace) serving real frames at ~20 fps.

    ``stall`` keeps connections open but stops sending, as a frozen network camera does.
    """

    def __init__(self, frames: int = 10) -> None:
        cap = cv2.VideoCapture(str(VTEST))
        self.jpegs = []
        for _ in range(frames):
            ok, image = cap.read()
            assert ok
            self.jpegs.append(cv2.imencode(".jpg", image)[1].tobytes())
        cap.release()
        self.stall = threading.Event()
        self.closed = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                i = 0
                try:
                    while not server.closed.is_set():
                        if server.stall.is_set():
                            time.sleep(0.02)
                            continue
                        jpeg = server.jpegs[i % len(server.jpegs)]
                        i += 1
                        head = b"--frame\r\nContent-Type: image/jpeg\r\n"
                        size = b"Content-Length: %d\r\n\r\n" % len(jpeg)
                        self.wfile.write(head + size + jpeg + b"\r\n")
                        time.sleep(0.05)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/stream"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.closed.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def mjpeg() -> Iterator[MjpegServer]:
    server = MjpegServer()
    yield server
    server.close()


def test_parse_source_classifies_files_urls_devices_and_gstreamer_pipelines():
    assert parse_source("videos/a.mp4").kind is SourceKind.FILE
    assert parse_source(VTEST).kind is SourceKind.FILE
    assert parse_source("rtsp://10.0.0.5:554/stream1").kind is SourceKind.URL
    assert parse_source("http://cam.local/mjpg").kind is SourceKind.URL
    dev = parse_source(0)
    assert dev.kind is SourceKind.DEVICE and dev.target == 0
    assert parse_source("2").target == 2
    assert parse_source("/dev/video1").kind is SourceKind.DEVICE
    gst = parse_source("rtspsrc location=rtsp://cam/1 ! decodebin ! videoconvert ! appsink")
    assert gst.kind is SourceKind.GSTREAMER and gst.api == cv2.CAP_GSTREAMER
    with pytest.raises(CameraError):
        parse_source("  ")


def test_file_frames_arrive_in_order_with_monotonic_indices_and_file_positions():
    with Camera(VTEST, "cam0") as cam:
        frames = []
        while (frame := cam.read(timeout=10)) is not None:
            frames.append((frame.index, frame.source_frame, frame.source_ms, frame.mono_time))
            assert frame.image.shape == (576, 768, 3) and frame.image.dtype == "uint8"
            assert frame.camera_id == "cam0"
        stats = cam.stats()
    assert [f[0] for f in frames] == list(range(795))
    assert [f[1] for f in frames] == list(range(795))
    assert frames[10][2] == pytest.approx(1000.0)  # 10 fps
    assert all(a[3] <= b[3] for a, b in itertools.pairwise(frames))
    assert stats["frames_read"] == stats["frames_consumed"] == 795
    assert stats["frames_dropped"] == 0


def test_file_end_sets_state_ended_and_read_returns_none_at_once(clip: Path):
    states: list[tuple[str, str]] = []
    cam = Camera(clip, on_state_change=lambda _cam, old, new: states.append((old.value, new.value)))
    with cam:
        got = [f.source_frame for f in iter(lambda: cam.read(timeout=10), None)]
        assert got == list(range(CLIP_FRAMES))
        assert cam.state is CameraState.ENDED
        t = time.monotonic()
        assert cam.read(timeout=5) is None
        assert time.monotonic() - t < 1.0
    assert states == [("starting", "streaming"), ("streaming", "ended"), ("ended", "stopped")]


def test_loop_restarts_the_file_at_its_first_frame(clip: Path):
    with Camera(clip, loop=True) as cam:
        frames = [cam.read(timeout=10) for _ in range(2 * CLIP_FRAMES + 3)]
        assert cam.state is CameraState.STREAMING
        assert cam.stats()["reconnects"] == 0
    assert all(f is not None for f in frames)
    assert [f.source_frame for f in frames] == [*range(CLIP_FRAMES), *range(CLIP_FRAMES), 0, 1, 2]
    assert [f.index for f in frames] == list(range(2 * CLIP_FRAMES + 3))


def test_realtime_file_drops_frames_for_a_slow_consumer_and_keeps_only_the_newest():
    with Camera(VTEST, realtime=True, fps=5) as cam:  # paced like a 10 fps camera, decimated to 5
        first = cam.read(timeout=10)
        assert first is not None
        t0 = time.monotonic()
        got = [first]
        for _ in range(4):
            time.sleep(0.5)  # a consumer at ~2 fps, slower than the 5 fps stream
            frame = cam.read(timeout=10)
            assert frame is not None
            got.append(frame)
            s = cam.stats()
            pending = s["frames_published"] - s["frames_consumed"] - s["frames_dropped"]
            assert pending in (0, 1)  # one slot, never a queue
        elapsed = time.monotonic() - t0
        stats = cam.stats()
    assert stats["frames_dropped"] > 0
    assert max(b.index - a.index for a, b in itertools.pairwise(got)) > 1  # the gap shows what was missed
    assert all(f.source_frame % 2 == 0 for f in got)  # 10 -> 5 fps keeps every other frame
    # the newest frame, not an old one: the file position follows the wall clock (at 10 fps)
    assert got[-1].source_ms / 1000 == pytest.approx(elapsed, abs=1.0)


def test_fps_decimates_a_file_to_the_target_rate_without_dropping():
    with Camera(VTEST, fps=2.5) as cam:
        frames = [cam.read(timeout=10) for _ in range(10)]
        stats = cam.stats()
    assert [f.source_frame for f in frames] == list(range(0, 40, 4))
    assert [f.index for f in frames] == list(range(10))
    assert stats["frames_decimated"] >= 27 and stats["frames_dropped"] == 0


def test_fps_decimates_a_live_stream_by_capture_time(mjpeg: MjpegServer):
    with Camera(mjpeg.url, fps=5) as cam:  # the server sends ~20 fps
        frames = [cam.read(timeout=10) for _ in range(9)]
        stats = cam.stats()
    assert all(f is not None for f in frames)
    mean_interval = (frames[-1].mono_time - frames[0].mono_time) / 8
    assert mean_interval >= 0.12  # about 0.2 s; never the server's 0.05 s
    assert stats["frames_decimated"] >= stats["frames_published"]


def test_missing_file_with_require_open_at_start_raises_camera_error_naming_the_path(tmp_path: Path):
    missing = tmp_path / "no-such-camera.avi"
    cam = Camera(missing, require_open_at_start=True)
    with pytest.raises(CameraError, match=r"no-such-camera\.avi") as info:
        cam.start()
    assert isinstance(info.value, ApplianceError)
    assert cam.state is CameraState.FAILED


def test_unopenable_source_retries_in_background_then_fails_after_max_failures(tmp_path: Path):
    states: list[str] = []
    missing = tmp_path / "gone.avi"
    cam = Camera(
        missing,
        require_open_at_start=False,
        max_failures=3,
        backoff_initial_s=0.01,
        backoff_max_s=0.05,
        on_state_change=lambda _c, _o, new: states.append(new.value),
    )
    with cam:
        assert wait_for(lambda: cam.state is CameraState.FAILED)
        assert cam.read(timeout=5) is None
        stats = cam.stats()
    assert states[:2] == ["reconnecting", "failed"]
    assert stats["open_failures"] == stats["consecutive_failures"] == 3
    assert "gone.avi" in stats["last_error"]


def test_file_that_disappears_is_reopened_when_it_returns(clip: Path, tmp_path: Path):
    live = tmp_path / "live.avi"
    shutil.copy(clip, live)
    states: list[str] = []
    cam = Camera(
        live,
        loop=True,
        backoff_initial_s=0.05,
        backoff_max_s=0.2,
        on_state_change=lambda _c, _o, new: states.append(new.value),
    )
    with cam:
        assert cam.read(timeout=10) is not None
        live.unlink()  # gone: reopening at the end of the loop fails
        assert wait_for(lambda: cam.state is CameraState.RECONNECTING, poll=lambda: cam.read(timeout=0.05))
        assert "live.avi" in cam.stats()["last_error"]
        shutil.copy(clip, live)
        assert wait_for(lambda: cam.state is CameraState.STREAMING)
        frame = cam.read(timeout=10)
        stats = cam.stats()
    assert frame is not None and frame.source_frame == 0
    assert states[:3] == ["streaming", "reconnecting", "streaming"]
    assert stats["reconnects"] == 1 and stats["open_failures"] >= 1 and stats["consecutive_failures"] == 0


def test_stalled_network_stream_is_reconnected_after_the_stall_timeout(mjpeg: MjpegServer):
    states: list[str] = []
    cam = Camera(
        mjpeg.url,
        "door",
        stall_timeout_s=1.0,
        backoff_initial_s=0.05,
        on_state_change=lambda _c, _o, new: states.append(new.value),
    )
    with cam:
        frames = [cam.read(timeout=10) for _ in range(3)]
        assert all(f is not None and f.source_frame is None for f in frames)
        mjpeg.stall.set()  # the connection stays open but no frame comes
        t = time.monotonic()
        assert wait_for(lambda: cam.state is CameraState.RECONNECTING)
        assert time.monotonic() - t > 0.5  # not before the stall timeout
        assert "no frame" in cam.stats()["last_error"]
        mjpeg.stall.clear()
        assert wait_for(lambda: cam.state is CameraState.STREAMING)
        after = cam.read(timeout=10)
        stats = cam.stats()
    assert after is not None and after.index > frames[-1].index
    assert states[:3] == ["streaming", "reconnecting", "streaming"]
    assert stats["reconnects"] == 1


def test_stop_joins_the_capture_threads_promptly_even_during_a_long_backoff(clip: Path, tmp_path: Path):
    waiting = Camera(clip, "waiting")  # file reader blocked on a consumer that never reads
    retrying = Camera(tmp_path / "missing.avi", "retrying", require_open_at_start=False, backoff_initial_s=30)

    def capture_threads() -> list[str]:
        names = [t.name for t in threading.enumerate()]
        return [n for n in names if n.startswith(("camera-waiting", "camera-retrying"))]

    for cam in (waiting, retrying):
        cam.start()
    assert wait_for(lambda: retrying.state is CameraState.RECONNECTING)
    assert len(capture_threads()) == 4  # a reader and a watchdog each
    t = time.monotonic()
    waiting.stop()
    retrying.stop()
    assert time.monotonic() - t < 2.0
    assert capture_threads() == []
    assert waiting.state is retrying.state is CameraState.STOPPED
