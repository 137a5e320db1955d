"""Video inputs -> frames: files, camera indices and network streams, read
lazily, one frame at a time, every failure naming its source.

Two readers behind one small interface (`VideoReader.frames()`):
  PyAV (FFmpeg) for files and URLs: exact presentation times, the container's
      frame count (to tell a truncated file from a complete one), the codec's
      own errors, and open/read timeouts for network streams;
  OpenCV's VideoCapture for camera indices (V4L2, DirectShow, AVFoundation),
      which PyAV cannot open portably.
A live source (camera, rtsp://, ...) is read on its own thread by
`LatestFrameReader`, which keeps only the newest frame: when the models are
slower than the camera, stale frames are dropped and counted instead of
queueing up as latency."""
from __future__ import annotations

import math
import os
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import cv2
import numpy as np

from .errors import InputError

# What makes a path or an http(s) URL a video. A folder never yields videos
# (PaddleX's rule: a folder stands for its images).
VIDEO_SUFFIXES = (
    "mp4", "avi", "mkv", "mov", "webm", "m4v", "mpg", "mpeg", "ts", "mts", "m2ts", "flv", "wmv", "3gp", "ogv",
    "mjpeg", "mjpg", "m3u8",
)
# Stream protocols that are always live (a camera or a broadcast, not a file).
LIVE_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "udp", "tcp", "srt", "rtp")
# http(s) resources that are live streams rather than files: HLS playlists and MJPEG cameras.
LIVE_HTTP_SUFFIXES = ("m3u8", "mjpeg", "mjpg")
STREAM_TIMEOUT_S = 10.0
# A file is called truncated when it yields fewer frames than its header
# promises by more than this (frames, or fraction of the promise, whichever is
# larger). Exact counts (AVI, MP4) may still differ by a frame or two where an
# edit list trims the start; Matroska/WebM counts are duration x rate, looser.
_SHORT_BY_FRAMES = 2
_SHORT_BY_FRACTION_EXACT = 0.02
_SHORT_BY_FRACTION_ESTIMATED = 0.05

NO_FRAMES = "has no frames: the video is empty or its data is missing"
INSTALL_HINT = "reading video files and streams needs PyAV: pip install 'posepipe[video]' (or pip install av)"


@dataclass(frozen=True)
class Video:
    """A video input: a file path, a URL or a camera index. Plain paths,
    URLs and ints passed to `predict` become one of these; build it yourself
    to say what posepipe cannot guess (an http URL without a video suffix,
    whether a stream is live, the network timeout)."""

    target: Union[str, int, "os.PathLike[str]"]
    # None: cameras, rtsp/rtmp/udp/... streams and http .m3u8/.mjpg URLs are
    # live; files and other URLs are read frame by frame.
    live: Optional[bool] = None
    timeout_s: float = STREAM_TIMEOUT_S

    def __post_init__(self) -> None:
        target = self.target
        if isinstance(target, os.PathLike):
            object.__setattr__(self, "target", os.fspath(target))
        elif isinstance(target, bool) or not isinstance(target, (str, int)):
            raise TypeError(f"Video target must be a path, a URL or a camera index, got {type(target).__name__}")
        if self.live not in (None, True, False):
            raise TypeError(f"Video live must be True, False or None, got {self.live!r}")
        if not (isinstance(self.timeout_s, (int, float)) and self.timeout_s > 0):
            raise ValueError(f"Video timeout_s must be a positive number, got {self.timeout_s!r}")

    @property
    def is_camera(self) -> bool:
        return isinstance(self.target, int)

    @property
    def is_url(self) -> bool:
        return isinstance(self.target, str) and "://" in self.target

    @property
    def name(self) -> str:
        """How errors name it."""
        return f"camera {self.target}" if self.is_camera else str(self.target)

    @property
    def input_path(self) -> str:
        """The results' input_path."""
        return f"camera:{self.target}" if self.is_camera else str(self.target)

    @property
    def is_live(self) -> bool:
        if self.live is not None:
            return self.live
        if self.is_camera:
            return True
        if not self.is_url:
            return False
        scheme = self.target.split("://", 1)[0].lower()
        return scheme in LIVE_SCHEMES or _url_suffix(self.target) in LIVE_HTTP_SUFFIXES

    @property
    def stem(self) -> str:
        """The stem of files saved for it: the file name's stem, the URL's
        last path part (else its host), or camera<N>."""
        if self.is_camera:
            return f"camera{self.target}"
        if self.is_url:
            parts = urllib.parse.urlsplit(self.target)
            return Path(parts.path).stem or parts.hostname or "stream"
        return Path(self.target).stem or "video"


