"""The `posepipe` command on videos: the video flags reach predict, bad values
are one line (exit 2), a video's --save_path holds exactly {stem}_res.mp4 and
{stem}_res.jsonl, failures keep what was done, and an interrupted run (a
webcam stopped with Ctrl+C) still leaves a playable video."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import cv2
import pytest

import posepipe
import posepipe.cli as cli
from posepipe.config import PipelineConfig

from test_writers import frame_results, stream_of

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from video_clips import cut_clip, read_frames  # noqa: E402


class FakeVideoPipeline:
    """Records predict's arguments; yields `frames` synthetic frame results of
    one video, then raises `then` (if set)."""

    def __init__(self, frames=0, then=None):
        self.calls = []
        self.frames, self.then = frames, then

    def predict(self, input, det_threshold=None, **kwargs):
        self.calls.append(kwargs)
        yield from frame_results(stream_of("cam.mp4"), self.frames)
        if self.then is not None:
            raise self.then


@pytest.fixture
def fake(monkeypatch):
    state = types.SimpleNamespace(pipeline=FakeVideoPipeline())
    monkeypatch.setattr(cli, "create_pipeline", lambda **kwargs: state.pipeline)
    return state


def last_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err
    return lines[-1]


def test_video_flags_reach_predict(fake, tmp_path, capsys):
    args = ["--input", str(tmp_path / "clip.mp4"), "--det_frequency", "3", "--no_track", "--stride", "2",
            "--smooth_beta", "2.5", "-q"]
    assert cli.main(args) == 0
    assert fake.pipeline.calls == [{"det_frequency": 3, "track": False, "stride": 2, "smooth": {"beta": 2.5}}]


@pytest.mark.parametrize(
    "flags, expected",
    [
        ([], {}),
        (["--track"], {"track": True}),
        (["--track", "false"], {"track": False}),
        (["--smooth"], {"smooth": True}),
        (["--smooth", "--smooth_min_cutoff", "0.5", "--smooth_d_cutoff", "2"], {"smooth": {"min_cutoff": 0.5, "d_cutoff": 2.0}}),
    ],
)
def test_only_given_flags_are_passed(fake, tmp_path, flags, expected):
    assert cli.main(["--input", str(tmp_path / "clip.mp4"), "-q", *flags]) == 0
    assert fake.pipeline.calls == [expected]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--det_frequency", "0"], "det_frequency must be a positive integer"),
        (["--stride", "x"], "expected an integer"),
        (["--smooth_min_cutoff", "0"], "min_cutoff and d_cutoff must be > 0"),
        (["--track", "maybe"], "expected true or false"),
    ],
)
def test_bad_video_flags_exit_2_with_one_line(fake, tmp_path, capsys, flags, message):
    assert cli.main(["--input", str(tmp_path / "clip.mp4"), *flags]) == 2
    assert message in last_line(capsys.readouterr().err)


def test_help_lists_the_video_flags(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for flag in ["--det_frequency", "--track", "--no_track", "--smooth", "--stride", "--smooth_min_cutoff", "--smooth_beta", "--smooth_d_cutoff"]:
        assert flag in out


def test_an_interrupted_run_leaves_a_playable_video(fake, tmp_path, capsys):
    # As when a webcam run is stopped with Ctrl+C after 7 frames.
    fake.pipeline = FakeVideoPipeline(frames=7, then=KeyboardInterrupt())
    out = tmp_path / "out"
    assert cli.main(["--input", "0", "--save_path", str(out)]) == 130
    assert len(read_frames(out / "cam_res.mp4")) == 7
    assert len((out / "cam_res.jsonl").read_text().splitlines()) == 7
    assert last_line(capsys.readouterr().err) == "posepipe: error: interrupted"


def test_a_stream_that_changes_size_keeps_one_video(fake, tmp_path, capsys):
    class Switching(FakeVideoPipeline):
        def predict(self, input, det_threshold=None, **kwargs):
            stream = stream_of("cam.mp4")
            results = frame_results(stream, 3) + frame_results(stream_of("cam.mp4", size=(320, 240)), 4, size=(320, 240))
            for n, result in enumerate(results):
                result["frame_index"] = n
                result.metadata["video"] = stream
                yield result

    fake.pipeline = Switching()
    out = tmp_path / "out"
    assert cli.main(["--input", str(tmp_path / "cam.mp4"), "--save_path", str(out)]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and "changed from 160x120 to 320x240 at frame 3" in err
    frames = read_frames(out / "cam_res.mp4")
    assert len(frames) == 7 and all(f.shape == (120, 160, 3) for f in frames)
    assert len((out / "cam_res.jsonl").read_text().splitlines()) == 7


# --- with the real pipeline on the shared models ---------------------------------------


@pytest.fixture(scope="module")
def real_yaml(shared_dir, tmp_path_factory):
    config = PipelineConfig.default()
    config.detector.model_dir = str(shared_dir / "models" / "real" / "person_detector_nanodet")
    config.keypoints.model_name = "PP-TinyPose_256x192"
    config.keypoints.model_dir = str(shared_dir / "models" / "real" / "keypoint_movenet_thunder")
    path = tmp_path_factory.mktemp("cfg") / "real.yaml"
    path.write_text(config.to_yaml())
    return path


@pytest.fixture(scope="module")
def walk(shared_dir, tmp_path_factory):
    return cut_clip(shared_dir, tmp_path_factory.mktemp("clips") / "walk.mp4", 200, 12)


def test_real_video_run_writes_the_annotated_video_and_json_lines(real_yaml, walk, tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(posepipe.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [sys.executable, "-m", "posepipe", "--pipeline", str(real_yaml), "--input", str(walk), "--save_path", str(out),
         "--backend", "onnxruntime", "--det_frequency", "3"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["walk_res.jsonl", "walk_res.mp4"]
    assert "frame/s" in proc.stderr and "12/12" in proc.stderr  # the progress bar, with a total
    assert f"{walk}: 12 frames, " in proc.stderr and "{'res'" not in proc.stderr  # a summary, not 12 printed dicts
    capture = cv2.VideoCapture(str(out / "walk_res.mp4"))
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(10.0)
    capture.release()
    frames = read_frames(out / "walk_res.mp4")
    assert len(frames) == 12 and frames[0].shape == (576, 768, 3)
    lines = [json.loads(line) for line in (out / "walk_res.jsonl").read_text().splitlines()]
    assert [line["frame_index"] for line in lines] == list(range(12))
    assert [line["timestamp_s"] for line in lines] == pytest.approx([i / 10 for i in range(12)], abs=1e-3)
    assert all(line["input_path"] == str(walk) for line in lines)
    assert sum(len(line["boxes"]) for line in lines) >= 24
    assert all(isinstance(box["track_id"], int) for line in lines for box in line["boxes"])


def test_real_list_with_a_truncated_video_keeps_what_was_done(real_yaml, walk, shared_dir, tmp_path, capsys):
    cut = cut_clip(shared_dir, tmp_path / "cut.avi", 200, 12)
    cut.write_bytes(cut.read_bytes()[: len(cut.read_bytes()) * 2 // 3])
    out = tmp_path / "out"
    code = cli.main(["--pipeline", str(real_yaml), "--input", str(cut), str(walk), "--save_path", str(out),
                     "--backend", "onnxruntime", "--no_img", "-q"])
    assert code == 1
    err = capsys.readouterr().err
    assert f"posepipe: error: {cut}: truncated or damaged: the video ended after " in err  # its own line
    assert last_line(err) == "posepipe: error: 1 of 2 inputs failed"
    assert sorted(p.name for p in out.iterdir()) == ["cut_res.jsonl", "walk_res.jsonl"]
    done = (out / "cut_res.jsonl").read_text().splitlines()
    assert 3 <= len(done) < 12 and json.loads(done[-1])["frame_index"] == len(done) - 1
    assert len((out / "walk_res.jsonl").read_text().splitlines()) == 12


def test_real_camera_that_cannot_open_is_one_line(real_yaml, capsys):
    assert cli.main(["--pipeline", str(real_yaml), "--input", "97", "--backend", "onnxruntime", "-q"]) == 1
    assert last_line(capsys.readouterr().err) == (
        "posepipe: error: camera 97: cannot open the camera: no such device, no permission, or it is in use"
    )


def test_real_run_opens_each_video_once_and_still_counts_its_frames(real_yaml, walk, shared_dir, tmp_path, capsys, monkeypatch):
    import posepipe.video

    opened = []
    real_init = posepipe.video.PyAVReader.__init__

    def counting_init(self, video):
        opened.append(video.name)
        real_init(self, video)

    monkeypatch.setattr(posepipe.video.PyAVReader, "__init__", counting_init)
    photo = shared_dir / "photos" / "hrnet_demo.jpg"
    code = cli.main(["--pipeline", str(real_yaml), "--input", str(walk), str(photo), "--stride", "4",
                     "--backend", "onnxruntime"])
    assert code == 0
    assert opened == [str(walk)]  # by predict only: the progress bar takes its count from that reader
    err = capsys.readouterr().err
    assert "4/4" in err  # 3 frames (12 at stride 4) and the photo
