"""precision= and calibration= (precision.py, runtime/accuracy.py,
runtime/quantize.py) on the real models: bf16 and int8 pass the accuracy
gate on real photos of people (../shared/photos and the COCO images of
../shared/eval); a broken lower precision, or one quantized on damaged
calibration data, is refused and fp32 runs instead, with a log line; the
refusals without calibration images; the cached decision.

Speed decides too (a lower precision must be faster than fp32), but timings
on a shared test machine are noise, so the tests that check the accuracy
decision give the candidates fixed model times; one test checks the speed
rule itself."""
from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest

import posepipe
from posepipe import precision as precision_module
from posepipe.errors import ConfigError
from posepipe.options import PipelineOptions
from posepipe.runtime import decisions, quantize
from posepipe.runtime.accuracy import Persons, compare_persons
from posepipe.runtime.cpu import cpu_info
from posepipe.runtime.openvino import OpenVinoBackend

THREADS = 2
CPU = cpu_info()
HAS_BF16, HAS_INT8 = CPU.has_bf16_units, CPU.has_int8_units


@pytest.fixture
def fixed_model_times(monkeypatch):
    """fp32 100 ms, every lower precision 50 ms: the decision is the accuracy gate's alone."""

    def fake_time(self, role, trials, other, det_feeds, crops):
        for trial in trials:
            trial.ms = 100.0 if trial.precision == "fp32" else 50.0

    monkeypatch.setattr(precision_module.PrecisionChooser, "_time", fake_time)


@pytest.fixture
def fresh_home(posepipe_home, monkeypatch):
    """No precision decision cached by another test is read (measured
    threads, batch sizes and quantized models still are: they do not depend
    on what a test breaks)."""
    real_load = decisions.load
    monkeypatch.setattr(decisions, "load", lambda path, key, version: None if path.parent.name == "precision" else real_load(path, key, version))
    return posepipe_home


@pytest.fixture(scope="module")
def calibration_sets(shared_dir):
    return {"photos": shared_dir / "photos", "coco": shared_dir / "eval" / "coco_mini" / "images"}


def _pipeline(real_config, **options):
    return posepipe.create_pipeline(config=real_config, device="cpu", cpu_threads=THREADS, **options)


def _persons(pipeline, folder):
    out = []
    for res in pipeline.predict(str(folder)):
        boxes = np.array([p["coordinate"] for p in res["boxes"]]).reshape(-1, 4)
        kpts = np.array([p["keypoints"] for p in res["boxes"]]).reshape(-1, 17, 3)
        out.append(Persons(boxes, kpts, np.array([p["det_score"] for p in res["boxes"]])))
    return out


@pytest.fixture(scope="module")
def fp32_pipeline(real_config, posepipe_home):
    return _pipeline(real_config)


def _candidate(meta, role, precision):
    return next(c for c in meta["candidates"][role] if c["precision"] == precision)


def _checked_pipeline(real_config, caplog, precision, folder):
    """The pipeline at `precision`, checked on `folder`; None where this CPU
    lacks the units (after checking that it said so and runs fp32)."""
    with caplog.at_level(logging.INFO, logger="posepipe"):
        pipeline = _pipeline(real_config, precision=precision, calibration=str(folder))
    meta = pipeline.metadata["precision"]
    if HAS_BF16 if precision == "bf16" else HAS_INT8:
        return pipeline
    assert (meta["detector"], meta["keypoints"]) == ("fp32", "fp32")
    units = "AMX-BF16 or AVX512-BF16" if precision == "bf16" else "VNNI or AMX-INT8"
    assert f"{precision} would not pay here ({precision} needs {units}" in caplog.text
    return None


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_lower_precisions_pass_the_gate_on_real_photos(
    precision, calibration_sets, real_config, posepipe_home, fp32_pipeline, fixed_model_times, caplog
):
    """bf16 passes for both models on the COCO images, int8 for the keypoint
    model; a model runs the lower precision exactly when its check passed
    (the NanoDet detector's int8 scores drift: it stays fp32, and says why)."""
    folder = calibration_sets["coco"]
    pipeline = _checked_pipeline(real_config, caplog, precision, folder)
    if pipeline is None:
        return
    meta = pipeline.metadata["precision"]
    assert meta["decision"] == "measured" and meta["requested"] == precision
    for role in ("detector", "keypoints"):
        report = _candidate(meta, role, precision)["accuracy"]
        if precision == "bf16" or role == "keypoints":
            assert report["passed"], report
            assert report["lost"] == report["added"] == 0 and report["oks_close_share"] >= 0.9
        assert (meta[role] == precision) is report["passed"]
        if report["passed"]:
            assert pipeline.metadata[role]["backend"] == "openvino" and pipeline.metadata[role]["precision"] == precision
            # int8: the hint is for the ops left unquantized, bf16 where the CPU has the units.
            assert pipeline.metadata[role]["inference_precision_hint"] == ("bf16" if HAS_BF16 else "f32")
        else:
            assert f"{role}: not running {precision} (" in caplog.text
    if precision == "int8":
        assert "/int8/" in pipeline.metadata["keypoints"]["model_file"]
    assert f"keypoints at {precision} against fp32 on the calibration images passes: " in caplog.text
    # The pipeline that runs, checked again by an independent run on the same images.
    report = compare_persons(_persons(fp32_pipeline, folder), _persons(pipeline, folder))
    assert report.passed, report.line()


