"""Paddle Inference backend (zero-copy tensors, one predictor per model).

CPU settings for `use_onednn=None`, measured on Paddle 3.3.1, 2-core CPU, ms
per call, plain kernels vs oneDNN, 2 threads (reproduce with
`python benchmarks/onednn_table.py MODEL_DIR... --photo X.jpg`):

    model                 batch   plain  oneDNN   max |diff|
    PP-TinyPose_128x96        1    25.4    16.3   5.7e-7 (heatmap)
    PP-TinyPose_128x96        8   125.2    53.3   7.5e-7
    PP-TinyPose_256x192       1    63.9    52.7   1.2e-6
    PP-TinyPose_256x192       8   384.6   249.3   1.4e-6
    MoveNet Thunder           1    75.9    23.7   1.2e-6
    MoveNet Thunder           8  1046.1   137.5   1.2e-6
    PP-YOLOE-S_human          1   327.1    71.0   1.6e-3 px (boxes, 640 px input)
    PP-YOLOE-S_human_noNMS    1   394.9    77.5   9e-4 px for scores > 0.3
    NanoDet                   1    79.0    29.5   1.5e-4 px

* oneDNN is faster on every model and agrees to float rounding, so it is on by
  default. Two threads beat or match one on every model (TinyPose within noise).
* `onednn_placement_pass` is always deleted. The fuse passes still turn
  convolutions (with their bias, batch norm, activation, residual add) into
  oneDNN's fused_conv2d, and every other op stays on Paddle's native kernels.
  Full placement is slower or broken for the rest: oneDNN cannot execute the
  `*_interp` ops of PIR programs (Paddle issue #79749: "ConvertPirAttribute2
  RuntimeAttribute not support ArrayAttribute<DoubleAttribute>"; PP-YOLOE's
  neck and PP-TinyPose's LiteHRNet use them), and it runs broadcast
  `subtract` (MoveNet's decoder) with its reference kernel: 9.9 ms for two
  ops where the native one takes 0.9. Measured without placement: MoveNet
  8-10% faster at batch 1-8, NanoDet unchanged, same outputs (1.2e-6).
* oneDNN's conv + leaky_relu fusion segfaults at predictor creation; deleting
  `conv2d_bias_fuse_pass` avoids it. No real model with leaky_relu was at hand
  to check speed and accuracy, so the auto choice keeps such models on the
  plain kernels; `use_onednn=True` runs them with that pass deleted.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Dict, List, Mapping, Tuple

import numpy as np

from ..errors import ConfigError, ModelError
from ..models.spec import ModelSpec
from .base import Backend, BackendUnavailable, RuntimeOptions
from .paddle_import import import_paddle

log = logging.getLogger("posepipe")

INSTALL_HINT = (
    "the paddle backend needs paddlepaddle: pip install paddlepaddle (CPU) or paddlepaddle-gpu "
    "(NVIDIA GPU, see https://www.paddlepaddle.org.cn/install), or pip install 'posepipe[paddle]'"
)
PLACEMENT_PASS = "onednn_placement_pass"
LEAKY_RELU_WORKAROUND_PASS = "conv2d_bias_fuse_pass"


def import_paddle_inference():
    try:
        import_paddle()
        import paddle.inference as paddle_inference
    except ImportError as e:
        raise BackendUnavailable(f"{INSTALL_HINT} ({e})") from e
    return paddle_inference


def auto_onednn(spec: ModelSpec) -> Tuple[bool, str]:
    """Whether oneDNN should run this model on CPU, and why (for describe())."""
    if not _onednn_built():
        return False, "paddlepaddle was built without oneDNN"
    if spec.has_leaky_relu:
        return False, "leaky_relu: oneDNN's conv+leaky_relu fusion crashes on Paddle 3.3"
    return True, "oneDNN: faster on every measured model, same outputs to float rounding"


def onednn_deleted_passes(spec: ModelSpec) -> List[str]:
    """Passes to delete so that oneDNN runs this program (at its best)."""
    passes = [PLACEMENT_PASS]
    if spec.has_leaky_relu:
        passes.append(LEAKY_RELU_WORKAROUND_PASS)
    return passes


class PaddleBackend(Backend):
    name = "paddle"

    def __init__(self, spec: ModelSpec, options: RuntimeOptions):
        paddle_inference = import_paddle_inference()
        self.spec = spec
        self.options = options
        self._settings: Dict[str, Any] = {}
        config = paddle_inference.Config(str(spec.program_path), str(spec.params_path))
        _DEVICE_SETUP.get(options.device.kind, PaddleBackend._setup_custom_device)(self, config)
        # PIR programs (inference.json) need the new IR; PaddleX enables it for
        # legacy .pdmodel files too. Memory optimisation fails without it.
        config.enable_new_ir(True)
        config.enable_new_executor()
        config.switch_ir_optim(True)
        if options.enable_memory_optim:
            config.enable_memory_optim()
        config.disable_glog_info()
        try:
            self._predictor = paddle_inference.create_predictor(config)
        except Exception as e:  # Paddle raises assorted C++-mapped types
            raise ModelError(f"{spec.model_dir}: Paddle Inference cannot load this model: {e}") from e
        self._runner = ZeroCopyRunner(self._predictor, f"{spec.model_dir}: Paddle Inference")
        self.input_names = self._runner.input_names
        self.output_names = self._runner.output_names

    def run(self, inputs: Mapping[str, np.ndarray]) -> List[np.ndarray]:
        return self._runner.run(inputs)

    def describe(self) -> Dict[str, Any]:
        import paddle

        return {
            "backend": self.name,
            "paddle": paddle.__version__,
            "model_dir": str(self.spec.model_dir),
            "device": str(self.options.device),
            **self._settings,
        }

    # --- per-device configuration ---------------------------------------------

    def _setup_cpu(self, config) -> None:
        opts = self.options
        config.disable_gpu()
        config.set_cpu_math_library_num_threads(opts.cpu_threads)
        if opts.use_onednn is None:
            onednn, why = auto_onednn(self.spec)
        else:
            onednn, why = opts.use_onednn, "set by the caller"
            if onednn and not _onednn_built():
                raise ConfigError("use_onednn=True, but this paddlepaddle was built without oneDNN")
        deleted: List[str] = []
        if onednn:
            _first(config, "enable_onednn", "enable_mkldnn")()
            _first(config, "set_onednn_cache_capacity", "set_mkldnn_cache_capacity")(opts.onednn_cache_capacity)
            deleted = onednn_deleted_passes(self.spec)
            for name in deleted:
                config.delete_pass(name)
        else:
            _first(config, "disable_onednn", "disable_mkldnn")()
        self._settings.update(cpu_threads=opts.cpu_threads, onednn=onednn, onednn_reason=why, deleted_passes=deleted)

    def _setup_gpu(self, config) -> None:
        # TensorRT lives in runtime/paddle_trt.py (PIR programs need its convert step).
        _first(config, "disable_onednn", "disable_mkldnn")()
        config.enable_use_gpu(self.options.gpu_memory_mb, self.options.device.index)
        if self.options.device.kind == "dcu":
            # PaddleX deletes these on ROCm builds; they miscompile there.
            config.delete_pass("conv2d_add_act_fuse_pass")
            config.delete_pass("conv2d_add_fuse_pass")
        self._settings.update(gpu_memory_mb=self.options.gpu_memory_mb)

    def _setup_xpu(self, config) -> None:
        config.enable_xpu()
        config.set_xpu_device_id(self.options.device.index)

    def _setup_custom_device(self, config) -> None:
        # npu, mlu, gcu, ...: Paddle's custom-device plugins.
        config.enable_custom_device(self.options.device.kind, self.options.device.index)


_DEVICE_SETUP = {
    "cpu": PaddleBackend._setup_cpu,
    "gpu": PaddleBackend._setup_gpu,
    "dcu": PaddleBackend._setup_gpu,
    "xpu": PaddleBackend._setup_xpu,
}


class ZeroCopyRunner:
    """A Paddle predictor fed through its zero-copy handles, behind a lock: a
    predictor is not thread-safe and serving may call one from several threads."""

    def __init__(self, predictor, label: str):
        self._predictor = predictor
        self._label = label
        self.input_names = list(predictor.get_input_names())
        self.output_names = list(predictor.get_output_names())
        self._inputs = [predictor.get_input_handle(n) for n in self.input_names]
        self._outputs = [predictor.get_output_handle(n) for n in self.output_names]
        self._lock = threading.Lock()

    def run(self, inputs: Mapping[str, np.ndarray]) -> List[np.ndarray]:
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise ModelError(f"{self._label}: missing model input(s) {missing}; the model takes {self.input_names}")
        with self._lock:
            for name, handle in zip(self.input_names, self._inputs):
                handle.copy_from_cpu(np.ascontiguousarray(inputs[name]))
            try:
                self._predictor.run()
            except Exception as e:  # Paddle raises assorted C++-mapped types
                raise ModelError(f"{self._label} failed to run the model: {e}") from e
            return [h.copy_to_cpu() for h in self._outputs]


def _first(obj, *names):
    """The first of these methods the installed Paddle has (3.3 renamed mkldnn -> onednn)."""
    for name in names:
        if hasattr(obj, name):
            return getattr(obj, name)
    raise AttributeError(f"paddle.inference.Config has none of {names}")


def _onednn_built() -> bool:
    import paddle

    core = paddle.base.core
    check = getattr(core, "is_compiled_with_onednn", None) or getattr(core, "is_compiled_with_mkldnn", None)
    return bool(check()) if check else True
