"""pipeline.predict on videos, with the real models: one result per frame,
lazily; the same keypoints as the image path; tracking IDs that hold on the
shared clip and across an occlusion; det_frequency against every-frame output;
smoothing on a real still person; strides, mixed lists, every bad video, and
memory that stays flat."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

import posepipe
import posepipe.streaming
from posepipe.errors import ConfigError, InputError
from posepipe.oks import box_iou
from posepipe.video import Video

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from video_clips import MjpegCamera, cut_clip, photo_clip, read_frames, write_video  # noqa: E402  (shared with benchmarks/video.py)
from video_metrics import agreement, jitter  # noqa: E402


@pytest.fixture(scope="module")
def pipeline(real_config):
    # ONNX Runtime directly (no use_hpip measurement): the fastest CPU backend for these models.
    return posepipe.create_pipeline(config=real_config, device="cpu", backend="onnxruntime")


@pytest.fixture(scope="module")
def clip(shared_dir, tmp_path_factory) -> Path:
    """vtest.avi frames 100..159 (several walkers, some entering and leaving) as an MP4."""
    return cut_clip(shared_dir, tmp_path_factory.mktemp("clip") / "walk.mp4", 100, 60)


@pytest.fixture(scope="module")
def every_frame(pipeline, clip):
    return list(pipeline.predict(str(clip)))


def people(results):
    return [r["boxes"] for r in results]


def test_one_result_per_frame_with_its_index_and_time(every_frame, clip):
    assert len(every_frame) == 60
    assert [r["frame_index"] for r in every_frame] == list(range(60))
    assert [r["timestamp_s"] for r in every_frame] == pytest.approx([i / 10 for i in range(60)], abs=1e-3)
    first = every_frame[0]
    assert list(first.keys())[:4] == ["input_path", "input_img", "frame_index", "timestamp_s"]
    assert first["input_path"] == str(clip) and first["input_img"].shape == (576, 768, 3)
    assert sum(len(r["boxes"]) for r in every_frame) >= 3 * 60  # several walkers in every frame
    for r in every_frame:
        for person in r["boxes"]:
            assert set(person) == {"coordinate", "det_score", "keypoints", "kpt_score", "track_id"}
            assert isinstance(person["track_id"], int) and person["track_id"] >= 1
        ids = [p["track_id"] for p in r["boxes"]]
        assert len(ids) == len(set(ids))
    assert first.metadata["video"].info.fps == 10.0 and first.metadata["video"].detector_frames == 60


def test_every_frame_mode_equals_the_obvious_frame_loop(pipeline, every_frame, clip):
    # Frames read by OpenCV, each predicted as an image (how one would loop
    # over a video by hand): the same persons and keypoints, to the bit.
    frames = read_frames(clip, 0, 8)
    for video_result, image_result in zip(every_frame[:8], pipeline.predict(frames)):
        assert len(video_result["boxes"]) == len(image_result["boxes"])
        for a, b in zip(video_result["boxes"], image_result["boxes"]):
            assert a["coordinate"] == b["coordinate"] and np.array_equal(a["keypoints"], b["keypoints"])


def test_results_come_lazily_with_bounded_read_ahead(pipeline, clip, monkeypatch):
    decoded = []
    real_open = posepipe.streaming.open_video

    def counting_open(video):
        reader = real_open(video)
        frames = reader.frames

        def counted():
            for frame in frames():
                decoded.append(frame.index)
                yield frame

        reader.frames = counted
        return reader

    monkeypatch.setattr(posepipe.streaming, "open_video", counting_open)
    results = pipeline.predict(str(clip), track=False)
    first = next(results)
    assert first["frame_index"] == 0
    assert len(decoded) <= 1 + posepipe.streaming.DECODE_AHEAD + 2  # the frame, the queue, one in each thread's hands
    results.close()


def test_track_ids_hold_on_the_clip(every_frame):
    # Independent of the tracker's own logic: a person whose box overlaps one
    # and only one box of the next frame by IoU > 0.5 (and nothing else
    # there above 0.3) is unambiguously the same person, and must keep its ID.
    checked = kept = 0
    for a, b in zip(every_frame, every_frame[1:]):
        if not a["boxes"] or not b["boxes"]:
            continue
        iou = box_iou(np.array([p["coordinate"] for p in a["boxes"]]), np.array([p["coordinate"] for p in b["boxes"]]))
        for i, j in enumerate(iou.argmax(axis=1)):
            if iou[i, j] > 0.5 and (iou[i] > 0.3).sum() == 1 and (iou[:, j] > 0.3).sum() == 1:
                checked += 1
                kept += a["boxes"][i]["track_id"] == b["boxes"][j]["track_id"]
    assert checked > 100 and kept == checked
    # Six seconds of a few walkers: not one ID per detection.
    ids = {p["track_id"] for r in every_frame for p in r["boxes"]}
    most_at_once = max(len(r["boxes"]) for r in every_frame)
    assert len(ids) <= most_at_once + 6


def test_ids_return_after_a_short_occlusion(pipeline, shared_dir, tmp_path):
    # Frames 10..13 (0.4 s) blacked out: nobody is seen, then everyone is back with their ID.
    path = cut_clip(shared_dir, tmp_path / "blackout.mp4", 100, 24, edit=lambda i, f: f * 0 if 10 <= i <= 13 else f)
    results = list(pipeline.predict(str(path)))
    assert all(not results[i]["boxes"] for i in range(10, 14))
    before, after = results[9]["boxes"], results[14]["boxes"]
    iou = box_iou(np.array([p["coordinate"] for p in before]), np.array([p["coordinate"] for p in after]))
    pairs = [(i, int(j)) for i, j in enumerate(iou.argmax(axis=1)) if iou[i, j] > 0.3]
    assert len(pairs) >= 3
    assert all(before[i]["track_id"] == after[j]["track_id"] for i, j in pairs)


def test_no_track_leaves_ids_out(pipeline, clip):
    results = [r for r, _ in zip(pipeline.predict(str(clip), track=False), range(3))]
    assert all("track_id" not in p for r in results for p in r["boxes"])


def test_det_frequency_follows_every_frame_output(pipeline, clip, every_frame):
    skipping = list(pipeline.predict(str(clip), det_frequency=5))
    stream = skipping[-1].metadata["video"]
    assert 12 <= stream.detector_frames < 60 and stream.detector_frames == 12 + stream.extra_detector_frames
    score = agreement(people(every_frame), people(skipping))
    assert score["mean_oks"] >= 0.9
    assert score["worst_lost_streak"] <= 4  # a newcomer waits at most for the next detector frame
    # IDs on the detector frames match the every-frame run's persons one to one.
    assert all(len(skipping[f]["boxes"]) == len(every_frame[f]["boxes"]) for f in range(0, 60, 5))


def test_single_person_clip_skips_the_detector(pipeline, shared_dir, tmp_path):
    photo = cv2.imread(str(shared_dir / "photos" / "hrnet_demo.jpg"))
    path = write_video(tmp_path / "one.mp4", photo_clip(photo, 20, noise=3.0), fps=25)
    every = list(pipeline.predict(str(path)))
    skipping = list(pipeline.predict(str(path), det_frequency=5))
    assert skipping[-1].metadata["video"].detector_frames == 4
    assert {p["track_id"] for r in skipping for p in r["boxes"]} == {1}
    score = agreement(people(every), people(skipping))
    assert score["mean_oks"] >= 0.95 and score["lost_person_frames"] == 0


def test_smoothing_calms_a_real_still_person(pipeline, shared_dir, tmp_path):
    photo = cv2.imread(str(shared_dir / "photos" / "hrnet_demo.jpg"))
    path = write_video(tmp_path / "still.mp4", photo_clip(photo, 30, noise=6.0, seed=3), fps=25)

    def joints(results):
        return np.stack([r["boxes"][0]["keypoints"][:, :2] for r in results])

    raw = joints(pipeline.predict(str(path)))
    smooth = joints(pipeline.predict(str(path), smooth=True))
    assert jitter(raw[5:]) > 0.2  # the model does shake on noisy frames
    assert jitter(smooth[5:]) <= 0.5 * jitter(raw[5:])
    custom = joints(pipeline.predict(str(path), smooth={"min_cutoff": 50.0, "beta": 0.0}))
    assert jitter(custom[5:]) > 0.8 * jitter(raw[5:])  # a 50 Hz cutoff at 25 fps barely filters


def test_stride(pipeline, clip):
    results = list(pipeline.predict(str(clip), stride=7, track=False))
    assert [r["frame_index"] for r in results] == list(range(0, 60, 7))
    assert [r["timestamp_s"] for r in results] == pytest.approx([i / 10 for i in range(0, 60, 7)], abs=1e-3)


def test_a_list_mixes_images_and_videos_in_order(pipeline, clip, shared_dir):
    photo = str(shared_dir / "photos" / "hrnet_demo.jpg")
    short = Video(str(clip))
    results = list(pipeline.predict([photo, short, photo], stride=20))
    assert [r.get("frame_index") for r in results] == [None, 0, 20, 40, None]
    assert [r["input_path"] for r in results] == [photo, str(clip), str(clip), str(clip), photo]
    assert results[0]["boxes"][0]["coordinate"] == results[-1]["boxes"][0]["coordinate"]


def test_bad_videos_in_a_list_yield_errors_and_the_rest_runs(pipeline, clip, shared_dir, tmp_path):
    photo = str(shared_dir / "photos" / "hrnet_demo.jpg")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 1000)
    data = clip.read_bytes()
    cut = cut_clip(shared_dir, tmp_path / "cut.avi", 100, 20)
    cut.write_bytes(cut.read_bytes()[: len(cut.read_bytes()) * 2 // 3])
    results = list(pipeline.predict([str(broken), str(cut), photo, 99], stride=1, track=False))
    assert results[0].error.startswith(f"{broken}: not a video posepipe can read")
    delivered = [r for r in results if r["input_path"] == str(cut) and r.error is None]
    failure = next(r for r in results if r["input_path"] == str(cut) and r.error is not None)
    assert 3 <= len(delivered) < 20 and all(r["boxes"] for r in delivered)  # frames before the cut keep their results
    assert f"ended after {len(delivered)} of the 20 frames" in failure.error
    assert results[-2]["input_path"] == photo and results[-2]["boxes"]
    assert results[-1].error.startswith("camera 99: cannot open the camera")
    assert clip.read_bytes() == data


def test_a_single_bad_video_raises_after_its_good_frames(pipeline, shared_dir, tmp_path):
    cut = cut_clip(shared_dir, tmp_path / "cut.mkv", 100, 20)
    cut.write_bytes(cut.read_bytes()[: len(cut.read_bytes()) * 3 // 4])
    delivered = []
    with pytest.raises(InputError) as info:
        for result in pipeline.predict(str(cut)):
            delivered.append(result)
    assert str(info.value).startswith(f"{cut}: truncated or damaged")
    assert len(delivered) >= 5 and [r["frame_index"] for r in delivered] == list(range(len(delivered)))
    with pytest.raises(InputError, match="^camera 98: cannot open the camera"):
        list(pipeline.predict(98))


def test_live_stream_keeps_latency_flat_and_reports_its_drop(pipeline, shared_dir):
    # A 25 fps MJPEG camera over HTTP for 4 s with several walkers in view:
    # the models are slower than the camera, so stale frames are dropped, the
    # latency of each result stays near the time one frame takes, and when
    # the camera goes away the error names it, after the results so far.
    frames = read_frames(shared_dir / "videos" / "vtest.avi", 100, 25)
    results, done_at = [], []
    with MjpegCamera(frames, fps=25, max_frames=100) as camera:
        with pytest.raises(InputError) as info:
            for result in pipeline.predict(Video(camera.url)):
                results.append(result)
                done_at.append(time.monotonic())
        sent = list(camera.sent)
    assert str(info.value).startswith(f"{camera.url}: the stream stopped after ")
    indices = [r["frame_index"] for r in results]
    assert len(results) >= 5 and indices == sorted(set(indices))
    assert results[-1].metadata["video"].dropped_frames >= 10 and results[-1].metadata["video"].info.live
    latency = [done - sent[i] for i, done in zip(indices, done_at)]
    interval = float(np.median(np.diff(done_at)))  # the time one frame takes
    # Queued frames would add (interval - 1/25 s) of latency per frame; here it stays put.
    third = len(latency) // 3
    assert np.median(latency) <= 2 * interval + 0.2, (latency, interval)
    assert np.median(latency[-third:]) <= np.median(latency[:third]) + interval + 0.2, (latency, interval)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"det_frequency": 0}, "det_frequency must be a positive integer"),
        ({"stride": 1.5}, "stride must be a positive integer"),
        ({"track": "yes"}, "track must be True, False or None"),
        ({"smooth": {"beta": -1}}, "smoothing beta must be >= 0"),
    ],
)
def test_bad_arguments(pipeline, clip, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        next(pipeline.predict(str(clip), **kwargs))


def resident_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads Linux's /proc for the resident set")
def test_memory_stays_flat_over_a_long_video(pipeline, shared_dir, tmp_path):
    # 300 frames of 640x480, a person walking across, tracked and smoothed:
    # nothing may pile up per frame (one leaked frame is 0.9 MB).
    photo = cv2.resize(cv2.imread(str(shared_dir / "photos" / "hrnet_demo.jpg")), None, fx=0.6, fy=0.6)
    canvas = np.full((480, 640, 3), 90, np.uint8)
    canvas[100 : 100 + photo.shape[0], 50 : 50 + photo.shape[1]] = photo
    path = write_video(tmp_path / "long.mp4", photo_clip(canvas, 300, noise=2.0, shift_px_per_frame=(0.8, 0.0)), fps=30)
    samples, seen = [], 0
    for result in pipeline.predict(str(path), det_threshold=0.3, det_frequency=10, smooth=True):
        seen += bool(result["boxes"])
        if result["frame_index"] >= 100:
            samples.append(resident_mb())
    assert len(samples) == 200 and seen >= 290
    assert max(samples) - samples[0] < 0.05 * samples[0]
    # No steady climb either: the last fifty frames sit where the first fifty did.
    assert np.mean(samples[-50:]) - np.mean(samples[:50]) < 10.0


def test_two_videos_of_one_name_in_one_call_keep_their_files_apart(pipeline, clip, tmp_path):
    from posepipe.writers import ResultSaver

    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "walk.mp4").write_bytes(clip.read_bytes())
    results = list(pipeline.predict([str(tmp_path / "a" / "walk.mp4"), str(tmp_path / "b" / "walk.mp4")], stride=30))
    assert [r["frame_index"] for r in results] == [0, 30, 0, 30]
    names = [r.save_to_json(tmp_path / "frames").name for r in results]
    assert names == ["walk_000000_res.json", "walk_000030_res.json", "walk-2_000000_res.json", "walk-2_000030_res.json"]
    assert results[3].save_to_img(tmp_path / "frames").name == "walk-2_000030_res.png"
    with ResultSaver(tmp_path / "out", images=False) as saver:
        for r in results:
            saver.save(r)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["walk-2_res.jsonl", "walk_res.jsonl"]


def test_videos_run_on_the_pipelines_public_stages(pipeline, clip, monkeypatch):
    """streaming.py needs only what any KeypointPipeline exposes (its detector
    and keypoint stages), not the pipeline's private helpers."""
    expected = list(pipeline.predict(str(clip), stride=30, det_frequency=2))

    def private(*args, **kwargs):
        raise AssertionError("a private pipeline method was called")

    monkeypatch.setattr(pipeline, "_detect", private)
    monkeypatch.setattr(pipeline, "_estimate", private)
    results = list(pipeline.predict(str(clip), stride=30, det_frequency=2))
    assert [r["frame_index"] for r in results] == [0, 30] and results[0]["boxes"]
    for got, want in zip(results, expected):
        assert [b["track_id"] for b in got["boxes"]] == [b["track_id"] for b in want["boxes"]]
        np.testing.assert_array_equal(np.stack([b["keypoints"] for b in got["boxes"]]), np.stack([b["keypoints"] for b in want["boxes"]]))
        assert set(got.metadata["timings_s"]) >= {"crops", "kpt_infer", "kpt_decode"}
    assert set(results[0].metadata["timings_s"]) >= {"det_infer", "kpt_infer"}