def video_input_of(item: Any) -> Optional[Video]:
    """The Video an input element stands for, or None when it is not one:
    a Video; a camera index (an int, or a string of digits that is not an
    existing path, as `--input 0`); an rtsp/rtmp/udp/... URL; an http(s) URL
    or a file path ending in a video suffix."""
    if isinstance(item, Video):
        return item
    if isinstance(item, int) and not isinstance(item, (bool, np.bool_)):
        return Video(item) if item >= 0 else None
    if not isinstance(item, (str, os.PathLike)):
        return None
    text = os.fspath(item)
    if not isinstance(text, str):
        return None
    if text.isdigit() and not os.path.exists(text):
        return Video(int(text))
    if "://" in text:
        scheme = text.split("://", 1)[0].lower()
        if scheme in LIVE_SCHEMES:
            return Video(text)
        if scheme in ("http", "https") and _url_suffix(text) in VIDEO_SUFFIXES:
            return Video(text)
        return None
    if _suffix(text) in VIDEO_SUFFIXES and not os.path.isdir(text):
        return Video(text)
    return None


def _suffix(path: str) -> str:
    name = os.path.basename(path)
    return name.rsplit(".", 1)[-1].lower() if "." in name else ""


def _url_suffix(url: str) -> str:
    return _suffix(urllib.parse.urlsplit(url).path)


@dataclass
class VideoFrame:
    image: np.ndarray  # uint8 HxWx3 BGR, C-contiguous
    index: int  # 0-based position in the source (frames decoded, or received from a live source)
    timestamp_s: float  # presentation time from the start of the source (live: since the first frame)
    captured_at: float  # time.monotonic() when the frame was decoded


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: Optional[float]  # None when the source does not say
    frame_count: Optional[int]  # from the header; None when unknown (live sources, some containers)
    live: bool


class VideoReader:
    """One open video source. `frames()` yields its frames in order and
    raises InputError (naming the source) when it cannot go on: a damaged or
    truncated file, a stream that drops. Frames yielded before stay valid."""

    video: Video
    info: VideoInfo

    def frames(self) -> Iterator[VideoFrame]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def open_video(video: Video) -> VideoReader:
    """Open a video source, or raise InputError naming it."""
    if video.is_camera:
        return CameraReader(video)
    return PyAVReader(video)


