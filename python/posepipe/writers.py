"""Saving a video's results: an annotated video and one JSON line per frame.

    {stem}_res.mp4    every processed frame with the skeletons, the boxes and
                      the track IDs drawn; the size of the source's first
                      frame (a later frame of another size is scaled to fit,
                      aspect kept), and its frame rate and timing (a frame
                      keeps its timestamp, so a stride or a dropped live frame
                      shows as a longer frame).
                      H.264 (libx264) where the size allows, else MPEG-4 part 2.
    {stem}_res.jsonl  per frame, the dict `save_to_json` writes for it, on one line.

`ResultSaver` takes whatever `predict` yields and saves each result where it
belongs: a still image's as PaddleX does (save_to_json / save_to_img), a
video's frames into the two files of their video."""
from __future__ import annotations

import colorsys
import logging
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import IO, Any, List, Optional, Set, Union

import cv2
import numpy as np

from .draw import draw_keypoints
from .errors import PosepipeError
from .result import KeypointResult, SaveNames
from .video import INSTALL_HINT

PathLike = Union[str, Path]

log = logging.getLogger("posepipe")

# libx264 at a preset that encodes 768x576 in a few ms per frame on one thread,
# at a quality where thin skeleton lines stay crisp.
H264_OPTIONS = {"preset": "veryfast", "crf": "20"}
# The encoder keeps to one thread: the models need the cores more.
ENCODER_THREADS = 1
MPEG4_BITS_PER_PIXEL = 0.3
LIVE_TIME_BASE = Fraction(1, 1000)
FALLBACK_FPS = 25.0  # a stream that does not say its rate


