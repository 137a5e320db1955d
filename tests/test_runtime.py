"""runtime/: device strings, backend options, and every shared model running
on the plain CPU kernels and on the auto (oneDNN) path with the same results.

Tolerances (measured on these models, Paddle 3.3.1, see runtime/paddle.py):
* keypoint heatmaps, oneDNN vs plain: max |diff| <= 3.4e-6 (values in [0, 1]);
  we allow 1e-4, still far below what moves a DARK-decoded keypoint.
* detections with score > 0.05: boxes within 1.9e-3 px (640 px input),
  scores within 2.4e-5; we allow 0.02 px and 1e-4. Boxes of near-zero-score
  anchors differ more (flat DFL distributions), and nobody keeps those.
* batching: a crop's output in a batch equals its batch-1 output to the same
  bounds (oneDNN may pick other kernels for other batch sizes)."""
from __future__ import annotations

import os
import sys
import types

import cv2
import numpy as np
import pytest

from posepipe.errors import ConfigError, DeviceError
from posepipe.models.spec import DETECTOR, load_model_spec
from posepipe.runtime import BACKENDS, BackendUnavailable, Device, RuntimeOptions, create_backend, parse_device
from posepipe.runtime import device as device_module

HEATMAP_TOL = 1e-4
BOX_TOL_PX = 0.02
SCORE_TOL = 1e-4
MIN_SCORE = 0.05

MODELS = [
    "official_arch/PP-YOLOE-S_human",
    "official_arch/PP-YOLOE-S_human_noNMS",
    "official_arch/PP-TinyPose_128x96",
    "official_arch/PP-TinyPose_256x192",
    "real/person_detector_nanodet",
    "real/keypoint_movenet_thunder",
]
KEYPOINT_MODELS = [m for m in MODELS if "TinyPose" in m or "movenet" in m]
DETECTOR_MODELS = [m for m in MODELS if m not in KEYPOINT_MODELS]


# --- devices ----------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [("cpu", Device("cpu", 0)), (" CPU ", Device("cpu", 0)), (Device("cpu"), Device("cpu", 0))],
)
def test_parse_good_devices(text, expected):
    assert parse_device(text) == expected


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("tpu", "unknown device 'tpu'; accepted forms: cpu, gpu, gpu:N"),
        ("", "unknown device ''"),
        ("gpu:x", "index must be a non-negative integer"),
        ("gpu:-1", "index must be a non-negative integer"),
        ("cpu:0", "cpu takes no index"),
        ("gpu:0,1", "one device"),
        (3, "must be a string"),
    ],
)
def test_parse_bad_devices(text, fragment):
    with pytest.raises(DeviceError, match=fragment):
        parse_device(text)


def test_devices_this_paddle_cannot_run():
    import paddle

    if paddle.device.is_compiled_with_cuda():
        pytest.skip("a CUDA build of paddlepaddle: test_devices_with_a_gpu_build covers its checks")
    assert parse_device(None) == Device("cpu", 0)
    for text in ("gpu", "gpu:1"):
        with pytest.raises(DeviceError, match="not a CUDA build; install paddlepaddle-gpu"):
            parse_device(text)
    with pytest.raises(DeviceError, match="no Paddle custom-device plugin for 'npu'"):
        parse_device("npu:1")
    with pytest.raises(DeviceError, match="not an XPU build"):
        parse_device("xpu")


def _fake_paddle(cuda_devices: int, custom=()):
    cuda = types.SimpleNamespace(device_count=lambda: cuda_devices)
    dev = types.SimpleNamespace(
        is_compiled_with_cuda=lambda: True,
        is_compiled_with_rocm=lambda: False,
        cuda=cuda,
        get_all_custom_device_type=lambda: sorted({c.split(":")[0] for c in custom}),
        get_available_custom_device=lambda: list(custom),
    )
    return types.SimpleNamespace(device=dev, __version__="fake")


def test_devices_with_a_gpu_build(monkeypatch):
    monkeypatch.setattr(device_module, "_paddle", lambda: _fake_paddle(2, custom=("npu:0",)))
    assert parse_device(None) == Device("gpu", 0)
    assert parse_device("gpu") == Device("gpu", 0)
    assert parse_device("GPU:1") == Device("gpu", 1)
    assert str(parse_device("gpu:1")) == "gpu:1"
    with pytest.raises(DeviceError, match="only 2 gpu device"):
        parse_device("gpu:2")
    assert parse_device("npu") == Device("npu", 0)
    with pytest.raises(DeviceError, match="only 1 npu device"):
        parse_device("npu:1")


