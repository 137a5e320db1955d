"""posepipe.video: which inputs are videos, reading files of every container
frame by frame (checked against OpenCV's decoder), live streams in
latest-frame mode, and a clear error naming the source for every bad video."""
from __future__ import annotations

import socket
import sys
import threading
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from posepipe.errors import InputError
from posepipe.io import iter_sources, read_frame
from posepipe.video import CameraReader, LatestFrameReader, Video, open_video, video_input_of

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from video_clips import CODECS, MjpegCamera, cut_clip, read_frames, write_video  # noqa: E402  (shared with benchmarks/video.py)


@pytest.fixture(scope="module")
def clips(shared_dir, tmp_path_factory):
    """vtest.avi frames 0..24 in each container posepipe promises to read."""
    folder = tmp_path_factory.mktemp("clips")
    return {ext: cut_clip(shared_dir, folder / f"clip.{ext}", 0, 25) for ext in CODECS}


def frames_of(video) -> list:
    with open_video(Video(video) if not isinstance(video, Video) else video) as reader:
        return list(reader.frames())


def problem(video) -> str:
    with pytest.raises(InputError) as info:
        frames_of(video)
    return str(info.value)


# --- what is a video ------------------------------------------------------------


def test_video_inputs_are_recognised(tmp_path, shared_dir):
    (tmp_path / "0").write_bytes(b"x")  # an existing file named 0 stays a file
    assert video_input_of(0) == Video(0) and video_input_of("3") == Video(3)
    assert video_input_of(str(tmp_path / "0")) is None
    assert video_input_of(True) is None and video_input_of(-1) is None
    for name in ["a.mp4", "b.AVI", "c.mkv", "d.mov", "e.webm"]:
        assert video_input_of(name).target == name
    assert video_input_of(Path("x/clip.mp4")).target == "x/clip.mp4"
    assert video_input_of("rtsp://cam.local/stream").is_live
    assert video_input_of("https://example.com/v/clip.mp4?sig=1") is not None
    assert not video_input_of("https://example.com/v/clip.mp4").is_live
    assert video_input_of("http://cam.local/video.mjpg").is_live
    assert video_input_of("https://example.com/photo.jpg") is None  # an image URL, as before
    assert video_input_of("photo.jpg") is None
    assert Video(0).is_live and not Video("a.mp4").is_live and Video("https://x/y", live=True).is_live
    assert Video(0).input_path == "camera:0" and Video(0).stem == "camera0"
    assert Video("https://example.com/v/clip.mp4").stem == "clip"


def test_a_list_may_mix_images_and_videos_and_a_folder_keeps_its_images(tmp_path, clips, shared_dir):
    photo = shared_dir / "photos" / "hrnet_demo.jpg"
    sources = list(iter_sources([str(photo), str(clips["mp4"]), 0, np.zeros((4, 4, 3), np.uint8)]))
    assert [s.kind for s in sources] == ["file", "video", "video", "array"]
    assert sources[3].name == "array input #3"  # positions still count the videos
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(photo.read_bytes())
    (folder / "b.mp4").write_bytes(clips["mp4"].read_bytes())
    assert [s.kind for s in iter_sources(str(folder))] == ["file"]  # PaddleX's rule: a folder is its images
    with pytest.raises(InputError, match="frame by frame"):
        read_frame(sources[1])


# --- files -------------------------------------------------------------------------


@pytest.mark.parametrize("ext", sorted(CODECS))
def test_every_container_reads_every_frame_as_opencv_does(clips, ext):
    path = clips[ext]
    with open_video(Video(str(path))) as reader:
        info = reader.info
        frames = list(reader.frames())
    reference = read_frames(path)
    assert len(frames) == len(reference) == 25
    assert (info.width, info.height, info.fps, info.live) == (768, 576, 10.0, False)
    assert info.frame_count == 25
    assert [f.index for f in frames] == list(range(25))
    assert [f.timestamp_s for f in frames] == pytest.approx([i / 10 for i in range(25)], abs=1e-3)
    for ours, theirs in zip(frames, reference):
        assert ours.image.shape == (576, 768, 3) and ours.image.dtype == np.uint8 and ours.image.flags.c_contiguous
        # The same FFmpeg decoders and colour conversion as OpenCV's VideoCapture, which the
        # obvious frame loop reads with: the very same pixels.
        assert np.array_equal(ours.image, theirs)


