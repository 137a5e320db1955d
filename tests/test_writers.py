"""posepipe.writers: the annotated video (read back by OpenCV: frame count,
size, frame rate, timing) and the JSON lines (each the dict save_to_json
writes), and ResultSaver routing images and videos."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from posepipe.result import KeypointResult, SaveNames
from posepipe.streaming import VideoStream
from posepipe.video import Video, VideoInfo
from posepipe.writers import AnnotatedVideoWriter, JsonLinesWriter, ResultSaver, annotate, track_colour

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from video_clips import read_frames  # noqa: E402


def frame_results(stream: VideoStream, count: int, size=(160, 120), step: int = 1, seconds=None):
    """Synthetic results of a video: a grey ramp per frame and one tracked person walking right."""
    w, h = size
    results = []
    for n in range(count):
        index = n * step
        image = np.full((h, w, 3), (index * 7) % 200 + 20, np.uint8)
        x = 20 + 2 * index
        rows = np.array([[0, 0.9, x, 20, x + 30, 100]], np.float32)
        kpts = np.zeros((1, 17, 3), np.float32)
        kpts[0, :, 0] = x + 15
        kpts[0, :, 1] = np.linspace(25, 95, 17)
        kpts[0, :, 2] = 0.8
        result = KeypointResult.from_arrays(stream.video.input_path, image, rows, kpts)
        result["boxes"][0]["track_id"] = 3
        boxes = result.pop("boxes")
        result["frame_index"] = index
        result["timestamp_s"] = seconds[n] if seconds is not None else index / (stream.info.fps or 25)
        result["boxes"] = boxes
        result.metadata["video"] = stream
        results.append(result)
    return results


def stream_of(name="walk.mp4", fps=10.0, size=(160, 120), live=False) -> VideoStream:
    return VideoStream(Video(name), VideoInfo(size[0], size[1], fps, None, live))


def read_back(path: Path):
    """(frames and frame rate as OpenCV reads them, presentation times as PyAV reads them)."""
    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    frames = read_frames(path)
    with av.open(str(path)) as container:
        times = [float(f.time) for f in container.decode(video=0)]
    return frames, fps, times


def test_annotated_video_has_every_frame_at_the_sources_size_and_rate(tmp_path):
    stream = stream_of(fps=10.0)
    results = frame_results(stream, 23)
    writer = AnnotatedVideoWriter(tmp_path / "walk_res.mp4", 160, 120, 10.0)
    for r in results:
        writer.write(r)
    writer.close()
    frames, fps, times = read_back(tmp_path / "walk_res.mp4")
    assert len(frames) == 23 and frames[0].shape == (120, 160, 3) and fps == pytest.approx(10.0)
    assert times == pytest.approx([i / 10 for i in range(23)], abs=1e-6)
    # What is in it is what annotate draws (up to the encoder's loss): the person and its ID label.
    for got, result in zip(frames[::7], results[::7]):
        drawn, plain = annotate(result).astype(int), result["input_img"].astype(int)
        assert np.abs(got - drawn).mean() < 6.0
        x1, y1, x2, y2 = (int(v) for v in result["boxes"][0]["coordinate"])
        region = np.s_[max(y1 - 20, 0) : y2, x1 : x2 + 1]
        assert np.abs(got[region] - drawn[region]).mean() < 0.7 * np.abs(got[region] - plain[region]).mean()
    assert not np.array_equal(annotate(results[0]), results[0]["input_img"])


def test_ntsc_rate_and_odd_size(tmp_path):
    # 29.97 fps kept exactly; an odd size (no 4:2:0 H.264) still gives the source's size.
    stream = stream_of(fps=30000 / 1001, size=(161, 121))
    writer = AnnotatedVideoWriter(tmp_path / "odd.mp4", 161, 121, 30000 / 1001)
    for r in frame_results(stream, 10, size=(161, 121)):
        writer.write(r)
    writer.close()
    frames, fps, _ = read_back(tmp_path / "odd.mp4")
    assert len(frames) == 10 and frames[0].shape == (121, 161, 3) and fps == pytest.approx(29.97, abs=0.01)


def test_strided_frames_keep_their_time(tmp_path):
    stream = stream_of(fps=10.0)
    writer = AnnotatedVideoWriter(tmp_path / "s.mp4", 160, 120, 10.0)
    for r in frame_results(stream, 6, step=4):
        writer.write(r)
    writer.close()
    frames, _, times = read_back(tmp_path / "s.mp4")
    assert len(frames) == 6 and times == pytest.approx([0.0, 0.4, 0.8, 1.2, 1.6, 2.0], abs=1e-6)


def test_live_frames_keep_their_capture_times(tmp_path):
    stream = stream_of(fps=None, live=True)
    seconds = [0.0, 0.041, 0.09, 0.5, 0.52, 0.52]  # irregular, and one repeated
    writer = AnnotatedVideoWriter(tmp_path / "live.mp4", 160, 120, None, live=True)
    for r in frame_results(stream, 6, seconds=seconds):
        writer.write(r)
    writer.close()
    frames, _, times = read_back(tmp_path / "live.mp4")
    assert len(frames) == 6
    assert times == pytest.approx([0.0, 0.041, 0.09, 0.5, 0.52, 0.521], abs=1e-3)


def test_frames_of_another_size_are_fitted_into_the_video(tmp_path, caplog):
    """A stream that switches resolution mid-way (HLS, RTSP) keeps one video:
    later frames are drawn at their own size, then scaled in with their aspect
    kept, with one warning; the JSON lines keep their own coordinates."""
    stream = stream_of(size=(160, 120))
    small = frame_results(stream_of(size=(80, 60)), 3, size=(80, 60))
    wide = frame_results(stream_of(size=(320, 120)), 2, size=(320, 120))
    results = frame_results(stream, 2) + small + wide
    for n, r in enumerate(results):
        r["frame_index"], r["timestamp_s"] = n, n / 10
        r.metadata["video"] = stream
    with ResultSaver(tmp_path) as saver:
        for r in results:
            saver.save(r)
    frames, _, _ = read_back(tmp_path / "walk_res.mp4")
    assert len(frames) == 7 and all(f.shape == (120, 160, 3) for f in frames)
    # 80x60 -> the whole 160x120 frame; 320x120 -> 160x60 between black bands.
    expected = cv2.resize(annotate(small[1]), (160, 120), interpolation=cv2.INTER_LINEAR)
    assert np.abs(frames[3].astype(int) - expected).mean() < 6
    assert frames[5][:25].max() < 40 and frames[5][-25:].max() < 40
    band = cv2.resize(annotate(wide[0]), (160, 60), interpolation=cv2.INTER_AREA)
    assert np.abs(frames[5][30:90].astype(int) - band).mean() < 6
    warnings = [r.getMessage() for r in caplog.records if "scaled to fit" in r.getMessage()]
    assert len(warnings) == 1 and "changed from 160x120 to 80x60 at frame 2" in warnings[0]
    lines = [json.loads(line) for line in (tmp_path / "walk_res.jsonl").read_text().splitlines()]
    assert [line["boxes"][0]["coordinate"] for line in lines] == [r.json["res"]["boxes"][0]["coordinate"] for r in results]


def test_json_lines_are_what_save_to_json_writes(tmp_path):
    stream = stream_of()
    results = frame_results(stream, 5)
    writer = JsonLinesWriter(tmp_path / "walk_res.jsonl")
    for r in results:
        writer.write(r)
    writer.close()
    lines = (tmp_path / "walk_res.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 5
    for line, result in zip(lines, results):
        saved = json.loads(result.save_to_json(tmp_path / "frames").read_text(encoding="utf-8"))
        assert json.loads(line) == saved
        assert saved["frame_index"] == result["frame_index"] and saved["timestamp_s"] == result["timestamp_s"]
        assert saved["boxes"][0]["track_id"] == 3 and "input_img" not in saved


def test_per_frame_files_are_named_by_frame(tmp_path):
    _, result = frame_results(stream_of(name="walk.mp4"), 2, step=42)
    assert result.save_to_json(tmp_path).name == "walk_000042_res.json"
    assert result.save_to_img(tmp_path).name == "walk_000042_res.png"
    [camera] = frame_results(VideoStream(Video(0), VideoInfo(160, 120, None, None, True)), 1)
    assert camera.save_to_json(tmp_path).name == "camera0_000000_res.json"


def test_result_saver_routes_images_and_videos(tmp_path, shared_dir):
    photo = cv2.imread(str(shared_dir / "photos" / "hrnet_demo.jpg"))
    image_result = KeypointResult.from_arrays("people.jpg", photo, np.zeros((0, 6), np.float32), np.zeros((0, 17, 3)))
    first, second = stream_of("a.mp4"), stream_of("b.mkv")
    failed = KeypointResult.failed("c.mp4", "c.mp4: truncated")
    with ResultSaver(tmp_path) as saver:
        for r in [image_result, *frame_results(first, 4), failed, *frame_results(second, 3), image_result]:
            saver.save(r)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["a_res.jsonl", "a_res.mp4", "b_res.jsonl", "b_res.mp4", "people_res.jpg", "people_res.json"]
    assert [v.frames for v in saver.videos] == [4, 3]
    assert len(read_back(tmp_path / "a_res.mp4")[0]) == 4 and len(read_back(tmp_path / "b_res.mp4")[0]) == 3
    assert saver.videos[0].describe().startswith("a.mp4: 4 frames, 0 tracks -> ")


def test_result_saver_without_images_writes_only_json(tmp_path):
    with ResultSaver(tmp_path, images=False) as saver:
        for r in frame_results(stream_of("a.mp4"), 2):
            saver.save(r)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_res.jsonl"]


def test_track_colours_differ_between_neighbours():
    colours = [track_colour(i) for i in range(1, 12)]
    assert len(set(colours)) == len(colours)
    assert all(sum(abs(a - b) for a, b in zip(c, d)) > 60 for c, d in zip(colours, colours[1:]))


def test_two_videos_of_one_name_do_not_overwrite_each_other(tmp_path):
    with ResultSaver(tmp_path, images=False) as saver:
        for r in [*frame_results(stream_of("a/walk.mp4"), 2), *frame_results(stream_of("b/Walk.mkv"), 3)]:
            saver.save(r)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Walk-2_res.jsonl", "walk_res.jsonl"]
    assert len((tmp_path / "Walk-2_res.jsonl").read_text().splitlines()) == 3


def test_one_runs_names_serve_frames_and_video_files(tmp_path, caplog):
    """SaveNames claims a video's stem once: its frames' save_to_* files and
    ResultSaver's video files take the same one, and no image takes a name a
    frame has."""
    image = np.zeros((4, 4, 3), np.uint8)
    names = SaveNames()
    first = [names.claim(r) for r in frame_results(stream_of("a/clip.mp4"), 2, step=42)]
    second = [names.claim(r) for r in frame_results(stream_of("b/CLIP.mkv"), 2, step=42)]
    photo = names.claim(KeypointResult.from_arrays("c/clip_000042.jpg", image, np.zeros((0, 6)), np.zeros((0, 17, 3))))
    third = [names.claim(r) for r in frame_results(stream_of("d/photo_000001.mp4"), 1)]
    late = names.claim(KeypointResult.from_arrays("e/photo_000001_000000.png", image, np.zeros((0, 6)), np.zeros((0, 17, 3))))
    assert first[1].save_to_json(tmp_path / "frames").name == "clip_000042_res.json"
    assert second[1].save_to_json(tmp_path / "frames").name == "CLIP-2_000042_res.json"
    assert second[1].save_to_img(tmp_path / "frames").name == "CLIP-2_000042_res.png"
    assert photo.save_to_json(tmp_path / "frames").name == "clip_000042-2_res.json"
    assert third[0].save_to_json(tmp_path / "frames").name == "photo_000001_000000_res.json"
    assert late.save_to_json(tmp_path / "frames").name == "photo_000001_000000-2_res.json"
    with ResultSaver(tmp_path / "out", images=False) as saver:
        for r in [*first, *second]:
            saver.save(r)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["CLIP-2_res.jsonl", "clip_res.jsonl"]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings.count("b/CLIP.mkv: saved as CLIP-2_* since clip_* is a/clip.mp4's in this run") == 1  # once per video


def test_videos_of_separate_runs_into_one_saver_keep_their_files(tmp_path, caplog):
    """Each predict call names its videos apart only within the call; one
    saver fed by two calls still never writes a video over an earlier one."""
    runs = [[SaveNames().claim(r) for r in frame_results(stream_of(f"{folder}/walk.mp4"), n)] for folder, n in (("a", 2), ("b", 3))]
    assert [run[0].video_stem(warn=False) for run in runs] == ["walk", "walk"]
    with ResultSaver(tmp_path, images=False) as saver:
        for run in runs:
            for r in run:
                saver.save(r)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["walk-2_res.jsonl", "walk_res.jsonl"]
    assert len((tmp_path / "walk-2_res.jsonl").read_text().splitlines()) == 3
    assert "walk_res.*: saved as walk-2_res.* since this saver wrote an earlier video under that name" in caplog.text


def test_named_results_pickle_and_copy(tmp_path):
    """Results of a run travel between processes (multiprocessing, Ray) and
    keep the names their run gave them."""
    import copy
    import pickle

    names = SaveNames()
    [first] = [names.claim(r) for r in frame_results(stream_of("a/clip.mp4"), 1)]
    [second] = [names.claim(r) for r in frame_results(stream_of("b/clip.mp4"), 1)]
    for clone in (pickle.loads(pickle.dumps(second)), copy.deepcopy(second)):
        assert clone.save_to_json(tmp_path).name == second.save_to_json(tmp_path / "x").name == "clip-2_000000_res.json"
    assert first.save_to_json(tmp_path).name == "clip_000000_res.json"
