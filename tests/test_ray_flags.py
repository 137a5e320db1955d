"""The --ray flags of both commands, checked before anything starts, and what
`--ray` says when Ray is not installed. No Ray is started here."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from posepipe import cli
from posepipe.ray import RayBatchSettings, RayServeSettings
from posepipe.serving import cli as serving_cli


@pytest.mark.parametrize(
    "args, message",
    [
        (["--ray", "--replicas", "2", "--max_replicas", "4"], "not both"),
        (["--ray", "--min_replicas", "2"], "--min_replicas needs --max_replicas"),
        (["--ray", "--min_replicas", "5", "--max_replicas", "4"], "more than --max_replicas"),
        (["--ray", "--replicas", "0"], "replicas must be a positive integer"),
        (["--replicas", "2"], "--replicas needs --ray"),
        (["--ray_address", "auto"], "--ray_address needs --ray"),
        (["--ray", "--port", "0"], "--ray needs a --port number"),
    ],
)
def test_bad_serve_ray_flags_exit_2_before_anything_starts(args, message, capsys):
    with pytest.raises(SystemExit) as exit:
        serving_cli.main(["--pipeline", "human_keypoint_detection", *args])
    assert exit.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--ray"], "--ray needs --save_path"),
        (["--actors", "2", "--save_path", "out"], "--actors needs --ray"),
        (["--ray", "--save_path", "out", "--images_per_call", "0"], "images_per_call must be a positive integer"),
    ],
)
def test_bad_batch_ray_flags_exit_2(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["--input", "x.jpg", *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_settings_refuse_both_ways_of_scaling_and_give_rays_options():
    with pytest.raises(ValueError, match="not both"):
        RayServeSettings(replicas=2, min_replicas=1, max_replicas=3)
    assert RayServeSettings().scaling(4) == {"num_replicas": 1}
    assert RayServeSettings(max_replicas=3, target_ongoing_requests=5).scaling(4) == {
        "autoscaling_config": {"min_replicas": 1, "max_replicas": 3, "target_ongoing_requests": 5}
    }
    with pytest.raises(ValueError, match="actor_cpus"):
        RayBatchSettings(actor_cpus=0)


_WITHOUT_RAY = """
import sys
sys.modules["ray"] = None  # as if not installed
from posepipe.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize(
    "args",
    [
        ["serve", "--pipeline", "human_keypoint_detection", "--ray", "--port", "8080"],
        ["--pipeline", "human_keypoint_detection", "--input", "x.jpg", "--save_path", "out", "--ray"],
    ],
)
def test_without_ray_the_flag_says_how_to_install_it(args, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO / "python")}
    run = subprocess.run([sys.executable, "-c", _WITHOUT_RAY, *args], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=120)
    assert run.returncode == 1, run.stderr
    assert 'pip install "posepipe[ray]"' in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--det_frequency", "5"], "--det_frequency is for videos, which run without --ray"),
        (["--smooth"], "--smooth is for videos, which run without --ray"),
    ],
)
def test_video_flags_with_ray_exit_2(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["--input", "x.jpg", "--ray", "--save_path", "out", *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_video_with_ray_exits_2_naming_it(shared_dir, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    video = str(shared_dir / "videos" / "vtest.avi")
    photo = str(shared_dir / "photos" / "hrnet_demo.jpg")
    assert cli.main(["--input", photo, video, "--ray", "--save_path", "out"]) == 2
    err = capsys.readouterr().err
    assert f"{video}: a video runs frame by frame in one process: run it without --ray" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_actors_read_files_and_calibration_by_absolute_path(shared_dir, tmp_path, monkeypatch):
    """An actor in another working folder reads what the driver meant; the
    result's input_path keeps the text as given (as the local CLI writes it)."""
    from posepipe.io import Source, iter_sources, read_frame
    from posepipe.ray.batch import _fields
    from posepipe.ray.settings import threads_for

    monkeypatch.chdir(shared_dir)
    here = Path.cwd()
    [source] = iter_sources("photos/hrnet_demo.jpg")
    _, options = threads_for(1, {"calibration": "photos", "cpu_threads": 1})
    travelled = Source(**json.loads(json.dumps(_fields(source))))
    monkeypatch.chdir(tmp_path)
    frame = read_frame(travelled)
    assert frame.input_path == "photos/hrnet_demo.jpg" and frame.image.shape[2] == 3
    assert options["calibration"] == str(here / "photos")
    monkeypatch.chdir(here)
    _, many = threads_for(1, {"calibration": ["photos/a.jpg", Path("photos/b.jpg")]})
    assert many["calibration"] == [str(here / "photos/a.jpg"), str(here / "photos/b.jpg")]