@pytest.mark.skipif(not HAS_INT8, reason="int8 needs VNNI or AMX-INT8: this CPU refuses it before quantizing")
def test_int8_quantized_on_damaged_calibration_is_refused(calibration_sets, real_config, fresh_home, fixed_model_times, monkeypatch, caplog):
    """Calibration statistics from blank inputs give the int8 keypoint model
    activation ranges that clip real crops: the gate must catch it, and the
    keypoint model stays fp32."""
    real_int8_model = quantize.int8_model

    def damaged(spec, samples):
        if spec.keypoint is not None:
            samples = [{k: np.zeros_like(v) for k, v in s.items()} for s in samples]
        return real_int8_model(spec, samples)

    monkeypatch.setattr(quantize, "int8_model", damaged)
    with caplog.at_level(logging.INFO, logger="posepipe"):
        pipeline = _pipeline(real_config, precision="int8", calibration=str(calibration_sets["coco"]))
    meta = pipeline.metadata["precision"]
    report = _candidate(meta, "keypoints", "int8")["accuracy"]
    assert not report["passed"] and report["oks_close_share"] < 0.9, report
    assert meta["keypoints"] == "fp32" and pipeline.metadata["keypoints"]["backend"] == "paddle"
    assert "keypoints at int8 against fp32 on the calibration images FAILS the accuracy gate" in caplog.text
    assert "keypoints: not running int8 (" in caplog.text


@pytest.mark.skipif(not HAS_BF16, reason="bf16 needs AMX-BF16 or AVX512-BF16: this CPU refuses it before running it")
def test_a_broken_bf16_model_is_refused(calibration_sets, real_config, fresh_home, fixed_model_times, monkeypatch, caplog):
    """A bf16 keypoint model whose heatmaps peak two cells off: refused; the
    detector, untouched, still runs bf16."""
    real_run = OpenVinoBackend.run

    def broken_run(self, inputs):
        outputs = real_run(self, inputs)
        if self.precision == "bf16" and self.spec.keypoint is not None:
            outputs[0] = np.roll(outputs[0], 2, axis=-1)
        return outputs

    monkeypatch.setattr(OpenVinoBackend, "run", broken_run)
    with caplog.at_level(logging.INFO, logger="posepipe"):
        pipeline = _pipeline(real_config, precision="bf16", calibration=str(calibration_sets["photos"]))
    meta = pipeline.metadata["precision"]
    assert not _candidate(meta, "keypoints", "bf16")["accuracy"]["passed"]
    assert (meta["detector"], meta["keypoints"]) == ("bf16", "fp32")
    assert "keypoints: not running bf16 (" in caplog.text


@pytest.mark.skipif(not HAS_BF16, reason="needs a precision this CPU has units for")
def test_a_lower_precision_that_does_not_pay_is_not_run(calibration_sets, real_config, fresh_home, monkeypatch, caplog):
    def slow_bf16(self, role, trials, other, det_feeds, crops):
        for trial in trials:
            trial.ms = 100.0 if trial.precision == "fp32" else 99.0  # accurate, < MIN_SPEEDUP faster

    monkeypatch.setattr(precision_module.PrecisionChooser, "_time", slow_bf16)
    with caplog.at_level(logging.INFO, logger="posepipe"):
        pipeline = _pipeline(real_config, precision="bf16", calibration=str(calibration_sets["photos"]))
    meta = pipeline.metadata["precision"]
    assert (meta["detector"], meta["keypoints"]) == ("fp32", "fp32")
    assert "detector: not running bf16 (accurate, but 99.0 ms of model time on the calibration inputs against fp32's 100.0 ms)" in caplog.text