def test_the_shared_clip_as_its_readme_says(shared_dir):
    with open_video(Video(str(shared_dir / "videos" / "vtest.avi"))) as reader:
        count = sum(1 for _ in reader.frames())
        assert (reader.info.frame_count, reader.info.fps) == (340, 10.0)
    assert count == 340


def test_rotated_phone_video_comes_out_upright(tmp_path, shared_dir):
    frames = read_frames(shared_dir / "videos" / "vtest.avi", 0, 3)
    path = tmp_path / "portrait.mp4"
    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=10)
    stream.width, stream.height, stream.pix_fmt = 768, 576, "yuv420p"
    stream.set_display_rotation(90)  # as a phone held upright writes it
    for image in frames:
        container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")))
    container.mux(stream.encode(None))
    container.close()
    ours = frames_of(str(path))
    opencv = read_frames(path)  # OpenCV applies the display rotation too (CAP_PROP_ORIENTATION_AUTO)
    assert ours[0].image.shape == opencv[0].shape == (768, 576, 3)
    assert np.array_equal(ours[1].image, opencv[1])


# --- bad files ---------------------------------------------------------------------


def test_missing_empty_and_not_a_video(tmp_path):
    assert problem(str(tmp_path / "nope.mp4")) == f"{tmp_path / 'nope.mp4'}: no such file or directory"
    (tmp_path / "empty.mp4").write_bytes(b"")
    assert "empty" in problem(str(tmp_path / "empty.mp4"))
    (tmp_path / "text.mp4").write_bytes(b"this is not a video at all " * 40)
    message = problem(str(tmp_path / "text.mp4"))
    assert message.startswith(str(tmp_path / "text.mp4")) and "not a video posepipe can read" in message


def test_unknown_codec(tmp_path, clips):
    # The AVI's FourCC (FMP4, in the stream header and the bitmap header) replaced by one no decoder knows.
    data = clips["avi"].read_bytes()
    assert data.count(b"FMP4") == 2
    path = tmp_path / "unknown.avi"
    path.write_bytes(data.replace(b"FMP4", b"QQQQ"))
    assert problem(str(path)) == f"{path}: unknown video codec: FFmpeg has no decoder for it"


def test_video_without_frames(tmp_path):
    path = tmp_path / "noframes.mkv"
    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=10)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    container.start_encoding()  # the header, and not a single frame
    container.close()
    assert problem(str(path)) == f"{path}: has no frames: the video is empty or its data is missing"


