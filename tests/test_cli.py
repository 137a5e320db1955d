"""The `posepipe` command: flags, output files, one-line errors and exit codes.

Most tests run `main()` in-process on a fake pipeline (fast, and it can be made
to fail on purpose); the last ones run the real pipeline on the shared models."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import yaml

import posepipe
import posepipe.cli as cli
from posepipe.config import PipelineConfig
from posepipe.errors import DeviceError, ModelError
from posepipe.io import Frame, iter_frames
from posepipe.result import KeypointResult, SaveNames

from conftest import break_tiff_page, load_image


class FakePipeline:
    """Reads inputs with posepipe.io like the real one; finds one 'person' per image."""

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.thresholds = []

    def predict(self, input, det_threshold=None):
        self.thresholds.append(det_threshold)
        names = SaveNames()
        for item in iter_frames(input):
            if not isinstance(item, Frame):
                yield names.claim(KeypointResult.failed(item.input_path, str(item.error), item.page_index))
                continue
            h, w = item.image.shape[:2]
            rows = np.array([[0, 0.9, w * 0.25, h * 0.25, w * 0.75, h * 0.75]], np.float32)
            kpts = np.concatenate([np.full((1, 17, 2), [w / 2, h / 2], np.float32), np.full((1, 17, 1), 0.8, np.float32)], 2)
            yield names.claim(KeypointResult.from_arrays(item.input_path, item.image, rows, kpts, item.page_index))


@pytest.fixture
def fake(monkeypatch):
    """Replaces create_pipeline; `fake.calls` holds its keyword arguments, `fake.pipeline` the pipeline."""
    state = types.SimpleNamespace(calls=[], pipeline=None, error=None)

    def create(**kwargs):
        state.calls.append(kwargs)
        if state.error is not None:
            raise state.error
        state.pipeline = FakePipeline(**kwargs)
        return state.pipeline

    monkeypatch.setattr(cli, "create_pipeline", create)
    return state


@pytest.fixture
def photos(shared_dir):
    return shared_dir / "photos"


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines, "nothing on stderr"
    assert lines[-1].startswith("posepipe: error: ")
    assert "Traceback" not in err
    return lines[-1]


# --- with the fake pipeline -----------------------------------------------------------


def test_version_and_help(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"posepipe {posepipe.__version__}"
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for flag in ["--pipeline", "--input", "--det_threshold", "--save_path", "--device", "--use_hpip", "--get_pipeline_config"]:
        assert flag in out
    assert cli.main([]) == 2  # as PaddleX: no arguments shows the help
    assert "usage: posepipe" in capsys.readouterr().out


def test_one_image_is_printed_and_saved(fake, photos, tmp_path, capsys):
    photo = photos / "hrnet_demo.jpg"
    code = cli.main(["--pipeline", "human_keypoint_detection", "--input", str(photo), "--save_path", str(tmp_path / "out")])
    assert code == 0
    err = capsys.readouterr().err
    assert err.startswith("{'res': {'input_path': '" + str(photo) + "', 'boxes': [{'coordinate': [")
    assert "\x1b[" not in err and "img/s" not in err  # no colour off a terminal, no bar for one image
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["hrnet_demo_res.jpg", "hrnet_demo_res.json"]
    saved = json.loads((tmp_path / "out" / "hrnet_demo_res.json").read_text())
    assert saved["input_path"] == str(photo) and len(saved["boxes"]) == 1


def test_flags_reach_the_pipeline(fake, photos, capsys):
    args = [
        "--input", str(photos / "hrnet_demo.jpg"), "--det_threshold", "0.3", "--device", "cpu", "--use_hpip",
        "--det_model_dir", "/models/det", "--kpt_model_dir", "/models/kpt", "--flip", "--use_udp", "false",
        "--det_batch_size", "4", "--kpt_batch_size", "16", "--threads", "2", "--no_tune_malloc", "--quiet",
    ]
    assert cli.main(args) == 0
    [call] = fake.calls
    config = PipelineConfig.from_dict(call.pop("config"))
    assert call == {"device": "cpu", "use_hpip": True, "cpu_threads": 2, "tune_malloc": False}
    assert (config.detector.model_dir, config.detector.batch_size) == ("/models/det", 4)
    assert config.keypoints.batch_size == 16
    assert (config.keypoints.model_dir, config.keypoints.flip, config.keypoints.use_udp) == ("/models/kpt", True, False)
    assert fake.pipeline.thresholds == [0.3]
    assert capsys.readouterr().err == ""  # --quiet


def test_defaults_leave_the_config_alone(fake, photos, tmp_path, capsys):
    custom = PipelineConfig.default()
    custom.keypoints.model_dir = "/my/kpt"
    custom.detector.threshold = 0.25
    path = tmp_path / "my.yaml"
    path.write_text(custom.to_yaml())
    assert cli.main(["--pipeline", str(path), "--input", str(photos / "hrnet_demo.jpg"), "--det_threshold", "None", "-q"]) == 0
    [call] = fake.calls
    assert call == {"config": custom.to_dict(), "device": None, "use_hpip": None}  # not given: the YAML decides
    assert fake.pipeline.thresholds == [None]


@pytest.mark.parametrize("flag, expected", [([], None), (["--use_hpip"], True)])
def test_use_hpip_flag_left_out_leaves_the_yamls(fake, photos, tmp_path, flag, expected):
    """As PaddleX's CLI (`use_hpip=args.use_hpip or None`): without the flag,
    create_pipeline gets None and the YAML's use_hpip decides."""
    custom = PipelineConfig.default()
    custom.use_hpip = True
    path = tmp_path / "hpip.yaml"
    path.write_text(custom.to_yaml())
    assert yaml.safe_load(path.read_text())["use_hpip"] is True
    assert cli.main(["--pipeline", str(path), "--input", str(photos / "hrnet_demo.jpg"), "-q", *flag]) == 0
    [call] = fake.calls
    assert call["use_hpip"] is expected
    assert PipelineConfig.from_dict(call["config"]).use_hpip is True