def test_devices_without_paddle(monkeypatch):
    monkeypatch.setattr(device_module, "_paddle", lambda: None)
    assert parse_device(None) == Device("cpu", 0)
    assert parse_device("cpu") == Device("cpu", 0)
    with pytest.raises(DeviceError, match="paddlepaddle is not installed"):
        parse_device("gpu:0")


# --- options, registry, missing paddle -----------------------------------------


def test_runtime_options():
    assert RuntimeOptions().cpu_threads == os.cpu_count()
    assert RuntimeOptions(cpu_threads=1).cpu_threads == 1
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="cpu_threads"):
            RuntimeOptions(cpu_threads=bad)
    with pytest.raises(ConfigError, match="use_onednn"):
        RuntimeOptions(use_onednn="yes")


def test_unknown_backend(shared_dir):
    spec = load_model_spec(shared_dir / "models/official_arch/PP-TinyPose_128x96")
    with pytest.raises(ConfigError, match="unknown backend 'tensorrt'; available: paddle"):
        create_backend(spec, RuntimeOptions(), backend="tensorrt")
    assert "paddle" in BACKENDS


def test_missing_paddle_says_how_to_install(shared_dir, monkeypatch):
    spec = load_model_spec(shared_dir / "models/official_arch/PP-TinyPose_128x96")
    monkeypatch.setitem(sys.modules, "paddle", None)  # makes `import paddle` raise ImportError
    monkeypatch.setitem(sys.modules, "paddle.inference", None)
    with pytest.raises(BackendUnavailable, match=r"pip install paddlepaddle .*paddlepaddle-gpu") as info:
        create_backend(spec, RuntimeOptions())
    assert isinstance(info.value, ImportError)


# --- models on plain CPU vs the auto (oneDNN) path ------------------------------


@pytest.fixture(scope="module")
def backends(shared_dir):
    """model -> (spec, plain CPU backend, auto backend), built once."""
    out = {}
    for rel in MODELS:
        spec = load_model_spec(shared_dir / "models" / rel)
        plain = create_backend(spec, RuntimeOptions(use_onednn=False))
        auto = create_backend(spec, RuntimeOptions())
        out[rel] = (spec, plain, auto)
    return out


@pytest.fixture(scope="module")
def photos(shared_dir):
    return [cv2.imread(str(p))[:, :, ::-1] for p in sorted((shared_dir / "photos").glob("*.jpg"))]


def _normalized(images, size_hw, pre) -> np.ndarray:
    h, w = size_hw
    batch = [cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32) for img in images]
    x = np.stack(batch) * (1 / 255.0 if pre.is_scale else 1.0)
    x = (x - np.array(pre.mean, np.float32)) / np.array(pre.std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)