def annotate(result: KeypointResult) -> np.ndarray:
    """The frame with skeletons (as save_to_img draws them), each person's
    box and, when tracked, its track ID in the track's own colour."""
    image = result["input_img"]
    boxes = result["boxes"]
    if boxes:
        image = draw_keypoints(image, np.stack([b["keypoints"] for b in boxes]))
    else:
        image = image.copy()
    for person in boxes:
        x1, y1, x2, y2 = (int(round(v)) for v in person["coordinate"])
        track_id = person.get("track_id")
        colour = track_colour(track_id) if track_id is not None else (255, 255, 255)
        cv2.rectangle(image, (x1, y1), (x2, y2), colour, 1)
        if track_id is not None:
            label = str(track_id)
            (w, h), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
            top = max(y1 - h - base - 2, 0)
            cv2.rectangle(image, (x1, top), (x1 + w + 4, top + h + base + 2), colour, -1)
            cv2.putText(image, label, (x1 + 2, top + h + 1), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return image


def fit(image: np.ndarray, size: tuple) -> np.ndarray:
    """The image scaled to fit (width, height), its aspect kept, centred on black."""
    width, height = size
    scale = min(width / image.shape[1], height / image.shape[0])
    w, h = max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    out = np.zeros((height, width, 3), np.uint8)
    top, left = (height - h) // 2, (width - w) // 2
    out[top : top + h, left : left + w] = cv2.resize(image, (w, h), interpolation=interpolation)
    return out


def track_colour(track_id: int) -> tuple:
    """A bright BGR colour per ID; neighbouring IDs far apart in hue."""
    hue = (track_id * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(b * 255), int(g * 255), int(r * 255)


class AnnotatedVideoWriter:
    """Writes annotated frames into a video file (PyAV)."""

    def __init__(self, path: PathLike, width: int, height: int, fps: Optional[float], live: bool = False):
        try:
            import av
        except ImportError:
            raise PosepipeError(f"writing {path}: {INSTALL_HINT}") from None
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.size = (int(width), int(height))
        self.live = live
        rate = Fraction(fps or FALLBACK_FPS).limit_denominator(1001000)
        self._av = av
        self._container = av.open(str(self.path), "w")
        # libx264 needs even sides for its 4:2:0 chroma; MPEG-4 part 2 does not.
        even = width % 2 == 0 and height % 2 == 0
        codec = "libx264" if even and "libx264" in av.codecs_available else "mpeg4"
        self._stream = self._container.add_stream(codec, rate=rate, options=H264_OPTIONS if codec == "libx264" else {})
        self._stream.width, self._stream.height = self.size
        self._stream.pix_fmt = "yuv420p"
        self._stream.codec_context.thread_count = ENCODER_THREADS
        if codec == "mpeg4":
            # Its default (200 kbit/s) smears thin lines; 0.3 bit per pixel keeps them.
            self._stream.codec_context.bit_rate = int(MPEG4_BITS_PER_PIXEL * width * height * float(rate))
        # Files: one tick per source frame, so a frame's index is its time.
        # Live: milliseconds, since frames come when they come.
        self._time_base = LIVE_TIME_BASE if live else 1 / rate
        self._stream.time_base = self._time_base
        self._stream.codec_context.time_base = self._time_base
        self._last_pts = -1
        self._resized = False  # said once that frames of another size are scaled

    def write(self, result: KeypointResult) -> None:
        image = annotate(result)
        if (image.shape[1], image.shape[0]) != self.size:
            # A stream that switches resolution (HLS, RTSP) keeps one video:
            # the frame is drawn at its own size, then fitted in.
            if not self._resized:
                log.warning(
                    "%s: the source changed from %dx%d to %dx%d at frame %s; such frames are scaled to fit the video "
                    "(the .jsonl keeps their own coordinates)",
                    self.path, *self.size, image.shape[1], image.shape[0], result.get("frame_index"),
                )
                self._resized = True
            image = fit(image, self.size)
        if self.live:
            pts = int(round(result["timestamp_s"] / self._time_base))
        else:
            pts = int(result["frame_index"])
        pts = max(pts, self._last_pts + 1)  # strictly increasing, whatever the source's clock did
        frame = self._av.VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts, frame.time_base = pts, self._time_base
        self._container.mux(self._stream.encode(frame))
        self._last_pts = pts

    def close(self) -> None:
        if self._container is None:
            return
        try:
            self._container.mux(self._stream.encode(None))  # flush the frames the encoder holds
        finally:
            self._container.close()
            self._container = None


class JsonLinesWriter:
    """One line per frame: the dict save_to_json writes for it."""

    def __init__(self, path: PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: Optional[IO[str]] = open(self.path, "w", encoding="utf-8")

    def write(self, result: KeypointResult) -> None:
        self._file.write(result.json_text(indent=None) + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


@dataclass
class SavedVideo:
    """What a ResultSaver wrote for one video."""

    stream: Any  # streaming.VideoStream, the results' metadata["video"]
    files: List[Path] = field(default_factory=list)
    frames: int = 0

    def describe(self) -> str:
        stream = self.stream
        dropped = f", {stream.dropped_frames} stale frames dropped" if stream.info.live else ""
        return (
            f"{stream.video.name}: {self.frames} frames, {stream.tracks} tracks{dropped} -> "
            + ", ".join(str(path) for path in self.files)
        )


class ResultSaver:
    """Saves the results of `predict`, whatever their source, into `save_path`:

        with ResultSaver("out/") as saver:
            for res in pipeline.predict(["a.jpg", "clip.mp4"]):
                saver.save(res)

    Still images: `{stem}_res.json` and `{stem}_res.<ext>` (images=False: the
    JSON only). Videos: `{stem}_res.mp4` (images=False: none) and
    `{stem}_res.jsonl`, finished when the next input's results begin, and at
    close. Stems are the ones `predict` gave its results (result.SaveNames:
    `{stem}-2_res.*` for a second video of the same name); results made
    otherwise are named by a SaveNames of the saver's own. Failed results
    save nothing."""

    def __init__(self, save_path: PathLike, images: bool = True):
        self.save_path = Path(save_path)
        self.images = images
        self.videos: List[SavedVideo] = []  # one per video seen, in order
        self._writers: List[Any] = []
        self._stream: Any = None
        self._names = SaveNames()  # for results that come without a run's names
        self._video_stems: Set[str] = set()  # casefolded, of the videos written so far

    def save(self, result: KeypointResult) -> None:
        stream = result.metadata.get("video")
        if stream is not self._stream:
            self._finish_video()
        if result.error is not None:
            return
        if not result.named_by_run:
            self._names.claim(result)
        if stream is None:
            result.save_to_json(self.save_path)
            if self.images:
                result.save_to_img(self.save_path)
            return
        if self._stream is None:
            self._start_video(stream, result)
        for writer in self._writers:
            writer.write(result)
        self.videos[-1].frames += 1

    def save_and_pass(self, result: KeypointResult) -> KeypointResult:
        """save(result), then the result itself: a stage for stages.run_stages."""
        self.save(result)
        return result

    def _start_video(self, stream: Any, result: KeypointResult) -> None:
        stem = self._unused_video_stem(result.video_stem())
        saved = SavedVideo(stream)
        self.videos.append(saved)
        self._stream = stream
        if self.images:
            height, width = result["input_img"].shape[:2]
            writer = AnnotatedVideoWriter(self.save_path / f"{stem}_res.mp4", width, height, stream.info.fps, stream.info.live)
            self._writers.append(writer)
            saved.files.append(writer.path)
        jsonl = JsonLinesWriter(self.save_path / f"{stem}_res.jsonl")
        self._writers.append(jsonl)
        saved.files.append(jsonl.path)

    def _unused_video_stem(self, stem: str) -> str:
        """Separate predict calls name their videos apart only within each call;
        a video never replaces an earlier one of this saver: `-2`, `-3`, ..."""
        chosen, number = stem, 2
        while chosen.casefold() in self._video_stems:
            chosen, number = f"{stem}-{number}", number + 1
        if chosen != stem:
            log.warning("%s_res.*: saved as %s_res.* since this saver wrote an earlier video under that name", stem, chosen)
        self._video_stems.add(chosen.casefold())
        return chosen

    def _finish_video(self) -> None:
        writers, self._writers, self._stream = self._writers, [], None
        errors = []
        for writer in writers:
            try:
                writer.close()
            except Exception as e:  # noqa: BLE001 - close the others, then report
                errors.append(e)
        if errors:
            raise errors[0]

    def close(self) -> None:
        self._finish_video()

    def __enter__(self) -> "ResultSaver":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