@pytest.mark.parametrize("ext", ["avi", "mkv", "webm"])
def test_truncated_file_gives_its_frames_then_a_clear_error(tmp_path, clips, ext):
    data = clips[ext].read_bytes()
    path = tmp_path / f"cut.{ext}"
    path.write_bytes(data[: len(data) // 2])
    delivered = []
    with pytest.raises(InputError) as info:
        with open_video(Video(str(path))) as reader:
            for frame in reader.frames():
                delivered.append(frame)
    assert 3 <= len(delivered) < 25
    assert str(info.value) == (
        f"{path}: truncated or damaged: the video ended after {len(delivered)} of the 25 frames its header announces"
    )
    # The frames before the cut are the file's own frames (the last one may be partly concealed).
    middle = len(delivered) // 2
    reference = read_frames(clips[ext], middle, 1)[0]
    assert np.abs(delivered[middle].image.astype(int) - reference.astype(int)).mean() < 2.0


@pytest.mark.parametrize("ext", ["mp4", "mov"])
def test_truncated_mp4_cannot_be_opened(tmp_path, clips, ext):
    # MP4/MOV keep their index at the end: without it there is nothing to read.
    data = clips[ext].read_bytes()
    path = tmp_path / f"cut.{ext}"
    path.write_bytes(data[: len(data) // 2])
    message = problem(str(path))
    assert message.startswith(f"{path}: not a video posepipe can read") and "truncated" in message


def test_a_complete_file_is_not_called_truncated(clips):
    assert len(frames_of(str(clips["webm"]))) == 25  # WebM's count is duration x rate, an estimate


# --- cameras and streams ---------------------------------------------------------


def test_camera_that_cannot_open():
    with pytest.raises(InputError) as info:
        open_video(Video(97))
    assert str(info.value) == "camera 97: cannot open the camera: no such device, no permission, or it is in use"


def test_camera_reader_reads_and_reports_the_end(clips):
    # OpenCV's VideoCapture on a file stands in for a camera: the same calls as on a device.
    capture = cv2.VideoCapture(str(clips["avi"]))
    reader = CameraReader(Video(5), capture=capture)
    assert reader.info.live and reader.info.frame_count is None and (reader.info.width, reader.info.height) == (768, 576)
    delivered = []
    with pytest.raises(InputError, match=r"^camera 5: the camera stopped delivering frames after 25 frames$"):
        for frame in reader.frames():
            delivered.append(frame)
    reader.close()
    assert [f.index for f in delivered] == list(range(25))
    assert all(b.timestamp_s >= a.timestamp_s for a, b in zip(delivered, delivered[1:]))


def test_stream_that_cannot_connect():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/live.mjpg"
    t0 = time.monotonic()
    with pytest.raises(InputError) as info:
        open_video(Video(url, timeout_s=3))
    assert str(info.value).startswith(f"{url}: cannot open the stream")
    assert time.monotonic() - t0 < 10


def test_stream_that_stalls_times_out():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/live.mjpg"
    accepted = []
    threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True).start()  # accepts, never answers
    t0 = time.monotonic()
    with pytest.raises(InputError) as info:
        open_video(Video(url, timeout_s=1.5))
    assert str(info.value).startswith(f"{url}: cannot open the stream")
    assert time.monotonic() - t0 < 8
    for connection, _ in accepted:
        connection.close()
    listener.close()


def test_live_stream_that_drops_mid_way(shared_dir):
    frames = read_frames(shared_dir / "videos" / "vtest.avi", 0, 10)
    with MjpegCamera(frames, fps=50, max_frames=30) as camera:
        reader = open_video(Video(camera.url))
        assert reader.info.live
        delivered = []
        with pytest.raises(InputError) as info:
            for frame in reader.frames():
                delivered.append(frame)
        reader.close()
    assert 25 <= len(delivered) <= 30
    assert str(info.value).startswith(f"{camera.url}: the stream stopped after {len(delivered)} frames")
    sent = cv2.imdecode(np.frombuffer(camera.jpegs[3], np.uint8), cv2.IMREAD_COLOR)
    # FFmpeg's and libjpeg's JPEG decoding differ in chroma upsampling by a few levels.
    assert np.abs(delivered[3].image.astype(int) - sent.astype(int)).mean() < 4.0


def test_latest_frame_mode_drops_stale_frames_and_counts_them(shared_dir):
    frames = read_frames(shared_dir / "videos" / "vtest.avi", 0, 5)
    with MjpegCamera(frames, fps=40, max_frames=60) as camera:
        latest = LatestFrameReader(open_video(Video(camera.url)))
        taken = []
        with pytest.raises(InputError, match="the stream stopped"):
            for frame in latest:
                taken.append(frame)
                time.sleep(0.1)  # a consumer 4x slower than the camera
        latest.close()
    indices = [f.index for f in taken]
    assert indices == sorted(indices) and len(set(indices)) == len(indices)
    gaps = sum(b - a - 1 for a, b in zip(indices, indices[1:]))
    assert latest.dropped >= 30, (indices, latest.dropped)  # most frames went stale
    # Every frame the camera sent was either taken or counted as dropped
    # (the stream's last frame or two may be lost with the connection).
    assert indices[0] + len(taken) + latest.dropped >= 57 and gaps <= latest.dropped, (indices, latest.dropped)


def test_stride_is_honoured_by_the_latest_frame_reader(shared_dir):
    frames = read_frames(shared_dir / "videos" / "vtest.avi", 0, 5)
    with MjpegCamera(frames, fps=25, max_frames=20) as camera:
        latest = LatestFrameReader(open_video(Video(camera.url)), keep=lambda f: f.index % 3 == 0)
        indices = []
        with pytest.raises(InputError):
            for frame in latest:
                indices.append(frame.index)
        latest.close()
    assert indices and all(i % 3 == 0 for i in indices)


def test_write_video_helper_roundtrip(tmp_path):
    # The helper the tests cut clips with: frames go in, the same count comes out.
    frames = [np.full((48, 64, 3), 16 * i, np.uint8) for i in range(7)]
    path = write_video(tmp_path / "grey.mkv", frames)
    assert len(read_frames(path)) == 7
