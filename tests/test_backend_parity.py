"""Every backend against plain Paddle on the CPU kernels, on every model in
../shared/models, with the tolerances use_hpip selects by
(runtime/parity.py, where the numbers are justified):

* ONNX Runtime (CPU) and OpenVINO (CPU, fp32): the real models' shipped
  inference.onnx, and the official_arch models converted by paddle2onnx into
  a temporary POSEPIPE_HOME (conversions never go next to a model);
* Paddle + oneDNN: the same tolerances (it is PaddleX's own CPU default);
* the GPU backends cannot run here: they are skipped, and test_hpip.py checks
  that selection records why.

Also: the parity checks themselves must catch real differences (a moved or
missing box, a shifted heatmap) while tolerating NMS's legitimate noise."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from posepipe.errors import ModelError
from posepipe.models.spec import DETECTOR, KEYPOINT, load_model_spec
from posepipe.runtime import Device, RuntimeOptions, create_backend
from posepipe.runtime.onnx_export import OnnxModel, onnx_for
from posepipe.batching import run_split
from posepipe.runtime.onnxruntime import OrtBackend
from posepipe.runtime.trt_profile import trt_batch_profile
from posepipe.runtime.openvino import OpenVinoBackend, openvino_cache_dir
from posepipe.runtime.paddle import PaddleBackend
from posepipe.runtime.parity import FP16, FP32, compare
from posepipe.runtime.timing import calibration_feeds

import onnxruntime  # noqa: E402,F401  (the test extra installs it)
import openvino  # noqa: E402,F401  (the test extra installs it)

ONNX_BACKENDS = {"onnxruntime": OrtBackend, "openvino": OpenVinoBackend}

MODELS = [
    "real/person_detector_nanodet",
    "real/keypoint_movenet_thunder",
    "official_arch/PP-YOLOE-S_human",
    "official_arch/PP-YOLOE-S_human_noNMS",
    "official_arch/PP-TinyPose_128x96",
    "official_arch/PP-TinyPose_256x192",
]
THREADS = 2


def _batch(spec) -> int:
    # Detectors at 2: more than one image exercises the per-image split of the
    # batch-1 NMS export. Keypoint models at 4: a real multi-person batch.
    return 2 if spec.kind == DETECTOR else 4


@pytest.mark.parametrize("name", sorted(ONNX_BACKENDS))
@pytest.mark.parametrize("model", MODELS)
def test_onnx_backends_match_plain_paddle(name, model, shared_dir, posepipe_home):
    spec = load_model_spec(shared_dir / "models" / model)
    plain = PaddleBackend(spec, RuntimeOptions(cpu_threads=THREADS, use_onednn=False))
    backend = create_backend(spec, RuntimeOptions(cpu_threads=THREADS), backend=name)
    assert isinstance(backend, ONNX_BACKENDS[name]) and backend.precision == "fp32"
    assert backend.input_names == plain.input_names

    feeds = calibration_feeds(spec, _batch(spec), plain.input_names)
    expected, got = plain.run(feeds), run_split(backend, feeds)
    assert [x.dtype for x in got] == [x.dtype for x in expected]
    report = compare(spec.kind, expected, got, FP32)
    assert report.ok, f"{name} on {model}: {report.problems}"
    if spec.kind == DETECTOR and expected[0].ndim == 2:
        # NMS in the graph: batch-1 export, run per image by the splitter and joined along axis 0.
        assert backend.max_batch == 1
        assert got[1].shape == expected[1].shape == (2,)
        assert report.max_diff["compared_boxes"] > 0  # the check was not vacuous
    else:
        assert backend.max_batch is None
        assert [x.shape for x in got] == [x.shape for x in expected]

    info = backend.describe()
    assert info["backend"] == name
    if name == "onnxruntime":
        assert info["providers"] == ["CPUExecutionProvider"]
    else:  # fp32 asked for explicitly: OpenVINO would run bf16 by default on AMX CPUs
        assert info["inference_precision_hint"] == "f32"
        assert Path(info["model_cache"]) == openvino_cache_dir() and posepipe_home in openvino_cache_dir().parents
        assert any(openvino_cache_dir().iterdir())  # compiled models are cached for later starts
    if model.startswith("real/"):
        assert info["onnx_source"] == "shipped"
    else:
        # Converted once into POSEPIPE_HOME, then reused.
        assert info["onnx_source"] in ("converted", "cached")
        assert posepipe_home in backend.onnx.path.parents, backend.onnx.path
        again = ONNX_BACKENDS[name](spec, RuntimeOptions(cpu_threads=THREADS))
        assert again.onnx.path == backend.onnx.path and again.onnx.source == "cached"


@pytest.mark.parametrize("model", ["real/person_detector_nanodet", "official_arch/PP-TinyPose_128x96"])
def test_onednn_matches_plain_paddle(model, shared_dir):
    spec = load_model_spec(shared_dir / "models" / model)
    plain = PaddleBackend(spec, RuntimeOptions(cpu_threads=THREADS, use_onednn=False))
    onednn = PaddleBackend(spec, RuntimeOptions(cpu_threads=THREADS, use_onednn=True))
    feeds = calibration_feeds(spec, _batch(spec), plain.input_names)
    report = compare(spec.kind, plain.run(feeds), onednn.run(feeds), FP32)
    assert report.ok, report.problems


@pytest.mark.parametrize("name", sorted(ONNX_BACKENDS))
def test_batch_split_equals_one_call_per_image(name, shared_dir, posepipe_home):
    """The per-image split joins outputs exactly as separate calls would."""
    spec = load_model_spec(shared_dir / "models" / "official_arch" / "PP-YOLOE-S_human")
    backend = ONNX_BACKENDS[name](spec, RuntimeOptions(cpu_threads=THREADS))
    assert backend.max_batch == 1
    feeds = calibration_feeds(spec, 3, backend.input_names)
    joined = run_split(backend, feeds, max_chunk=4)
    single = [backend.run({k: v[i : i + 1] for k, v in feeds.items()}) for i in range(3)]
    np.testing.assert_array_equal(joined[0], np.concatenate([s[0] for s in single]))
    np.testing.assert_array_equal(joined[1], np.concatenate([s[1] for s in single]))


def test_conversion_goes_to_the_cache_never_next_to_the_model(shared_dir, tmp_path, monkeypatch):
    """Even a writable model folder gets no file: conversions live in POSEPIPE_HOME."""
    import shutil

    # An empty cache: the same weights converted by another test would be found there.
    home = tmp_path / "home"
    monkeypatch.setenv("POSEPIPE_HOME", str(home))
    model = tmp_path / "PP-TinyPose_128x96"
    shutil.copytree(shared_dir / "models" / "official_arch" / "PP-TinyPose_128x96", model)
    for path in [model, *model.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    before = sorted(p.name for p in model.iterdir())
    spec = load_model_spec(model)
    first = onnx_for(spec)
    assert first.source == "converted" and first.path.parent == home / "onnx"
    assert first.path.stat().st_mode & 0o044
    assert sorted(p.name for p in model.iterdir()) == before
    assert sorted(p.name for p in first.path.parent.iterdir()) == [first.path.name]  # no temp file left
    assert onnx_for(spec) == OnnxModel(first.path, "cached")
    # Other weights, other key: a stale conversion is never reused.
    (model / "inference.pdiparams").write_bytes(b"not weights")
    with pytest.raises(ModelError, match="paddle2onnx could not convert"):
        onnx_for(load_model_spec(model))
    assert [p.name for p in first.path.parent.glob("*.onnx")] == [first.path.name]


def test_an_unwritable_cache_is_a_clear_error(shared_dir, tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("POSEPIPE_HOME", str(blocker))
    spec = load_model_spec(shared_dir / "models" / "official_arch" / "PP-TinyPose_128x96")
    with pytest.raises(ModelError, match="set POSEPIPE_HOME to a writable folder"):
        onnx_for(spec)


def test_trt_profile_uses_the_yml_shapes_and_posepipe_batches(shared_dir):
    """TensorRT profiles (GPU only, so checked as data here): the yml's Hpi
    shapes, the keypoint batch widened to posepipe's 32, NMS pinned to batch 1."""
    kpt = load_model_spec(shared_dir / "models" / "official_arch" / "PP-TinyPose_256x192")
    profile = trt_batch_profile(kpt, {"image": ["N", 3, 256, 192]})
    assert profile == {"image": ([1, 3, 256, 192], [8, 3, 256, 192], [32, 3, 256, 192])}
    det = load_model_spec(shared_dir / "models" / "official_arch" / "PP-YOLOE-S_human")
    declared = {"image": [-1, 3, 640, 640], "scale_factor": [-1, 2]}
    assert trt_batch_profile(det, declared)["image"] == ([1, 3, 640, 640], [1, 3, 640, 640], [8, 3, 640, 640])
    assert trt_batch_profile(det, declared, one_image=True)["scale_factor"] == ([1, 2], [1, 2], [1, 2])
    real = load_model_spec(shared_dir / "models" / "real" / "keypoint_movenet_thunder")  # no Hpi block
    assert trt_batch_profile(real, {"image": ["N", 3, 256, 256]})["image"][2] == [32, 3, 256, 256]
    assert trt_batch_profile(real, {"image": [1, 3, 256, 256]}) == {}  # static: no profile


