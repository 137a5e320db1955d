"""use_hpip=True: backend selection per model and device (runtime/select.py).

On the real models it must still reproduce PaddleX's output within
test_pipeline_real.py's tolerances, show its choice in results' metadata and
logs, cache the decision, and skip the GPU candidates with a reason on a
machine without a GPU."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

import posepipe
from posepipe.models.spec import load_model_spec
from posepipe.runtime import BackendUnavailable, Device, RuntimeOptions, create_backend
from posepipe.runtime.paddle import PaddleBackend
from posepipe.runtime.candidates import CANDIDATES
from posepipe.runtime.select import SelectedBackend, decision_key, select_backend
from test_pipeline_real import PHOTOS, match

import onnxruntime  # noqa: E402,F401  (the test extra installs it)

THREADS = 2
CPU_NAMES = {c.name for c in CANDIDATES["cpu"]}
GPU_NAMES = [c.name for c in CANDIDATES["gpu"]]


@pytest.fixture(scope="module")
def hpip_pipeline(real_config, posepipe_home):
    return posepipe.create_pipeline(config=real_config, device="cpu", use_hpip=True, cpu_threads=THREADS)


@pytest.fixture(scope="module")
def hpip_results(hpip_pipeline, shared_dir):
    paths = [str(shared_dir / "photos" / name) for name in PHOTOS]
    return dict(zip(PHOTOS, hpip_pipeline.predict(paths)))


@pytest.mark.parametrize("name", PHOTOS)
def test_hpip_pipeline_matches_paddlex_reference(hpip_results, shared_dir, name):
    """The same bounds as test_pipeline_real.py: whichever backend won, the
    output is PaddleX's."""
    reference = json.loads((shared_dir / "reference" / "paddlex_real_models.json").read_text())[name]
    ours = hpip_results[name]["boxes"]
    assert len(ours) == len(reference)
    pairs = match(ours, reference, "coordinate", "coordinate", 0.9)
    assert len(pairs) == len(reference)
    errors = []
    for o, r in pairs:
        np.testing.assert_allclose(o["coordinate"], r["coordinate"], atol=2e-3)
        assert abs(o["det_score"] - r["det_score"]) < 1e-4
        k_ours, k_ref = np.asarray(o["keypoints"]), np.asarray(r["keypoints"])
        errors.append(np.linalg.norm(k_ours[:, :2] - k_ref[:, :2], axis=1))
        np.testing.assert_allclose(k_ours[:, 2], k_ref[:, 2], atol=1e-2)
        assert abs(o["kpt_score"] - r["kpt_score"]) < 1e-2
    errors = np.concatenate(errors)
    assert errors.max() <= 1.0 and np.median(errors) <= 0.1, (errors.max(), np.median(errors))


def test_choice_is_in_pipeline_and_result_metadata(hpip_pipeline, hpip_results):
    for role in ("detector", "keypoints"):
        info = hpip_pipeline.metadata[role]
        hpip = info["hpip"]
        assert hpip["decision"] == "measured" and hpip["chosen"] in CPU_NAMES
        by_name = {c["name"]: c for c in hpip["candidates"]}
        assert set(by_name) == CPU_NAMES
        chosen = by_name[hpip["chosen"]]
        assert chosen["status"] == "ok" and chosen["ms"]
        # The backend that runs is the chosen one, and it won on the measured score.
        assert info["backend"] == ("paddle" if hpip["chosen"].startswith("paddle") else hpip["chosen"])
        timed = [c for c in hpip["candidates"] if c["status"] == "ok"]
        assert min(timed, key=lambda c: sum(c["ms"].values()))["name"] == hpip["chosen"]
        # The reference is itself a candidate, with zero difference.
        assert by_name["paddle"]["status"] == "ok"
        assert all(v == 0 for k, v in by_name["paddle"]["max_diff"].items() if k in ("heatmap", "score", "box_px"))
        assert Path(hpip["cache_file"]).is_file()
    keypoint_batches = {c["name"]: set(c["ms"]) for c in hpip_pipeline.metadata["keypoints"]["hpip"]["candidates"]}
    assert keypoint_batches[hpip_pipeline.metadata["keypoints"]["hpip"]["chosen"]] == {"1", "8"}
    result = hpip_results[PHOTOS[0]]
    assert result.metadata["detector"] == hpip_pipeline.metadata["detector"]
    assert result.metadata["keypoints"]["hpip"]["chosen"] == hpip_pipeline.metadata["keypoints"]["hpip"]["chosen"]