class PyAVReader(VideoReader):
    """Files and network streams through PyAV (FFmpeg)."""

    def __init__(self, video: Video):
        try:
            import av
        except ImportError:
            raise InputError(video.name, INSTALL_HINT) from None
        self._av = av
        self.video = video
        name = video.name
        if not video.is_url:
            _check_file(name)
        options = {}
        if video.is_url and video.target.lower().startswith(("rtsp://", "rtsps://")):
            options["rtsp_transport"] = "tcp"  # UDP loses packets, which shows as smeared frames
        if video.is_live:
            options["fflags"] = "nobuffer"  # hand frames over as they arrive
        try:
            self._container = av.open(
                video.target, options=options, timeout=(video.timeout_s, video.timeout_s) if video.is_url else None
            )
        except av.error.EOFError:
            raise InputError(name, NO_FRAMES) from None
        except av.error.FFmpegError as e:
            raise InputError(name, _open_problem(e, video)) from None
        try:
            if not self._container.streams.video:
                raise InputError(name, "has no video stream")
            self._stream = self._container.streams.video[0]
            if self._stream.codec_context is None:
                raise InputError(name, "unknown video codec: FFmpeg has no decoder for it")
            self._stream.thread_type = "AUTO" if not video.is_live else "SLICE"
            self.info = self._info()
        except BaseException:
            self._container.close()
            raise

    def _info(self) -> VideoInfo:
        stream, container = self._stream, self._container
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate and float(rate) > 0 else None
        count: Optional[int] = None
        self._count_is_exact = False
        if not self.video.is_live:
            if stream.frames and stream.frames > 0:
                count, self._count_is_exact = int(stream.frames), True
            else:
                duration_s = None
                if stream.duration is not None and stream.time_base is not None:
                    duration_s = float(stream.duration * stream.time_base)
                elif container.duration is not None:
                    duration_s = container.duration / 1_000_000
                if duration_s and fps:
                    count = int(round(duration_s * fps))
        ctx = stream.codec_context
        return VideoInfo(int(ctx.width), int(ctx.height), fps, count, self.video.is_live)

    def frames(self) -> Iterator[VideoFrame]:
        av, name, stream, live = self._av, self.video.name, self._stream, self.info.live
        start_pts = stream.start_time
        time_base = stream.time_base
        first_time: Optional[float] = None
        first_capture: Optional[float] = None
        index = 0
        decoded = self._container.decode(stream)
        while True:
            try:
                frame = next(decoded)
            except StopIteration:
                break
            except av.error.FFmpegError as e:
                if live:
                    raise InputError(name, f"the stream stopped after {index} frames ({_ffmpeg_message(e)})") from None
                raise InputError(name, f"damaged: decoding failed after {index} frames ({_ffmpeg_message(e)})") from None
            captured_at = time.monotonic()
            image = _upright(frame.to_ndarray(format="bgr24"), getattr(frame, "rotation", 0))
            if frame.pts is not None and time_base is not None:
                seconds = float((frame.pts - (start_pts or 0)) * time_base)
            elif self.info.fps:
                seconds = index / self.info.fps
            else:  # neither times nor a rate: the reading clock
                first_capture = captured_at if first_capture is None else first_capture
                seconds = captured_at - first_capture
            if live:  # stream clocks start anywhere: count from the first frame
                first_time = seconds if first_time is None else first_time
                seconds -= first_time
            yield VideoFrame(np.ascontiguousarray(image), index, seconds, captured_at)
            index += 1
        self._check_complete(index)

    def _check_complete(self, decoded: int) -> None:
        name, expected = self.video.name, self.info.frame_count
        if self.info.live:
            raise InputError(name, f"the stream stopped after {decoded} frames")
        if decoded == 0:
            raise InputError(name, NO_FRAMES)
        if expected:
            fraction = _SHORT_BY_FRACTION_EXACT if self._count_is_exact else _SHORT_BY_FRACTION_ESTIMATED
            if decoded < expected - max(_SHORT_BY_FRAMES, fraction * expected):
                raise InputError(
                    name, f"truncated or damaged: the video ended after {decoded} of the {expected} frames its header announces"
                )

    def close(self) -> None:
        self._container.close()


