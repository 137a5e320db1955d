"""Videos through the pipeline: one result per frame, lazily.

For each frame: the detector's persons (on the frames it runs on) or the
persons followed from the previous frame (tracking.py), their keypoints from
the pipeline's keypoint stage, track IDs, optional smoothing (smoothing.py),
and a result with PaddleX's fields plus `frame_index`, `timestamp_s` and each
person's `track_id`.

Files are read frame by frame (all of them, or every `stride`-th), decoding
ahead on a thread (stages.py) while the models run. Live sources (cameras,
rtsp://, ...) are read in latest-frame mode (video.LatestFrameReader): the
frame processed is always the newest, and frames that went stale meanwhile
are dropped and counted."""
from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Sequence

import numpy as np

from .errors import ConfigError, InputError
from .flags import given, setting
from .result import KeypointResult
from .smoothing import OneEuroSettings, PoseSmoother
from .stages import run_stages
from .tracking import Tracker, TrackerSettings
from .video import LatestFrameReader, Video, VideoFrame, VideoInfo, VideoReader, open_video

if TYPE_CHECKING:
    from .io import Source
    from .pipeline import KeypointPipeline

log = logging.getLogger("posepipe")

# Frames decoded ahead of the models: enough to hide a slow frame of the
# decoder, few enough that memory does not depend on the video (768x576: 1.3 MB each).
DECODE_AHEAD = 4