# --- the checks themselves ------------------------------------------------------


def _rows(*boxes):
    """NMS output for one image: rows (class, score, x1, y1, x2, y2) + counts."""
    rows = np.array([[0, s, x, y, x + w, y + h] for s, x, y, w, h in boxes], np.float32)
    return [rows, np.array([len(rows)], np.int32)]


FEW = [(0.95, 10, 10, 100, 200), (0.90, 300, 40, 80, 160), (0.60, 500, 300, 50, 90), (0.03, 1, 1, 5, 5)]
# Ten confident boxes: enough for one near-tie swap per side (10%).
MANY = [(0.99 - 0.02 * i, 60 * i, 20 * (i % 3), 50, 120) for i in range(10)]


def test_nms_parity_tolerates_order_and_cut_noise():
    ref = _rows(*FEW)
    assert compare(DETECTOR, ref, _rows(*FEW[::-1]), FP32).ok
    # A row below min_score may vanish, and so may one right at the cut.
    assert compare(DETECTOR, ref, _rows(*FEW[:3]), FP32).ok
    assert compare(DETECTOR, ref, _rows(*FEW, (0.0502, 600, 600, 10, 10)), FP32).ok
    # keep_top_k cuts by rank: a box at the lowest kept score may be replaced.
    cut = _rows(*FEW[:3], (0.59, 700, 700, 30, 30))
    assert compare(DETECTOR, _rows(*FEW[:3], (0.5901, 800, 100, 30, 30)), cut, FP32).ok


