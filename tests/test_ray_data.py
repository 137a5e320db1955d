"""Batch inference on Ray Data (posepipe.ray.batch) on a local Ray with the
real models: the files of the local CLI, byte for byte; a resumed run does
only what is missing; a killed actor costs nothing but time; `posepipe --ray`."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import ray
import yaml
from PIL import Image

import posepipe.ray
from conftest import REPO, kill_processes, local_ray, processes, real_models_config
from posepipe import cli
from posepipe.ray import batch

PHOTOS = ["000000014439.jpg", "000000087038.jpg", "000000570688.jpg", "hrnet_demo.jpg"]
ACTOR = "MapBatches(PipelineActor)"


@pytest.fixture(scope="module")
def cluster():
    local_ray()
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def config_path(shared_dir, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "real.yaml"
    path.write_text(yaml.safe_dump(real_models_config(shared_dir)))
    return path


@pytest.fixture(scope="module")
def inputs(shared_dir, tmp_path_factory) -> Path:
    """The photos, one of them again in a subfolder (a name clash: `-2`), a
    2-page TIFF (`_0`, `_1`), and a file that is no image."""
    folder = tmp_path_factory.mktemp("inputs")
    for name in PHOTOS:
        shutil.copy(shared_dir / "photos" / name, folder / name)
    (folder / "again").mkdir()
    shutil.copy(shared_dir / "photos" / "hrnet_demo.jpg", folder / "again" / "hrnet_demo.jpg")
    pages = [Image.open(shared_dir / "photos" / name).convert("RGB") for name in PHOTOS[2:]]
    pages[0].save(folder / "pages.tif", save_all=True, append_images=pages[1:])
    for page in pages:
        page.close()
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    return folder


@pytest.fixture(scope="module")
def local_files(config_path, inputs, tmp_path_factory) -> Path:
    """What the local CLI writes for `inputs`."""
    out = tmp_path_factory.mktemp("local")
    code = cli.main(["--pipeline", str(config_path), "--input", str(inputs), "--save_path", str(out), "-q"])
    assert code == 1  # broken.jpg
    return out


def _files(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _differences(ours: dict, expected: dict) -> list:
    """Names missing on either side or with other bytes (a short message, not a diff of megabytes)."""
    return sorted(set(ours) ^ set(expected)) + sorted(n for n in set(ours) & set(expected) if ours[n] != expected[n])


def test_ray_data_writes_the_local_clis_files(cluster, config_path, inputs, local_files, tmp_path):
    out = tmp_path / "ray"
    report = posepipe.ray.run_batch(str(config_path), str(inputs), out, progress=False)
    expected = _files(local_files)
    assert "hrnet_demo-2_res.json" in expected and "pages_1_res.json" in expected  # the naming rules are in play
    assert _differences(_files(out), expected) == []  # same names, same JSON bytes, same drawn images
    assert report.total == 8 and report.written == 7 and report.skipped == 0
    assert [(Path(name).name, "not a JPEG" in problem or "corrupt" in problem or "truncated" in problem)
            for name, problem in report.errors] == [("broken.jpg", True)]
    result = json.loads((out / "hrnet_demo_res.json").read_text())
    assert result["input_path"] == str(inputs / "again" / "hrnet_demo.jpg") and len(result["boxes"]) == 1  # sorted first


def test_a_second_run_does_only_what_is_missing(cluster, config_path, inputs, local_files, tmp_path):
    out = tmp_path / "ray"
    shutil.copytree(local_files, out)
    (out / "000000087038_res.json").unlink()  # a crash before its JSON
    (out / "pages_0_res.tif").unlink()  # ... or before its image
    (out / ".hrnet_demo_res.json.123.tmp").write_text("{")  # a crash mid-write leaves only this
    untouched = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name.startswith(("0000000146", "hrnet"))}
    report = posepipe.ray.run_batch(str(config_path), str(inputs), out, progress=False)
    assert report.skipped == 5 and report.written == 2 and len(report.errors) == 1
    files = _files(out)
    files.pop(".hrnet_demo_res.json.123.tmp")
    assert _differences(files, _files(local_files)) == []
    assert {name: (out / name).stat().st_mtime_ns for name in untouched} == untouched  # not written again
    nothing = posepipe.ray.run_batch(str(config_path), str(inputs), out, progress=False)
    assert nothing.skipped == 7 and nothing.written == 0 and len(nothing.errors) == 1  # the broken file is retried


def test_a_killed_actor_is_replaced_and_every_result_is_written_once(cluster, config_path, shared_dir, tmp_path, monkeypatch):
    folder = tmp_path / "many"
    folder.mkdir()
    for copy in range(3):
        for name in PHOTOS:
            shutil.copy(shared_dir / "photos" / name, folder / f"{copy}_{name}")
    writes = []
    real_write = batch._write
    monkeypatch.setattr(batch, "_write", lambda path, data: (writes.append(path.name), real_write(path, data)))
    out = tmp_path / "out"
    outcome = {}
    job = threading.Thread(
        target=lambda: outcome.update(report=posepipe.ray.run_batch(
            str(config_path), str(folder), out, images=False, progress=False,
            settings=posepipe.ray.RayBatchSettings(actors=2, images_per_call=1),
        ))
    )
    job.start()
    deadline = time.monotonic() + 180
    while not (out.is_dir() and any(out.iterdir())):  # the actors are running
        assert time.monotonic() < deadline and job.is_alive()
        time.sleep(0.05)
    killed = kill_processes(ACTOR)[:1] or pytest.fail("no actor process to kill")
    job.join(600)
    assert not job.is_alive()
    report = outcome["report"]
    assert report.written == 12 and report.errors == [] and report.total == 12
    assert sorted(writes) == sorted(f"{c}_{Path(n).stem}_res.json" for c in range(3) for n in PHOTOS)  # each once
    for copy in range(3):
        for name in PHOTOS:
            stem = Path(name).stem
            ours = json.loads((out / f"{copy}_{stem}_res.json").read_text())
            assert ours["input_path"] == str(folder / f"{copy}_{name}")
    assert killed and killed[0] not in processes(ACTOR)


def test_posepipe_ray_cli_and_predict_dataset(cluster, config_path, inputs, local_files, tmp_path):
    """`posepipe --ray --ray_address` (a process joining this Ray) writes the
    local CLI's files and exits 1 for the broken input, naming it; and
    predict_dataset on read_binary_files gives the same JSON."""
    out = tmp_path / "cli"
    env = {**os.environ, "PYTHONPATH": str(REPO / "python")}
    run = subprocess.run(
        [sys.executable, "-m", "posepipe", "--pipeline", str(config_path), "--input", str(inputs), "--save_path",
         str(out), "--ray", "--ray_address", cluster, "--actors", "1", "-q"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert run.returncode == 1, run.stderr[-3000:]
    assert "broken.jpg" in run.stderr and "1 of 8 inputs failed" in run.stderr
    assert _differences(_files(out), _files(local_files)) == []

    dataset = ray.data.read_binary_files([str(inputs / name) for name in PHOTOS], include_paths=True)
    rows = posepipe.ray.predict_dataset(
        dataset, str(config_path), images=True, settings=posepipe.ray.RayBatchSettings(actors=1)
    ).take_all()
    assert sorted(row["input_path"] for row in rows) == sorted(str(inputs / name) for name in PHOTOS)
    for row in rows:
        stem = Path(row["input_path"]).stem
        stem = "hrnet_demo-2" if stem == "hrnet_demo" else stem  # again/hrnet_demo.jpg came first in the CLI's run
        assert row["error"] == ""
        assert row["json"].encode() == (local_files / f"{stem}_res.json").read_bytes(), stem
        assert bytes(row["image"]) == (local_files / f"{stem}_res.jpg").read_bytes(), stem