@dataclass(frozen=True)
class StreamOptions:
    """predict()'s arguments for videos (they do not change still images)."""

    det_frequency: int = setting(
        1,
        metavar="N",
        help="videos: run the person detector on every N-th frame, and whenever a followed person is lost; "
        "in between, persons are followed from their previous keypoints",
    )
    track: Optional[bool] = setting(
        None, negatable=True, help="videos: give every person a track_id that stays the same across frames (none: on)"
    )
    smooth: bool = setting(
        False, help="videos: smooth keypoints over time per tracked person (One-Euro filter, see --smooth_* )"
    )
    stride: int = setting(
        1, metavar="N", help="video files: process every N-th frame only (frame_index stays the source's)"
    )
    smoothing: OneEuroSettings = setting(default_factory=OneEuroSettings, cli=False)
    tracker: TrackerSettings = setting(default_factory=TrackerSettings, cli=False)

    def __post_init__(self) -> None:
        for name in ("det_frequency", "stride"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.track not in (None, True, False):
            raise ConfigError(f"track must be True, False or None, got {self.track!r}")
        if not isinstance(self.smooth, bool):
            raise ConfigError(f"smooth must be true or false, got {self.smooth!r}")

    @classmethod
    def from_arguments(cls, det_frequency: int = 1, track: Optional[bool] = None, smooth: Any = False, stride: int = 1) -> "StreamOptions":
        """From predict's arguments; `smooth` may also be a dict of OneEuroSettings' fields."""
        smoothing = OneEuroSettings.from_argument(smooth)
        return cls(
            det_frequency=det_frequency,
            track=track,
            smooth=smoothing is not None,
            stride=stride,
            smoothing=smoothing or OneEuroSettings(),
        )

    @property
    def needs_tracks(self) -> bool:
        """Tracks are kept when IDs are reported, and whenever persons are
        followed between detections or smoothed (which need them internally)."""
        return self.track is not False or self.det_frequency > 1 or self.smooth


@dataclass
class VideoStream:
    """What a video's results share (their metadata["video"]): the source,
    what its header says, and counters that grow as it is read."""

    video: Video
    info: VideoInfo
    frames_done: int = 0
    detector_frames: int = 0  # frames the detector ran on
    extra_detector_frames: int = 0  # of those, frames off the det_frequency schedule: a followed person was lost on the frame before
    dropped_frames: int = 0  # live sources: frames that went stale before the models were free
    tracks: int = 0  # track IDs given out so far


def predict_sources(
    pipeline: "KeypointPipeline",
    sources: Sequence["Source"],
    det_threshold: Optional[float],
    options: StreamOptions,
    single: bool,
) -> Iterator[KeypointResult]:
    """Results of a list that holds videos: images go through the pipeline's
    own path in runs, each video frame by frame. A failing video raises when
    it is the only input; in a list it yields a failed result after the
    frames it delivered, and the next input runs."""
    images: List["Source"] = []
    for source in sources:
        if source.kind != "video":
            images.append(source)
            continue
        if images:
            yield from pipeline._predict(images, det_threshold)
            images = []
        try:
            yield from predict_video(pipeline, source.data, det_threshold, options)
        except InputError as e:
            if single:
                raise
            # Marked as the pipeline marks failed images: a front end that reports failures itself drops it.
            log.warning("skipping input: %s", e, extra={"input_failure": True})
            yield KeypointResult.failed(source.input_path, str(e))
    if images:
        yield from pipeline._predict(images, det_threshold)


def predict_video(
    pipeline: "KeypointPipeline", video: Video, det_threshold: Optional[float], options: StreamOptions
) -> Iterator[KeypointResult]:
    reader = open_video(video)
    stream = VideoStream(video, reader.info)
    loop = FrameLoop(pipeline, stream, det_threshold, options)
    if reader.info.live:
        latest = LatestFrameReader(reader, keep=lambda frame: frame.index % options.stride == 0)
        try:
            for frame in latest:
                stream.dropped_frames = latest.dropped
                yield loop.step(frame)
        finally:
            latest.close()
        return
    frames = _every(reader, options.stride)
    if pipeline.options.prefetch:
        # Decoding runs ahead on a thread of its own. The models do not overlap:
        # each already spreads over all cores, and running the detector of the
        # next frame beside the keypoint model of this one (tried, 2-core VM,
        # vtest) took 10% more CPU per frame, the two sessions' threads spinning
        # against each other, and gave fewer frames per second.
        frames = run_stages(frames, queue_size=DECODE_AHEAD, name="posepipe-video")
    with contextlib.closing(frames):
        for frame in frames:
            yield loop.step(frame)


def _every(reader: VideoReader, stride: int) -> Iterator[VideoFrame]:
    """The reader's frames on the stride; closes the reader when done, on the
    thread that iterates it (a decoder must not be closed under a running read)."""
    try:
        for frame in reader.frames():
            if frame.index % stride == 0:
                yield frame
    finally:
        reader.close()


class FrameLoop:
    """The per-frame work for one video, in frame order."""

    def __init__(
        self, pipeline: "KeypointPipeline", stream: VideoStream, det_threshold: Optional[float], options: StreamOptions
    ):
        self.pipeline = pipeline
        self.stream = stream
        self.options = options
        self.tracker = Tracker(options.tracker) if options.needs_tracks else None
        self.smoother = PoseSmoother(options.smoothing) if options.smooth else None
        # The stage functions, not predict_boxes / estimate_keypoints: those leave out the stage times.
        from .pipeline import detect_persons, estimate_keypoints  # pipeline.py imports this module

        self._detect = lambda images: detect_persons(pipeline.detector, images, det_threshold)
        self._estimate = lambda images, rows: estimate_keypoints(pipeline.keypoints, images, rows)[:2]

    def step(self, frame: VideoFrame) -> KeypointResult:
        """The result of the next frame."""
        stream, tracker, t = self.stream, self.tracker, frame.timestamp_s
        images = [frame.image]
        ids: Optional[np.ndarray] = None
        timings: dict = {}
        scheduled = tracker is None or stream.frames_done % self.options.det_frequency == 0
        if tracker is not None and tracker.lost_on_last_frame and not scheduled:
            scheduled = True
            stream.extra_detector_frames += 1
        if scheduled:
            [rows], timings = self._detect(images)
            [kpts], kpt_timings = self._estimate(images, [rows])
            timings.update(kpt_timings)
            stream.detector_frames += 1
            if tracker is not None:
                ids = tracker.assign(rows[:, 2:6], rows[:, 1], kpts, t)
        else:
            ids, boxes, scores = tracker.propagate(t)
            rows = _rows(boxes, scores)
            [kpts], timings = self._estimate(images, [rows])
            kept, boxes = tracker.follow(ids, kpts, t)
            rows[:, 2:6] = boxes
            rows, kpts, ids = rows[kept], kpts[kept], ids[kept]
        if self.smoother is not None and ids is not None:
            kpts = kpts.copy()
            for i, track_id in enumerate(ids):
                kpts[i] = self.smoother(int(track_id), kpts[i], t, float(rows[i, 5] - rows[i, 3]))
            self.smoother.keep_only(tracker.tracks)
        stream.frames_done += 1
        if tracker is not None:
            stream.tracks = tracker.started
        return self._result(frame, rows, kpts, ids if self.options.track is not False else None, timings)

    def _result(
        self, frame: VideoFrame, rows: np.ndarray, kpts: np.ndarray, ids: Optional[np.ndarray], timings: dict
    ) -> KeypointResult:
        result = KeypointResult.from_arrays(self.stream.video.input_path, frame.image, rows, kpts)
        if ids is not None:
            for person, track_id in zip(result["boxes"], ids):
                person["track_id"] = int(track_id)
        # The frame's fields right after input_path, ahead of the long boxes list.
        boxes = result.pop("boxes")
        result["frame_index"] = frame.index
        result["timestamp_s"] = round(float(frame.timestamp_s), 6)
        result["boxes"] = boxes
        result.metadata.update(
            self.pipeline.metadata,
            timings_s=timings,
            batch_images=1,
            video=self.stream,
            captured_at=frame.captured_at,
        )
        return result


def _rows(boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Boxes and scores in the detector's [M,6] row layout (class 0)."""
    rows = np.zeros((len(boxes), 6), np.float32)
    rows[:, 1] = scores
    rows[:, 2:6] = boxes
    return rows


def stream_arguments(args: Any) -> Dict[str, Any]:
    """predict's video arguments from parsed command-line flags: only those
    given, so that predict's own defaults apply to the rest. A --smooth_*
    parameter turns smoothing on. Raises ConfigError for bad values."""
    arguments = given(StreamOptions, args)
    parameters = given(OneEuroSettings, args)
    if parameters:
        arguments["smooth"] = parameters
    StreamOptions.from_arguments(**arguments)
    return arguments


class ResultCount:
    """How many results `predict` will give for these sources, for a progress
    bar: one per image, one per processed frame of a video file. A file's
    count comes from the header of the reader `predict` opens, when its first
    frame arrives (until then it counts one, as a video that cannot be opened
    gives one failed result); `total` is None once a live source or a file
    without a frame count makes it open-ended."""

    def __init__(self, sources: Sequence["Source"], stride: int = 1):
        live = any(s.kind == "video" and s.data.is_live for s in sources)
        self.total: Optional[int] = None if live else len(sources)
        self._stride = stride
        self._stream: Optional[VideoStream] = None

    def update(self, result: KeypointResult) -> bool:
        """Count in the video of this result, if it is new; True when `total` changed."""
        stream = result.metadata.get("video")
        if stream is None or stream is self._stream or self.total is None:
            return False
        self._stream = stream
        count = stream.info.frame_count
        self.total = None if count is None else self.total - 1 + max(1, math.ceil(count / self._stride))
        return True