def test_folder_with_a_bad_file_saves_the_good_ones_and_exits_1(fake, photos, tmp_path, capsys):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    for name in ["000000087038.jpg", "hrnet_demo.jpg"]:
        (folder / "sub" / name).write_bytes((photos / name).read_bytes())
    (folder / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    assert cli.main(["--input", str(folder), "--save_path", str(out)]) == 1
    err = capsys.readouterr().err
    assert one_error_line(err) == "posepipe: error: 1 of 3 inputs failed"
    failure = f"posepipe: error: {folder / 'broken.png'}: not an image posepipe can read (unknown format, or a corrupt header)"
    assert failure in err.splitlines()
    assert err.count("broken.png") == 1  # one line per failure, not also a printed result or a repeat
    assert "3/3" in err  # the progress bar
    assert sorted(p.name for p in out.iterdir()) == [
        "000000087038_res.jpg", "000000087038_res.json", "hrnet_demo_res.jpg", "hrnet_demo_res.json"
    ]


def test_several_inputs_and_no_img(fake, photos, tmp_path, capsys):
    args = ["--input", str(photos / "hrnet_demo.jpg"), str(photos / "000000087038.jpg"), "--save_path", str(tmp_path), "--no_img", "-q"]
    assert cli.main(args) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["000000087038_res.json", "hrnet_demo_res.json"]
    assert capsys.readouterr().err == ""


def test_single_missing_input_is_one_line(fake, tmp_path, capsys):
    missing = tmp_path / "nope.jpg"
    assert cli.main(["--input", str(missing), "-q"]) == 1
    assert capsys.readouterr().err == f"posepipe: error: {missing}: no such file or directory\n"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--input", "x.jpg", "--det_threshold", "abc"], "argument --det_threshold: not a number: 'abc'"),
        (["--input", "x.jpg", "--det_threshold", "1.5"], "--det_threshold must be a number between 0 and 1"),
        (["--input", "x.jpg", "--save_path", "out.json"], "--save_path 'out.json' looks like a file name"),
        (["--input", "x.jpg", "--threads", "0"], "cpu_threads must be a positive integer or None, got 0"),
        (["--input", "x.jpg", "--kpt_batch_size", "x"], "argument --kpt_batch_size: expected an integer, got 'x'"),
        (["--input", "x.jpg", "--flip", "maybe"], "argument --flip: expected true or false, got 'maybe'"),
        (["--input", "x.jpg", "--bogus"], "unrecognized arguments: --bogus"),
        (["--pipeline", "human_keypoint_detection"], "--input is required"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(fake, capsys, args, message):
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and one_error_line(err).startswith(f"posepipe: error: {message}")
    assert fake.calls == []


def test_unknown_pipeline_exits_2(fake, capsys):
    """A bad --pipeline is a bad argument (README: exit code 2)."""
    assert cli.main(["--pipeline", "OCR", "--input", "x.jpg"]) == 2
    assert one_error_line(capsys.readouterr().err) == (
        "posepipe: error: unknown pipeline 'OCR': give 'human_keypoint_detection' or the path of a pipeline YAML file"
    )
    assert cli.main(["--pipeline", "missing.yaml", "--input", "x.jpg"]) == 2
    assert "missing.yaml: pipeline config file not found" in one_error_line(capsys.readouterr().err)
    assert fake.calls == []


@pytest.mark.parametrize(
    "error, code", [(ModelError("/no/such/model: not a model directory"), 1), (DeviceError("unknown device 'tpu:0'"), 2)]
)
def test_pipeline_errors_exit_with_one_line(fake, capsys, error, code):
    fake.error = error
    assert cli.main(["--input", "x.jpg"]) == code
    assert capsys.readouterr().err == f"posepipe: error: {error}\n"


@pytest.mark.parametrize("save_path", ["out.json", "result.jpg", "existing_file"])
def test_save_path_must_be_a_folder(fake, photos, tmp_path, capsys, save_path):
    (tmp_path / "existing_file").write_text("")
    before = sorted(tmp_path.iterdir())
    target = tmp_path / save_path
    assert cli.main(["--input", str(photos / "hrnet_demo.jpg"), "--save_path", str(target)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"posepipe: error: --save_path {str(target)!r} ")
    assert "give a folder: results are saved in it as {name}_res.json and {name}_res.<ext>" in line
    assert sorted(tmp_path.iterdir()) == before and fake.calls == []  # nothing created, nothing loaded


@pytest.mark.parametrize("quiet", [True, False])
def test_library_warnings_are_one_line_and_quiet_under_q(fake, photos, capsys, monkeypatch, quiet):
    import warnings

    predict = FakePipeline.predict

    def warning_predict(self, input, det_threshold=None):
        warnings.warn("Corrupt EXIF data.  Expecting to read 12 bytes but only got 10.", UserWarning)
        yield from predict(self, input, det_threshold)

    monkeypatch.setattr(FakePipeline, "predict", warning_predict)
    with warnings.catch_warnings():
        warnings.simplefilter("default")  # this suite turns warnings into errors
        assert cli.main(["--input", str(photos / "hrnet_demo.jpg")] + (["-q"] if quiet else [])) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "EXIF" in line]
    if quiet:
        assert lines == []
    else:
        assert len(lines) == 1 and lines[0].startswith("posepipe: warning: ") and lines[0].endswith(
            "UserWarning: Corrupt EXIF data.  Expecting to read 12 bytes but only got 10."
        )


def test_tiff_with_a_malformed_second_page_does_not_stop_a_folder_run(fake, photos, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jpg").write_bytes((photos / "hrnet_demo.jpg").read_bytes())
    image = load_image(photos / "hrnet_demo.jpg")
    image.save(folder / "scan.tif", save_all=True, append_images=[image, image])
    break_tiff_page(folder / "scan.tif", 1)
    out = tmp_path / "out"
    assert cli.main(["--input", str(folder), "--save_path", str(out), "-q", "--no_img"]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and lines[1] == "posepipe: error: 1 of 4 inputs failed"
    assert lines[0].startswith(f"posepipe: error: {folder / 'scan.tif'} (page 1): cannot decode the TIFF image: ")
    assert sorted(p.name for p in out.iterdir()) == ["a_res.json", "scan_0_res.json", "scan_2_res.json"]


def test_empty_input_is_named(fake, capsys):
    assert cli.main(["--input", "", "-q"]) == 1
    assert capsys.readouterr().err == 'posepipe: error: "": empty input: give an image file, a folder or an http(s) URL\n'


def test_clashing_names_get_a_suffix_and_a_warning(fake, photos, tmp_path, capsys):
    folder = tmp_path / "in"
    for rel in ["a/x.jpg", "b/x.jpg", "Photo.jpg", "photo.png"]:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes((photos / "hrnet_demo.jpg").read_bytes())
    out = tmp_path / "out"
    assert cli.main(["--input", str(folder), "--save_path", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "Photo_res.jpg", "Photo_res.json", "photo-2_res.json", "photo-2_res.png",
        "x-2_res.jpg", "x-2_res.json", "x_res.jpg", "x_res.json",
    ]
    assert json.loads((out / "x-2_res.json").read_text())["input_path"] == str(folder / "b" / "x.jpg")
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("posepipe: warning:")]
    assert warnings == [
        f"posepipe: warning: {folder / 'b' / 'x.jpg'}: saved as x-2_res.* since x_res.* is {folder / 'a' / 'x.jpg'}'s in this run",
        f"posepipe: warning: {folder / 'photo.png'}: saved as photo-2_res.* since Photo_res.* is {folder / 'Photo.jpg'}'s in this run",
    ]


def test_unwritable_save_path(fake, photos, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert cli.main(["--input", str(photos / "hrnet_demo.jpg"), "--save_path", str(blocker / "out")]) == 1
    assert one_error_line(capsys.readouterr().err).startswith(f"posepipe: error: {blocker / 'out'}: ")


def test_get_pipeline_config(tmp_path, capsys):
    assert cli.main(["--get_pipeline_config", "human_keypoint_detection"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed == PipelineConfig.default().to_dict()

    assert cli.main(["--get_pipeline_config", "human_keypoint_detection", "--save_path", str(tmp_path / "cfg")]) == 0
    written = tmp_path / "cfg" / "human_keypoint_detection.yaml"
    assert yaml.safe_load(written.read_text()) == printed
    assert f"saved to: {written}" in capsys.readouterr().err

    assert cli.main(["--get_pipeline_config", "human_keypoint_detection", "--save_path", str(tmp_path / "mine.yml")]) == 0
    assert (tmp_path / "mine.yml").is_file()

    # Never overwritten (PaddleX asks; a script cannot answer).
    assert cli.main(["--get_pipeline_config", "human_keypoint_detection", "--save_path", str(tmp_path / "cfg")]) == 2
    assert "already exists" in one_error_line(capsys.readouterr().err)

    assert cli.main(["--get_pipeline_config", "OCR"]) == 1
    assert "unknown pipeline 'OCR'" in one_error_line(capsys.readouterr().err)


def test_serve_is_dispatched(monkeypatch):
    calls = []
    module = types.ModuleType("posepipe.serving.cli")
    module.main = lambda argv: calls.append(argv) or 0
    monkeypatch.setitem(sys.modules, "posepipe.serving.cli", module)
    assert cli.main(["serve", "--port", "9000"]) == 0
    assert cli.main(["--serve", "--pipeline", "x.yaml"]) == 0  # PaddleX's spelling
    assert calls == [["--port", "9000"], ["--pipeline", "x.yaml"]]


def test_serve_missing_is_one_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "posepipe.serving.cli", None)  # import fails as if absent
    assert cli.main(["serve"]) == 1
    assert "posepipe.serving.cli is missing" in one_error_line(capsys.readouterr().err)


# --- with the real pipeline on the shared models ------------------------------------


@pytest.fixture
def real_yaml(shared_dir, tmp_path):
    config = PipelineConfig.default()
    config.detector.model_dir = str(shared_dir / "models" / "real" / "person_detector_nanodet")
    config.keypoints.model_name = "PP-TinyPose_256x192"
    config.keypoints.model_dir = str(shared_dir / "models" / "real" / "keypoint_movenet_thunder")
    path = tmp_path / "real.yaml"
    path.write_text(config.to_yaml())
    return path


def test_real_run_as_a_subprocess(real_yaml, photos, shared_dir, tmp_path):
    photo = photos / "000000087038.jpg"
    out = tmp_path / "out"
    proc = run_cli("--pipeline", str(real_yaml), "--input", str(photo), "--save_path", str(out), "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.startswith("{'res': {'input_path': '" + str(photo)), proc.stderr  # no ccache or INFO lines first
    assert "ccache" not in proc.stderr and "INFO" not in proc.stderr
    saved = json.loads((out / "000000087038_res.json").read_text())
    reference = json.loads((shared_dir / "reference" / "paddlex_real_models.json").read_text())[photo.name]
    assert len(saved["boxes"]) == len(reference)
    for ours, theirs in zip(sorted(saved["boxes"], key=lambda b: b["coordinate"]), sorted(reference, key=lambda b: b["coordinate"])):
        np.testing.assert_allclose(ours["coordinate"], theirs["coordinate"], atol=2e-3)
    assert (out / "000000087038_res.jpg").is_file()


def test_real_errors_are_one_line(real_yaml, photos, tmp_path, capsys):
    missing = tmp_path / "no_model"
    assert cli.main(["--pipeline", str(real_yaml), "--input", str(photos), "--det_model_dir", str(missing)]) == 1
    assert str(missing) in one_error_line(capsys.readouterr().err)
    for device in ("tpu:0", "gpu:x"):
        assert cli.main(["--pipeline", str(real_yaml), "--input", str(photos), "--device", device]) == 2
        assert device in one_error_line(capsys.readouterr().err)


def run_cli(*args, timeout=300):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(posepipe.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "posepipe", *args], capture_output=True, text=True, env=env, timeout=timeout)


def test_quiet_prints_only_errors_each_once(real_yaml, photos, tmp_path):
    """-q: no INFO / WARNING lines (Paddle's included), one line per failed input."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jpg").write_bytes((photos / "hrnet_demo.jpg").read_bytes())
    (folder / "b.png").write_bytes(b"junk")
    proc = run_cli("--pipeline", str(real_yaml), "--input", str(folder), "--device", "cpu", "-q")
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"posepipe: error: {folder / 'b.png'}: not an image posepipe can read (unknown format, or a corrupt header)",
        "posepipe: error: 1 of 2 inputs failed",
    ]
    assert proc.stdout == ""


def test_real_failures_are_printed_once(real_yaml, photos, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jpg").write_bytes((photos / "hrnet_demo.jpg").read_bytes())
    (folder / "b.png").write_bytes(b"junk")
    assert cli.main(["--pipeline", str(real_yaml), "--input", str(folder), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert err.count("b.png") == 1, err
    assert "{'res': {'input_path': '" + str(folder / "a.jpg") in err


def test_model_dirs_without_a_yaml_do_not_warn_about_names(shared_dir, photos, capsys):
    """--det_model_dir/--kpt_model_dir with the built-in pipeline: the model
    names are the directories' own, so nothing is said about names the user never gave."""
    real = shared_dir / "models" / "real"
    args = ["--det_model_dir", str(real / "person_detector_nanodet"), "--kpt_model_dir", str(real / "keypoint_movenet_thunder")]
    assert cli.main([*args, "--input", str(photos / "hrnet_demo.jpg"), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "warning" not in err.lower() and "model_name" not in err and "PP-TinyPose_128x96" not in err


def test_multi_page_tiff_saves_a_result_per_page(real_yaml, photos, tmp_path, capsys):
    from PIL import Image

    image = load_image(photos / "hrnet_demo.jpg")
    tiff = tmp_path / "in" / "scan.tif"
    tiff.parent.mkdir()
    image.save(tiff, save_all=True, append_images=[image.transpose(Image.Transpose.FLIP_LEFT_RIGHT), image])
    out = tmp_path / "out"
    assert cli.main(["--pipeline", str(real_yaml), "--input", str(tiff.parent), "--save_path", str(out), "--device", "cpu", "-q"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [f"scan_{i}_res.{ext}" for i in range(3) for ext in ("json", "tif")]
    saved = [json.loads((out / f"scan_{i}_res.json").read_text()) for i in range(3)]
    assert [(s["input_path"], s["page_index"]) for s in saved] == [(str(tiff), i) for i in range(3)]
    assert saved[0]["boxes"] == saved[2]["boxes"] and len(saved[1]["boxes"]) == 1


def test_real_folder_with_a_bad_file(real_yaml, photos, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jpg").write_bytes((photos / "hrnet_demo.jpg").read_bytes())
    (folder / "b.jpg").write_bytes((photos / "hrnet_demo.jpg").read_bytes()[:5000])  # truncated
    out = tmp_path / "out"
    assert cli.main(["--pipeline", str(real_yaml), "--input", str(folder), "--save_path", str(out), "--device", "cpu", "-q"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"posepipe: error: {folder / 'b.jpg'}: truncated or corrupt JPEG (the image data ends early)",
        "posepipe: error: 1 of 2 inputs failed",
    ]
    assert sorted(p.name for p in out.iterdir()) == ["a_res.jpg", "a_res.json"]


@pytest.mark.parametrize("value", ["-1", "1.5", "nan", "inf"])
def test_threshold_rule_is_the_apis(fake, tmp_path, capsys, value):
    """The CLI refuses what create_pipeline and predict refuse, with the same sentence."""
    assert cli.main(["--input", "x.jpg", "--det_threshold", value]) == 2
    assert one_error_line(capsys.readouterr().err) == (
        f"posepipe: error: --det_threshold must be a number between 0 and 1 (or None: the model's own), got {float(value)!r}"
    )
    config = PipelineConfig.default().to_dict()
    config["SubModules"]["ObjectDetection"]["threshold"] = float(value)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    assert cli.main(["--pipeline", str(path), "--input", "x.jpg"]) == 2
    assert one_error_line(capsys.readouterr().err) == (
        f"posepipe: error: {path}: SubModules.ObjectDetection: threshold must be a number between 0 and 1 "
        f"(or None: the model's own), got {float(value)!r}"
    )
    assert fake.calls == []


def test_precision_flags_reach_the_pipeline(fake, photos):
    args = ["--input", str(photos / "hrnet_demo.jpg"), "--precision", "int8", "--calibration", str(photos), "-q"]
    assert cli.main(args) == 0
    [call] = fake.calls
    assert (call["precision"], call["calibration"]) == ("int8", str(photos))


def test_int8_without_calibration_is_refused_before_loading(fake, photos, capsys):
    assert cli.main(["--input", str(photos / "hrnet_demo.jpg"), "--precision", "int8"]) == 2
    assert "precision='int8' needs calibration images" in capsys.readouterr().err
    assert fake.calls == []
