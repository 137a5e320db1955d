"""Paddle Inference + TensorRT on NVIDIA GPUs (Paddle 3's PIR TensorRT path).

PIR programs (`inference.json`) no longer take the old
`Config.enable_tensorrt_engine` route; Paddle 3 converts the program once
with `paddle.tensorrt.export.convert`, which builds the TensorRT engines for
a min/opt/max input profile and saves a new program + weights that hold them.
That converted model is the engine cache: it is written once under
`$POSEPIPE_HOME/trt/` (keyed by model hash, precision and profile) and loaded
directly by later starts.

Shapes: the yml's `Hpi` dynamic shapes (PaddleX's own TensorRT profile),
with the keypoint batch widened to posepipe's batches (see
runtime/trt_profile.py); the profile's top is the backend's max_batch.

Not measured in this repository's sessions (no GPU was available); written
against Paddle 3.3's `paddle.tensorrt.export` API.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Tuple

import numpy as np

from ..errors import ConfigError, ModelError
from ..models.spec import ModelSpec
from .base import Backend, BackendUnavailable, RuntimeOptions
from .device import Device
from .onnx_export import model_key, posepipe_home
from .paddle import ZeroCopyRunner, import_paddle_inference
from .paddle_import import import_paddle
from .trt_profile import trt_batch_profile

log = logging.getLogger("posepipe")

# Value ranges for TensorRT's shape warm-up data, per input name: normalised
# pixels, and PaddleDetection's (h, w) scale factors / image sizes.
_WARMUP_RANGES = {"image": (-2.0, 2.5), "scale_factor": (0.5, 1.5), "im_shape": (320.0, 640.0)}


def require_cuda_paddle(device: Device):
    """paddle, when it can run on this CUDA device; else BackendUnavailable with the reason."""
    try:
        paddle = import_paddle()
    except ImportError as e:
        raise BackendUnavailable(f"paddlepaddle-gpu is not installed ({e})") from e
    if not paddle.device.is_compiled_with_cuda():
        raise BackendUnavailable(f"paddlepaddle {paddle.__version__} is a CPU build; {device} needs paddlepaddle-gpu")
    count = paddle.device.cuda.device_count()
    if device.index >= count:
        raise BackendUnavailable(f"{device}: paddle sees {count} CUDA device(s)")
    return paddle


class PaddleTrtBackend(Backend):
    name = "paddle_tensorrt"

    def __init__(self, spec: ModelSpec, options: RuntimeOptions, precision: str = "fp16"):
        if options.device.kind != "gpu":
            raise ConfigError(f"Paddle TensorRT runs on NVIDIA gpu:N, not on {options.device}")
        if precision not in ("fp16", "fp32"):
            raise ConfigError(f"precision must be fp16 or fp32, got {precision!r}")
        paddle = require_cuda_paddle(options.device)
        paddle_inference = import_paddle_inference()
        try:
            from paddle.tensorrt import export as trt_export
        except ImportError as e:
            raise BackendUnavailable(
                f"paddlepaddle {paddle.__version__} has no paddle.tensorrt (a build with TensorRT is needed) ({e})"
            ) from e
        runtime_version = tuple(paddle_inference.get_trt_runtime_version())
        if not any(runtime_version):
            raise BackendUnavailable("the TensorRT libraries (libnvinfer) are not found; install TensorRT")
        self.spec = spec
        self.options = options
        self.precision = precision
        self._trt_version = ".".join(str(v) for v in runtime_version)
        self._profile = self._shape_profile(paddle_inference)
        self._prefix = self._converted(trt_export, paddle)

        config = paddle_inference.Config(f"{self._prefix}.json", f"{self._prefix}.pdiparams")
        config.enable_use_gpu(options.gpu_memory_mb, options.device.index)
        config.enable_new_ir(True)
        config.enable_new_executor()
        if options.enable_memory_optim:
            config.enable_memory_optim()
        config.disable_glog_info()
        try:
            predictor = paddle_inference.create_predictor(config)
        except Exception as e:
            raise ModelError(f"{self._prefix}: Paddle Inference cannot load the TensorRT program: {e}") from e
        self._runner = ZeroCopyRunner(predictor, f"{spec.model_dir}: Paddle TensorRT")
        self.input_names = self._runner.input_names
        self.output_names = self._runner.output_names
        self.max_batch = min(p[2][0] for p in self._profile.values()) if self._profile else None

    @classmethod
    def precisions(cls, device: Device) -> Tuple[str, ...]:
        return ("fp32", "fp16") if device.kind == "gpu" else ()

    def run(self, inputs: Mapping[str, np.ndarray]) -> List[np.ndarray]:
        return self._runner.run(inputs)

    def describe(self) -> Dict[str, Any]:
        import paddle

        return {
            "backend": self.name,
            "paddle": paddle.__version__,
            "tensorrt": self._trt_version,
            "model_dir": str(self.spec.model_dir),
            "device": str(self.options.device),
            "precision": self.precision,
            "engine_cache": str(self._prefix.parent),
            "trt_shapes": {k: [list(s) for s in v] for k, v in self._profile.items()},
            "max_batch": self.max_batch,
        }

    def _shape_profile(self, paddle_inference) -> Dict[str, Tuple[List[int], List[int], List[int]]]:
        # The program's declared input shapes (-1 = dynamic), read from a plain GPU predictor.
        config = paddle_inference.Config(str(self.spec.program_path), str(self.spec.params_path))
        config.enable_use_gpu(self.options.gpu_memory_mb, self.options.device.index)
        config.disable_glog_info()
        probe = paddle_inference.create_predictor(config)
        declared = {n: list(probe.get_input_handle(n).shape()) for n in probe.get_input_names()}
        profile = trt_batch_profile(self.spec, declared)
        if not profile:
            raise BackendUnavailable(f"{self.spec.model_dir}: no static TensorRT profile for inputs {declared}")
        return profile

    def _converted(self, trt_export, paddle) -> Path:
        """The TensorRT program's path prefix, converting once per model/precision/profile."""
        batches = "-".join(str(s[2][0]) for s in self._profile.values())
        folder = posepipe_home() / "trt" / (
            f"paddle-{self.spec.model_name}-{model_key(self.spec)[:16]}-{self.precision}-b{batches}-trt{self._trt_version}"
        )
        if (folder / "inference.json").is_file() and (folder / "inference.pdiparams").is_file():
            return folder / "inference"
        folder.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
        try:
            inputs = [
                trt_export.Input(
                    min_input_shape=tuple(shapes[0]),
                    optim_input_shape=tuple(shapes[1]),
                    max_input_shape=tuple(shapes[2]),
                    input_data_type="float32",
                    input_range=_WARMUP_RANGES.get(name, (0.0, 1.0)),
                    name=name,
                )
                for name, shapes in self._profile.items()
            ]
            config = trt_export.TensorRTConfig(inputs=inputs)
            config.precision_mode = (
                trt_export.PrecisionMode.FP16 if self.precision == "fp16" else trt_export.PrecisionMode.FP32
            )
            config.save_model_dir = str(work / "inference")
            log.info("posepipe: building TensorRT engines (%s) for %s -> %s", self.precision, self.spec.model_dir, folder)
            # Note: Paddle's converter loads onto CUDAPlace(0) whatever device is used later.
            trt_export.convert(str(self.spec.program_path.with_suffix("")), config)
            try:
                os.rename(work, folder)  # atomic publish of the whole converted model
            except OSError:
                if not (folder / "inference.json").is_file():
                    raise
        except BackendUnavailable:
            raise
        except Exception as e:
            raise ModelError(f"{self.spec.model_dir}: TensorRT conversion failed: {e}") from e
        finally:
            if work.exists():
                shutil.rmtree(work, ignore_errors=True)
        return folder / "inference"