@pytest.mark.skipif(not (HAS_BF16 and HAS_INT8), reason="auto chooses among the precisions this CPU has units for")
def test_auto_on_real_photos_picks_the_fastest_passing_precision_and_caches_it(
    calibration_sets, real_config, posepipe_home, fp32_pipeline, monkeypatch
):
    """bf16 and int8 keypoints, and bf16 detection, pass the gate on the
    photos; auto runs, per model, the fastest that passed (here by fixed model
    times), and a second start reads the decision."""
    def times(self, role, trials, other, det_feeds, crops):
        for trial in trials:
            trial.ms = {"fp32": 100.0, "bf16": 60.0, "int8": 40.0}[trial.precision]

    monkeypatch.setattr(precision_module.PrecisionChooser, "_time", times)
    folder = calibration_sets["photos"]
    pipeline = _pipeline(real_config, precision="auto", calibration=str(folder))
    first = pipeline.metadata["precision"]
    assert first["decision"] == "measured"
    for role in ("detector", "keypoints"):
        tried = {c["precision"]: c for c in first["candidates"][role]}
        assert set(tried) == {"fp32", "bf16", "int8"}
        passing = [p for p, c in tried.items() if p == "fp32" or c["accuracy"]["passed"]]
        assert first[role] == min(passing, key=lambda p: tried[p]["model_ms"])
    assert _candidate(first, "detector", "bf16")["accuracy"]["passed"]
    assert _candidate(first, "keypoints", "bf16")["accuracy"]["passed"]
    assert _candidate(first, "keypoints", "int8")["accuracy"]["passed"]
    report = compare_persons(_persons(fp32_pipeline, folder), _persons(pipeline, folder))
    assert report.passed, report.line()
    again = _pipeline(real_config, precision="auto", calibration=str(folder)).metadata["precision"]
    assert again["decision"] == "cache" and again["cache_file"] == first["cache_file"]
    assert (again["detector"], again["keypoints"]) == (first["detector"], first["keypoints"])


def test_int8_and_auto_refuse_without_calibration_images(real_config):
    for precision in ("int8", "auto"):
        with pytest.raises(ConfigError, match=rf"precision='{precision}' needs calibration images \(calibration="):
            PipelineOptions(precision=precision)
        with pytest.raises(ConfigError, match="needs calibration images"):
            posepipe.create_pipeline(config=real_config, precision=precision)


def test_bad_precision_and_calibration_values_are_refused():
    with pytest.raises(ConfigError, match="precision must be one of fp32, fp16, bf16, int8, auto"):
        PipelineOptions(precision="int4")
    with pytest.raises(ConfigError, match="calibration must be a folder, an image file or a non-empty list"):
        PipelineOptions(precision="bf16", calibration=[])


def test_calibration_problems_are_named(real_config, posepipe_home, tmp_path):
    with pytest.raises(ConfigError, match=r"calibration: .*nowhere.*no such file or directory"):
        _pipeline(real_config, precision="auto", calibration=str(tmp_path / "nowhere"))
    if not (HAS_BF16 or HAS_INT8):
        return  # this CPU refuses the lower precisions before reading the images
    blank = tmp_path / "blank"
    blank.mkdir()
    cv2.imwrite(str(blank / "grey.png"), np.full((240, 320, 3), 128, np.uint8))
    with pytest.raises(ConfigError, match="the fp32 pipeline finds no person on these images"):
        _pipeline(real_config, precision="auto", calibration=str(blank))


@pytest.mark.skipif(not HAS_BF16, reason="bf16 needs AMX-BF16 or AVX512-BF16")
def test_explicit_bf16_without_calibration_runs_with_a_warning(real_config, posepipe_home, caplog):
    with caplog.at_level(logging.WARNING, logger="posepipe"):
        pipeline = _pipeline(real_config, precision="bf16")
    meta = pipeline.metadata["precision"]
    assert (meta["detector"], meta["keypoints"], meta["decision"]) == ("bf16", "bf16", "unchecked")
    assert "running bf16 without an accuracy check (no calibration images given" in caplog.text


def test_a_precision_without_units_falls_back_with_a_log_line(real_config, posepipe_home, calibration_sets, caplog):
    """fp16 is for GPUs: on a CPU posepipe says so and runs fp32."""
    with caplog.at_level(logging.WARNING, logger="posepipe"):
        pipeline = _pipeline(real_config, precision="fp16", calibration=str(calibration_sets["photos"]))
    meta = pipeline.metadata["precision"]
    assert (meta["detector"], meta["keypoints"]) == ("fp32", "fp32")
    assert "fp16 would not pay here (posepipe runs fp16 on gpu, not on cpu); running fp32" in caplog.text