def test_second_start_uses_the_cached_decision(hpip_pipeline, real_config, caplog):
    spec = load_model_spec(real_config["SubModules"]["KeypointDetection"]["model_dir"])
    first = hpip_pipeline.metadata["keypoints"]["hpip"]
    with caplog.at_level(logging.INFO, logger="posepipe"):
        again = create_backend(spec, RuntimeOptions(cpu_threads=THREADS), use_hpip=True)
    hpip = again.describe()["hpip"]
    assert hpip["decision"] == "cache" and hpip["cache_file"] == first["cache_file"]
    assert hpip["chosen"] == first["chosen"] and hpip["candidates"] == first["candidates"]
    # Only the chosen backend was built: well under a measured selection's time.
    assert hpip["selection_s"] < first["selection_s"]
    assert f"-> {first['chosen']} (decision cached in" in caplog.text


def test_measured_decision_is_logged(shared_dir, posepipe_home, caplog):
    spec = load_model_spec(shared_dir / "models" / "real" / "person_detector_nanodet")
    with caplog.at_level(logging.INFO, logger="posepipe"):
        backend = select_backend(spec, RuntimeOptions(cpu_threads=THREADS), use_cache=False)
    assert isinstance(backend, SelectedBackend)
    line = next(r.getMessage() for r in caplog.records if "posepipe hpip: PP-YOLOE-S_human (" in r.getMessage())
    assert f"-> {backend.decision.chosen}" in line
    for name in CPU_NAMES:  # every candidate's ms and max diff is in the line
        assert f"{name}: b1 " in line and "max diff" in line


def test_decision_key_follows_what_the_timings_depend_on(shared_dir):
    spec = load_model_spec(shared_dir / "models" / "real" / "person_detector_nanodet")
    cpu = CANDIDATES["cpu"]
    two, one = RuntimeOptions(cpu_threads=2), RuntimeOptions(cpu_threads=1)
    assert decision_key(spec, two, cpu) == decision_key(spec, two, cpu)
    assert decision_key(spec, two, cpu) != decision_key(spec, one, cpu)
    other = load_model_spec(shared_dir / "models" / "official_arch" / "PP-YOLOE-S_human")
    assert decision_key(spec, two, cpu) != decision_key(other, two, cpu)


def test_without_hpip_nothing_changes(shared_dir):
    spec = load_model_spec(shared_dir / "models" / "real" / "person_detector_nanodet")
    backend = create_backend(spec, RuntimeOptions(cpu_threads=THREADS))
    assert type(backend) is PaddleBackend and "hpip" not in backend.describe()
    # An explicitly named backend wins over use_hpip.
    named = create_backend(spec, RuntimeOptions(cpu_threads=THREADS), backend="onnxruntime", use_hpip=True)
    assert named.name == "onnxruntime" and "hpip" not in named.describe()


def _machine_has_cuda() -> bool:
    import onnxruntime

    try:
        import paddle

        paddle_cuda = paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    except ImportError:
        paddle_cuda = False
    return paddle_cuda or "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def test_gpu_candidates_are_skipped_with_a_reason_without_a_gpu(shared_dir, posepipe_home):
    if _machine_has_cuda():
        pytest.skip("this machine has CUDA: the GPU candidates are real here")
    spec = load_model_spec(shared_dir / "models" / "real" / "person_detector_nanodet")
    # parse_device("gpu") refuses on this machine; the selector must cope with a
    # GPU device on its own and say why each GPU backend cannot run.
    with pytest.raises(BackendUnavailable) as info:
        select_backend(spec, RuntimeOptions(device=Device("gpu", 0), cpu_threads=THREADS), use_cache=False)
    message = str(info.value)
    for name in GPU_NAMES:
        assert f"{name}: unavailable (" in message, message
    assert "is a CPU build" in message  # Paddle's reason
    assert "has no TensorrtExecutionProvider" in message and "has no CUDAExecutionProvider" in message