class CameraReader(VideoReader):
    """A camera by index, through OpenCV's VideoCapture (its default backend for the platform)."""

    def __init__(self, video: Video, capture: Optional[Any] = None):
        self.video = video
        self._capture = cv2.VideoCapture(video.target) if capture is None else capture
        if not self._capture.isOpened():
            self._capture.release()
            raise InputError(video.name, "cannot open the camera: no such device, no permission, or it is in use")
        fps = self._capture.get(cv2.CAP_PROP_FPS)
        self.info = VideoInfo(
            int(self._capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(self._capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            float(fps) if fps and math.isfinite(fps) and fps > 0 else None,
            None,
            True,
        )

    def frames(self) -> Iterator[VideoFrame]:
        opened_at: Optional[float] = None
        index = 0
        while True:
            ok, image = self._capture.read()
            captured_at = time.monotonic()
            if not ok or image is None:
                raise InputError(self.video.name, f"the camera stopped delivering frames after {index} frames")
            # Camera timestamps (CAP_PROP_POS_MSEC) are unreliable across
            # drivers; the reading clock is what every backend has.
            opened_at = captured_at if opened_at is None else opened_at
            yield VideoFrame(np.ascontiguousarray(image), index, captured_at - opened_at, captured_at)
            index += 1

    def close(self) -> None:
        self._capture.release()


class LatestFrameReader:
    """Reads a live source on a thread and hands out only the newest frame;
    the thread closes the reader when it ends.

    Frames that arrive while the consumer is busy replace the waiting one and
    are counted in `dropped`; the consumer therefore always gets the freshest
    frame and latency cannot build up. When the source fails, the frame
    already waiting is still handed out, then the error is raised."""

    def __init__(self, reader: VideoReader, keep: Any = None):
        """keep(frame) -> bool: frames to consider at all (stride); the others are neither handed out nor counted as dropped."""
        self.reader = reader
        self.dropped = 0
        self._keep = keep
        self._cond = threading.Condition()
        self._waiting: Optional[VideoFrame] = None
        self._error: Optional[BaseException] = None
        self._finished = False
        self._stop = False
        self._thread = threading.Thread(target=self._read, name=f"posepipe-live-{reader.video.name}", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        frames = self.reader.frames()
        try:
            for frame in frames:
                if self._keep is not None and not self._keep(frame):
                    continue
                with self._cond:
                    if self._stop:
                        return
                    if self._waiting is not None:
                        self.dropped += 1
                    self._waiting = frame
                    self._cond.notify()
        except BaseException as e:  # handed to the consumer, who raises it in order
            with self._cond:
                self._error = e
        finally:
            # Closed here, on the thread that reads: never under a running read.
            frames.close()
            self.reader.close()
            with self._cond:
                self._finished = True
                self._cond.notify()

    def __iter__(self) -> Iterator[VideoFrame]:
        while True:
            with self._cond:
                while self._waiting is None and not self._finished:
                    self._cond.wait()
                frame, self._waiting = self._waiting, None
                if frame is None:
                    if self._error is not None:
                        raise self._error
                    return
            yield frame

    def close(self, timeout_s: float = 1.0) -> None:
        """Stop reading. A read blocked in the network returns at the latest
        after the source's timeout; the daemon thread is not waited for longer."""
        with self._cond:
            self._stop = True
        self._thread.join(timeout_s)


def _check_file(name: str) -> None:
    try:
        size = os.path.getsize(name)
    except FileNotFoundError:
        raise InputError(name, "no such file or directory") from None
    except OSError as e:
        raise InputError(name, f"cannot read: {e.strerror or e}") from None
    if not os.access(name, os.R_OK):
        raise InputError(name, "permission denied")
    if size == 0:
        raise InputError(name, "empty: the file has no data")


def _ffmpeg_message(error: BaseException) -> str:
    return getattr(error, "strerror", None) or str(error)


def _open_problem(error: BaseException, video: Video) -> str:
    message = _ffmpeg_message(error)
    if video.is_url:
        if "timed out" in message.lower() or "timeout" in message.lower():
            return f"cannot open the stream: no answer within {video.timeout_s:g} s"
        return f"cannot open the stream ({message})"
    if "Invalid data" in message:
        return f"not a video posepipe can read: unknown format, or the file is truncated or corrupt ({message})"
    return f"cannot open the video ({message})"


_ROTATIONS = {90: cv2.ROTATE_90_COUNTERCLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_CLOCKWISE}


def _upright(image: np.ndarray, rotation: Any) -> np.ndarray:
    """Apply the stream's display rotation (degrees counter-clockwise), as
    players and OpenCV do, so phone videos come out upright."""
    try:
        degrees = int(round(float(rotation))) % 360
    except (TypeError, ValueError):
        return image
    code = _ROTATIONS.get(degrees)
    return image if code is None else cv2.rotate(image, code)