def test_a_cpu_without_bf16_units_runs_fp32(real_config, posepipe_home, monkeypatch, caplog):
    monkeypatch.setattr(OpenVinoBackend, "precisions", classmethod(lambda cls, device: ("fp32",)))
    with caplog.at_level(logging.WARNING, logger="posepipe"):
        pipeline = _pipeline(real_config, precision="bf16")
    meta = pipeline.metadata["precision"]
    assert (meta["detector"], meta["keypoints"]) == ("fp32", "fp32")
    assert "bf16 would not pay here (bf16 needs AMX-BF16 or AVX512-BF16; this CPU is" in caplog.text


def test_default_precision_is_todays_fp32(fp32_pipeline):
    meta = fp32_pipeline.metadata["precision"]
    assert (meta["detector"], meta["keypoints"], meta["requested"]) == ("fp32", "fp32", None)
    assert fp32_pipeline.metadata["detector"]["backend"] == "paddle"


def test_quantized_models_live_in_posepipe_home(posepipe_home, shared_dir, tmp_path, monkeypatch):
    """int8 models go to $POSEPIPE_HOME/int8 as whole IR pairs, keyed by model and calibration inputs."""
    from posepipe.models.spec import load_model_spec

    home = tmp_path / "home"
    monkeypatch.setenv("POSEPIPE_HOME", str(home))
    spec = load_model_spec(shared_dir / "models" / "real" / "keypoint_movenet_thunder")
    rng = np.random.default_rng(0)
    samples = [{"image": rng.uniform(-1, 1, (1, 3, 256, 256)).astype(np.float32)} for _ in range(2)]
    path = quantize.int8_model(spec, samples)
    assert path.parent == home / "int8" and path.with_suffix(".bin").is_file()
    assert sorted(p.name for p in path.parent.iterdir()) == sorted([path.name, path.with_suffix(".bin").name])
    stamp = path.stat().st_mtime_ns
    assert quantize.int8_model(spec, samples) == path and path.stat().st_mtime_ns == stamp  # reused, not quantized again
    # Other calibration inputs, another model.
    assert quantize.calibration_digest(samples[:1]) != quantize.calibration_digest(samples)


@pytest.mark.parametrize("kind", ["gpu", "cpu"])
def test_a_cached_decision_rebuilds_the_backend_of_its_device(monkeypatch, tmp_path, kind):
    """On GPUs a cached fp16 choice is use_hpip's fp16 TensorRT candidates (as
    a fresh decision builds it), not OpenVINO; on CPUs it is OpenVINO. The
    builders are faked: no GPU is needed to check which one is asked."""
    import types

    from posepipe.runtime.base import RuntimeOptions
    from posepipe.runtime.candidates import CANDIDATES
    from posepipe.runtime.device import Device

    built = []
    monkeypatch.setattr(
        precision_module, "plan_backend",
        lambda spec, runtime, *a, candidates=None, **kw: built.append(("hpip", spec, candidates)) or f"trt:{spec}",
    )
    monkeypatch.setattr(
        precision_module.PrecisionChooser, "_openvino",
        lambda self, role, precision, model=None: built.append(("openvino", role, precision)) or f"openvino:{role}",
    )
    device = Device(kind, 0) if kind == "gpu" else Device("cpu")
    chooser = precision_module.PrecisionChooser(
        ("det-spec", "kpt-spec"), RuntimeOptions(device=device, cpu_threads=1), None, None, None, tune_threads=False
    )
    fp32 = {role: types.SimpleNamespace(backend=types.SimpleNamespace(precision="fp32")) for role in precision_module.ROLES}
    lower = "fp16" if kind == "gpu" else "bf16"
    saved = {"chosen": {"detector": lower, "keypoints": "fp32"}, "models": {"detector": "", "keypoints": ""}}
    choice = chooser._from_cache(saved, fp32)
    assert choice is not None and choice.keypoints is fp32["keypoints"]
    if kind == "gpu":
        fp16 = tuple(c for c in CANDIDATES["gpu"] if c.precision == "fp16")
        assert fp16 and built == [("hpip", "det-spec", fp16)] and choice.detector == "trt:det-spec"
    else:
        assert built == [("openvino", "detector", "bf16")] and choice.detector == "openvino:detector"
