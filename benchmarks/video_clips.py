"""Videos made at run time for benchmarks/video.py and the tests: clips cut
from the shared vtest.avi, clips made from a shared photo, and a local MJPEG
camera over HTTP. Everything is written where the caller says (a temporary
folder), never into ../shared."""
from __future__ import annotations

import http.server
import socketserver
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterable, List, Optional

import av
import cv2
import numpy as np

# Encoders per container, as a phone, a browser or a screen recorder would write them.
CODECS = {"mp4": "libx264", "mov": "libx264", "mkv": "libx264", "webm": "libvpx-vp9", "avi": "mpeg4"}


def read_frames(path: Path, start: int = 0, count: Optional[int] = None) -> List[np.ndarray]:
    """BGR frames [start, start + count) of a video, decoded by OpenCV (a second decoder, independent of posepipe's)."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    index = 0
    while count is None or len(frames) < count:
        ok, image = capture.read()
        if not ok:
            break
        if index >= start:
            frames.append(image)
        index += 1
    capture.release()
    return frames


def write_video(path: Path, frames: Iterable[np.ndarray], fps: float = 10, codec: Optional[str] = None) -> Path:
    """Encode BGR frames into `path` (the container from its suffix)."""
    codec = codec or CODECS[path.suffix.lstrip(".").lower()]
    container = av.open(str(path), "w")
    stream = None
    for image in frames:
        if stream is None:
            stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001000))
            stream.height, stream.width = image.shape[:2]
            stream.pix_fmt = "yuv420p"
            if codec == "mpeg4":
                stream.codec_context.bit_rate = 4_000_000
        container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")))
    if stream is not None:
        container.mux(stream.encode(None))
    container.close()
    return path


def cut_clip(shared_dir: Path, path: Path, start: int = 0, count: int = 30, fps: float = 10, edit: Optional[Callable] = None) -> Path:
    """Frames [start, start + count) of vtest.avi re-encoded into `path`;
    edit(index, image) may change each frame (occlusions, blanks)."""
    frames = read_frames(shared_dir / "videos" / "vtest.avi", start, count)
    if edit is not None:
        frames = [edit(i, f) for i, f in enumerate(frames)]
    return write_video(path, frames, fps)


def photo_clip(image: np.ndarray, count: int, seed: int = 0, noise: float = 0.0, shift_px_per_frame=(0.0, 0.0)) -> List[np.ndarray]:
    """A still photo as `count` frames: sensor noise of `noise` grey levels
    (std) and an optional steady pan (the person moves across the frame)."""
    rng = np.random.default_rng(seed)
    h, w = image.shape[:2] // np.array(2) * 2  # even sides, as 4:2:0 video needs
    image = image[:h, :w]
    frames = []
    for i in range(count):
        dx, dy = shift_px_per_frame[0] * i, shift_px_per_frame[1] * i
        if dx or dy:
            matrix = np.float32([[1, 0, dx], [0, 1, dy]])
            frame = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        else:
            frame = image.copy()
        if noise:
            frame = np.clip(frame.astype(np.float32) + rng.normal(0, noise, frame.shape), 0, 255).astype(np.uint8)
        frames.append(frame)
    return frames


class MjpegCamera:
    """An HTTP MJPEG camera (multipart/x-mixed-replace, as IP cameras serve
    it) on 127.0.0.1, playing `frames` in a loop at `fps`; after
    `max_frames` it drops the connection. `sent[i]` is when frame i left."""

    def __init__(self, frames: List[np.ndarray], fps: float, max_frames: Optional[int] = None):
        self.jpegs = [cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes() for f in frames]
        self.fps = fps
        self.max_frames = max_frames
        self.sent: List[float] = []
        camera = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                camera._stream_to(self.wfile)

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/camera.mjpg"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _stream_to(self, out) -> None:
        start = time.monotonic()
        index = 0
        try:
            while self.max_frames is None or index < self.max_frames:
                jpeg = self.jpegs[index % len(self.jpegs)]
                delay = start + index / self.fps - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                out.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg) + jpeg + b"\r\n")
                out.flush()
                self.sent.append(time.monotonic())
                index += 1
        except (BrokenPipeError, ConnectionResetError):
            pass

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "MjpegCamera":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
