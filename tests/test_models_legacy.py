"""Every export vintage runs: the real models re-exported by Paddle 2.6
(../shared/models/legacy: `.pdmodel` programs, PaddleX naming and
PaddleDetection 2.x's layout) give what their Paddle 3 PIR twins in
../shared/models/real give, through `model_dir` like any fine-tuned model,
and convert to ONNX for use_hpip."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest

import posepipe
from posepipe.batching import run_split
from posepipe.models.spec import load_model_spec
from posepipe.runtime import RuntimeOptions, create_backend
from posepipe.runtime.onnxruntime import OrtBackend
from posepipe.runtime.paddle import PaddleBackend
from posepipe.runtime.parity import FP32, compare
from posepipe.runtime.timing import calibration_feeds
from test_pipeline_real import PHOTOS, match

import onnxruntime  # noqa: E402,F401  (the test extra installs it)

THREADS = 2
LEGACY_DIRS = ["person_detector_nanodet", "keypoint_movenet_thunder", "keypoint_movenet_thunder_ppdet"]


def _with_models(config: dict, shared_dir, det: str = None, kpt: str = None) -> dict:
    config = copy.deepcopy(config)
    if det:
        config["SubModules"]["ObjectDetection"]["model_dir"] = str(shared_dir / "models" / det)
    if kpt:
        config["SubModules"]["KeypointDetection"]["model_dir"] = str(shared_dir / "models" / kpt)
    return config


def _run(config: dict, shared_dir, **options):
    pipeline = posepipe.create_pipeline(config=config, device="cpu", cpu_threads=THREADS, **options)
    paths = [str(shared_dir / "photos" / name) for name in PHOTOS]
    return pipeline, dict(zip(PHOTOS, pipeline.predict(paths)))


@pytest.fixture(scope="module")
def pir(real_config, shared_dir):
    return _run(real_config, shared_dir)


@pytest.fixture(scope="module")
def legacy(real_config, shared_dir):
    config = _with_models(real_config, shared_dir, "legacy/person_detector_nanodet", "legacy/keypoint_movenet_thunder")
    return _run(config, shared_dir)


@pytest.fixture(scope="module")
def ppdet(real_config, shared_dir):
    return _run(_with_models(real_config, shared_dir, kpt="legacy/keypoint_movenet_thunder_ppdet"), shared_dir)


def _assert_same_persons(ours: dict, theirs: dict, px: float = 1e-3) -> None:
    for name in PHOTOS:
        a, b = ours[name]["boxes"], theirs[name]["boxes"]
        assert len(a) == len(b) > 0, name
        for p, q in zip(a, b):  # same detector output, same order
            np.testing.assert_allclose(p["coordinate"], q["coordinate"], atol=px, err_msg=name)
            assert abs(p["det_score"] - q["det_score"]) < 1e-5
            np.testing.assert_allclose(p["keypoints"][:, :2], q["keypoints"][:, :2], atol=px, err_msg=name)
            np.testing.assert_allclose(p["keypoints"][:, 2], q["keypoints"][:, 2], atol=1e-5, err_msg=name)


def test_legacy_paddlex_dirs_match_their_pir_twins(pir, legacy):
    _assert_same_persons(legacy[1], pir[1])


def test_paddledetection_layout_loads_through_model_dir(pir, ppdet):
    pipeline, results = ppdet
    assert pipeline.keypoints.spec.program_path.name == "model.pdmodel"
    # The pipeline config names it (infer_cfg.yml has no Global.model_name).
    assert pipeline.keypoints.spec.model_name == "PP-TinyPose_256x192"
    _assert_same_persons(results, pir[1])


def test_legacy_programs_run_with_onednn_like_pir(pir, legacy):
    """The .pdmodel's op_version_map lists leaky_relu; the models must not be
    kept off oneDNN (2-3x slower) for an op they do not have."""
    for stage in ("detector", "keypoints"):
        assert legacy[0].metadata[stage]["onednn"] is pir[0].metadata[stage]["onednn"] is True


def test_legacy_results_match_paddlex_reference(legacy, shared_dir):
    """PaddleX 3.7.2's own output (made with the PIR models, which it runs
    within 1.5e-4 px of the legacy ones) within test_pipeline_real's bounds."""
    reference = json.loads((shared_dir / "reference" / "paddlex_real_models.json").read_text())
    for name in PHOTOS:
        pairs = match(legacy[1][name]["boxes"], reference[name], "coordinate", "coordinate", 0.9)
        assert len(pairs) == len(reference[name]) == len(legacy[1][name]["boxes"])
        for o, r in pairs:
            np.testing.assert_allclose(o["coordinate"], r["coordinate"], atol=2e-3)
            err = np.linalg.norm(np.asarray(o["keypoints"])[:, :2] - np.asarray(r["keypoints"])[:, :2], axis=1)
            assert err.max() <= 1.0


@pytest.mark.parametrize("rel", LEGACY_DIRS)
def test_legacy_programs_convert_to_onnx(rel, shared_dir, posepipe_home):
    """paddle2onnx reads .pdmodel programs: use_hpip's ONNX Runtime candidate
    exists for fine-tuned Paddle 2.x models and computes what Paddle does."""
    spec = load_model_spec(shared_dir / "models/legacy" / rel)
    plain = PaddleBackend(spec, RuntimeOptions(cpu_threads=THREADS, use_onednn=False))
    ort = create_backend(spec, RuntimeOptions(cpu_threads=THREADS), backend="onnxruntime")
    assert isinstance(ort, OrtBackend) and ort.describe()["onnx_source"] in ("converted", "cached")
    assert posepipe_home in ort.onnx.path.parents
    feeds = calibration_feeds(spec, 2 if spec.kind == "detector" else 4, plain.input_names)
    # Through the splitter: a detector whose NMS was exported for one image declares max_batch 1.
    report = compare(spec.kind, plain.run(feeds), run_split(ort, feeds), FP32)
    assert report.ok, f"{rel}: {report.problems}"


def test_legacy_pipeline_on_onnxruntime(real_config, shared_dir, legacy, posepipe_home):
    config = _with_models(real_config, shared_dir, "legacy/person_detector_nanodet", "legacy/keypoint_movenet_thunder_ppdet")
    pipeline, results = _run(config, shared_dir, backend="onnxruntime")
    assert pipeline.metadata["keypoints"]["backend"] == "onnxruntime"
    for name in PHOTOS:
        pairs = match(results[name]["boxes"], legacy[1][name]["boxes"], "coordinate", "coordinate", 0.9)
        assert len(pairs) == len(legacy[1][name]["boxes"]) == len(results[name]["boxes"])
        err = np.concatenate([np.linalg.norm(o["keypoints"][:, :2] - r["keypoints"][:, :2], axis=1) for o, r in pairs])
        assert err.max() <= 1.0 and np.median(err) <= 0.1, (name, err.max())


def test_wrong_format_model_dir_fails_the_pipeline_clearly(real_config, shared_dir, tmp_path):
    """A training checkpoint where the export belongs: one line that says so, before anything loads."""
    (tmp_path / "best_model.pdparams").write_bytes(b"\0")
    config = copy.deepcopy(real_config)
    config["SubModules"]["KeypointDetection"]["model_dir"] = str(tmp_path)
    with pytest.raises(posepipe.ModelError, match=r"training weights \(best_model.pdparams\), not an exported inference model"):
        posepipe.create_pipeline(config=config, device="cpu")