def test_nms_parity_tolerates_a_near_tie_swap():
    # NMS kept an overlapping box with the same score instead of the reference's.
    swapped = [(0.99, 4, 3, 50, 120), *MANY[1:]]
    report = compare(DETECTOR, _rows(*MANY), _rows(*swapped), FP32)
    assert report.ok, report.problems
    assert report.max_diff["near_tie_swaps"] == 1
    two = [(0.99, 4, 3, 50, 120), (0.97, 64, 23, 50, 120), *MANY[2:]]
    assert not compare(DETECTOR, _rows(*MANY), _rows(*two), FP32).ok


@pytest.mark.parametrize(
    "rows, change, fragment",
    [
        (FEW, lambda r: [r[0], r[1], (0.60, 501.0, 300, 50, 90), r[3]], "no counterpart within 0.1 px"),
        (FEW, lambda r: [r[0], r[2], r[3]], "no counterpart"),
        (FEW, lambda r: [(0.95 + 1e-3, *r[0][1:]), *r[1:]], "score max |diff|"),
        (FEW, lambda r: [*r, (0.7, 700, 700, 40, 40)], "absent from the reference"),
        # Every box moved, scores unchanged: not excusable as near-tie swaps.
        (MANY, lambda r: [(s, x + 3, y, w, h) for s, x, y, w, h in r], "beyond 1 near-tie swap"),
    ],
)
def test_nms_parity_catches_real_differences(rows, change, fragment):
    report = compare(DETECTOR, _rows(*rows), _rows(*change(rows)), FP32)
    assert not report.ok
    assert any(fragment in p for p in report.problems), report.problems