def _crops(photos, n):
    """n person-like vertical strips of the photos."""
    out = []
    for i in range(n):
        img = photos[i % len(photos)]
        x0 = int((0.13 * i) % 0.6 * img.shape[1])
        out.append(img[:, x0 : x0 + img.shape[1] // 3])
    return out


def _det_feeds(spec, photos):
    image = _normalized(photos, spec.detector.target_hw, spec.detector)
    h, w = spec.detector.target_hw
    scale = np.array([[h / p.shape[0], w / p.shape[1]] for p in photos], np.float32)
    return {"image": image, "scale_factor": scale}


def _detections(outputs, n_images):
    """Per image: rows (class, score, x1, y1, x2, y2) with score > MIN_SCORE."""
    first, second = outputs
    if first.ndim == 2:  # in-graph NMS: rows + per-image counts
        parts = np.split(first, np.cumsum(second)[:-1])
    else:  # boxes [N, A, 4], scores [N, 1, A]
        parts = [np.column_stack([np.zeros(len(b)), s[0], b]) for b, s in zip(first, second)]
    assert len(parts) == n_images
    return [p[p[:, 1] > MIN_SCORE] for p in parts]


def _assert_same_detections(a, b):
    """Each confident detection of one run has its twin in the other (order-free)."""
    for x, y in ((a, b), (b, a)):
        for row in x:
            assert len(y), f"detection {row} has no counterpart"
            d = np.abs(y - row)
            best = d[np.argmin(d[:, 2:].max(axis=1))]
            assert best[0] == 0 and best[1] <= SCORE_TOL and best[2:].max() <= BOX_TOL_PX, (row, best)


def test_auto_uses_onednn_without_placement_pass(backends):
    for rel, (spec, plain, auto) in backends.items():
        assert plain.describe()["onednn"] is False
        info = auto.describe()
        assert info["onednn"] is True, rel
        assert info["cpu_threads"] == os.cpu_count()
        assert "onednn_placement_pass" in info["deleted_passes"]


@pytest.mark.parametrize("rel", DETECTOR_MODELS)
def test_detector_onednn_matches_plain_and_batches(backends, photos, rel):
    spec, plain, auto = backends[rel]
    assert spec.kind == DETECTOR
    feeds = _det_feeds(spec, photos[:1])
    ref = _detections(plain.run(feeds), 1)
    assert len(ref[0]) > 0
    _assert_same_detections(ref[0], _detections(auto.run(feeds), 1)[0])
    # Batch of 2: image 0 gives what it gave alone.
    feeds2 = _det_feeds(spec, photos[:2])
    got = _detections(auto.run(feeds2), 2)
    _assert_same_detections(ref[0], got[0])


@pytest.mark.parametrize("rel", KEYPOINT_MODELS)
def test_keypoint_onednn_matches_plain(backends, photos, rel):
    spec, plain, auto = backends[rel]
    w, h = spec.keypoint.input_wh
    x = _normalized(_crops(photos, 4), (h, w), spec.keypoint)
    a, b = plain.run({"image": x}), auto.run({"image": x})
    assert a[0].shape == (4, 17, h // 4, w // 4)
    assert np.abs(a[0] - b[0]).max() <= HEATMAP_TOL
    assert a[1].shape == (4, 17)


@pytest.mark.parametrize("rel", KEYPOINT_MODELS)
def test_keypoint_variable_batch(backends, photos, rel):
    """The pipeline feeds all persons at once: one predictor, changing batch sizes."""
    spec, _, auto = backends[rel]
    w, h = spec.keypoint.input_wh
    x = _normalized(_crops(photos, 16), (h, w), spec.keypoint)
    singles = np.concatenate([auto.run({"image": x[i : i + 1]})[0] for i in range(16)])
    for n in (16, 3, 1, 7):
        heatmaps = auto.run({"image": x[:n]})[0]
        assert heatmaps.shape[0] == n
        assert np.abs(heatmaps - singles[:n]).max() <= HEATMAP_TOL, n


def test_missing_input_is_named(backends):
    _, _, auto = backends["official_arch/PP-YOLOE-S_human"]
    with pytest.raises(Exception, match=r"missing model input\(s\) \['scale_factor'\]"):
        auto.run({"image": np.zeros((1, 3, 640, 640), np.float32)})


# Builds a conv + leaky_relu + nearest-interp program (the two oneDNN pitfalls of
# Paddle 3.3) and runs it with oneDNN forced on. In a child process: the bug
# this guards against is a segfault, which would otherwise end the test run.
_LEAKY_SCRIPT = r"""
import sys, numpy as np, paddle
from posepipe.models.spec import load_model_spec
from posepipe.runtime import RuntimeOptions, create_backend

class Net(paddle.nn.Layer):
    def __init__(self):
        super().__init__()
        self.c1 = paddle.nn.Conv2D(3, 8, 3, padding=1)
        self.c2 = paddle.nn.Conv2D(8, 4, 3, padding=1)

    def forward(self, image):
        y = paddle.nn.functional.leaky_relu(self.c1(image), 0.1)
        y = paddle.nn.functional.interpolate(y, scale_factor=2, mode="nearest")
        return paddle.nn.functional.leaky_relu(self.c2(y), 0.1)

paddle.seed(0)
net = Net()
net.eval()
out = sys.argv[1]
paddle.jit.save(net, out + "/inference", input_spec=[paddle.static.InputSpec([None, 3, 32, 32], "float32", "image")])
open(out + "/inference.yml", "w").write(
    "Global: {model_name: tiny}\nPreprocess: [{type: TopDownEvalAffine, trainsize: [32, 32]}]\n")
spec = load_model_spec(out)
x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
plain = create_backend(spec, RuntimeOptions(use_onednn=False)).run({"image": x})[0]
auto = create_backend(spec, RuntimeOptions())
forced = create_backend(spec, RuntimeOptions(use_onednn=True))
print(spec.has_leaky_relu, auto.describe()["onednn"], forced.describe()["deleted_passes"])
print(float(np.abs(forced.run({"image": x})[0] - plain).max()))
"""


def test_leaky_relu_and_interp_with_onednn_forced(tmp_path):
    import subprocess
    from pathlib import Path

    import posepipe

    # The child imports the same posepipe as this process.
    env = {**os.environ, "PYTHONPATH": str(Path(posepipe.__file__).parents[1])}
    script = tmp_path / "leaky.py"  # a file: Paddle's dy2st reads the layer's source
    script.write_text(_LEAKY_SCRIPT)
    model = tmp_path / "model"
    model.mkdir()
    proc = subprocess.run(
        [sys.executable, str(script), str(model)], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    flags, diff = proc.stdout.strip().splitlines()[-2:]
    assert flags == "True False ['onednn_placement_pass', 'conv2d_bias_fuse_pass']"
    assert float(diff) <= 1e-5