def test_heatmap_parity_by_precision():
    rng = np.random.default_rng(0)
    heatmaps = rng.random((2, 17, 8, 6)).astype(np.float32)
    argmax = heatmaps.reshape(2, 17, -1).argmax(-1)
    shifted = heatmaps + np.float32(1e-3)
    assert compare(KEYPOINT, [heatmaps, argmax], [heatmaps, argmax], FP32).ok
    assert not compare(KEYPOINT, [heatmaps, argmax], [shifted, argmax], FP32).ok
    assert compare(KEYPOINT, [heatmaps, argmax], [shifted, argmax], FP16).ok
    nan = heatmaps.copy()
    nan[0, 0, 0, 0] = np.nan
    assert not compare(KEYPOINT, [heatmaps, argmax], [nan, argmax], FP16).ok


def test_raw_box_parity_compares_confident_anchors_only():
    boxes = np.zeros((1, 3, 4), np.float32)
    boxes[0, :, 2:] = 50
    scores = np.array([[[0.9, 0.2, 0.01]]], np.float32)
    moved_low = boxes.copy()
    moved_low[0, 2] += 5  # an anchor below min_score: its box is not compared
    assert compare(DETECTOR, [boxes, scores], [moved_low, scores], FP32).ok
    moved_high = boxes.copy()
    moved_high[0, 0] += 0.5
    assert not compare(DETECTOR, [boxes, scores], [moved_high, scores], FP32).ok


def _recording_session(real_session, created: list):
    """onnxruntime.InferenceSession stand-in for GPU providers on a CPU-only
    machine: records what posepipe asks for, computes on the CPU, and reports
    the requested provider as the one in use."""

    class Session:
        def __init__(self, path, sess_options=None, providers=None):
            self._real = real_session(path, sess_options=sess_options, providers=["CPUExecutionProvider"])
            self._providers = [p[0] if isinstance(p, tuple) else p for p in providers]
            created.append(providers)

        def get_providers(self):
            return self._providers

        def __getattr__(self, name):
            return getattr(self._real, name)

    return Session


@pytest.mark.parametrize("ep", ["tensorrt", "cuda"])
def test_gpu_provider_configuration(ep, shared_dir, posepipe_home, monkeypatch):
    """What the CUDA / TensorRT providers are given (they cannot run here):
    fp16, engine + timing cache under POSEPIPE_HOME, the dynamic-batch
    profile, CUDA then CPU behind TensorRT for the nodes it rejects."""
    import onnxruntime

    created: list = []
    monkeypatch.setattr(onnxruntime, "InferenceSession", _recording_session(onnxruntime.InferenceSession, created))
    monkeypatch.setattr(
        onnxruntime, "get_available_providers",
        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
    )
    spec = load_model_spec(shared_dir / "models" / "official_arch" / "PP-TinyPose_256x192")
    backend = OrtBackend(spec, RuntimeOptions(device=Device("gpu", 0), cpu_threads=THREADS), ep=ep)
    providers = created[-1]
    names = [p[0] if isinstance(p, tuple) else p for p in providers]
    if ep == "cuda":
        assert names == ["CUDAExecutionProvider", "CPUExecutionProvider"] and backend.max_batch is None
        return
    assert names == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    trt = providers[0][1]
    assert trt["trt_fp16_enable"] is True and trt["trt_engine_cache_enable"] is True
    assert posepipe_home in Path(trt["trt_engine_cache_path"]).parents
    assert trt["trt_profile_min_shapes"] == "image:1x3x256x192"
    assert trt["trt_profile_opt_shapes"] == "image:8x3x256x192"
    assert trt["trt_profile_max_shapes"] == "image:32x3x256x192"
    # Batches beyond the profile are split; the result is the one-call result.
    assert backend.max_batch == 32 and backend.precision == "fp16"
    crops = calibration_feeds(spec, 33, backend.input_names)
    assert run_split(backend, crops)[0].shape == (33, 17, 64, 48)
    info = backend.describe()
    assert info["execution_provider"] == "TensorrtExecutionProvider" and info["fp16"] is True
