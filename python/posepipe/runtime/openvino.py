"""OpenVINO backend (CPU): the model's ONNX (shipped `inference.onnx`, or
posepipe's paddle2onnx conversion, runtime/onnx_export.py), or an int8 model
quantized from it (runtime/quantize.py).

Precision is OpenVINO's inference precision hint: fp32 is asked for
explicitly, since on CPUs with AMX OpenVINO would otherwise run bf16 by
default; bf16 runs where the CPU has AMX-BF16 or AVX512-BF16 (elsewhere
OpenVINO would quietly run fp32 under that name, so the backend refuses);
int8 runs a model with quantize/dequantize pairs, its other ops in bf16
where the CPU has bf16 units, else fp32. (Measured on a 2-core Xeon with
AMX, loaded machine, ratios from one alternating run: NanoDet int8 with the
rest in bf16 took 0.42x the time of bf16, MoveNet Thunder at batch 4 0.59x;
with the rest in fp32, 0.97x and 1.5x of bf16.)

One compiled model per batch size: a static input shape is 10-30 % faster
than one dynamic-batch compilation (MoveNet Thunder, 2 threads, Xeon with
AMX: 17.4 vs 22.0 ms at batch 1, 50.5 vs 60.9 ms at batch 4), and the
pipeline sends only power-of-two batches, warmed up at start. Compiled
models are cached by OpenVINO in `$POSEPIPE_HOME/openvino/`, so a later
start loads them instead of compiling.

Batch limits: a graph with NMS exported for one image (paddle2onnx's
`multiclass_nms3`), or one whose ONNX input has a fixed batch of 1 (the real
NanoDet), declares max_batch 1; batching.run_split then feeds it image by
image.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from ..errors import ConfigError, ModelError
from ..models.spec import ModelSpec
from .base import Backend, BackendUnavailable, RuntimeOptions
from .cpu import cpu_info
from .device import Device
from .onnx_export import nms_exported_for_one_image, onnx_for, posepipe_home

log = logging.getLogger("posepipe")

INSTALL_HINT = "the openvino backend needs OpenVINO: pip install openvino, or pip install 'posepipe[openvino]'"
# posepipe's precision -> OpenVINO's INFERENCE_PRECISION_HINT (int8: for the
# ops left unquantized; bf16 instead where the CPU has the units).
PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}


def import_openvino():
    try:
        import openvino
    except ImportError as e:
        raise BackendUnavailable(f"{INSTALL_HINT} ({e})") from e
    return openvino


def openvino_cache_dir() -> Path:
    return posepipe_home() / "openvino"


class OpenVinoBackend(Backend):
    name = "openvino"

    @classmethod
    def precisions(cls, device: Device) -> Tuple[str, ...]:
        if device.kind != "cpu":
            return ()
        cpu = cpu_info()
        return ("fp32",) + (("bf16",) if cpu.has_bf16_units else ()) + (("int8",) if cpu.has_int8_units else ())

    def __init__(
        self, spec: ModelSpec, options: RuntimeOptions, precision: str = "fp32", model_path: Optional[Path] = None
    ):
        """`model_path`: the model file to run (an int8 IR from
        runtime/quantize.py); default: the model's ONNX."""
        ov = import_openvino()
        if options.device.kind != "cpu":
            raise ConfigError(f"the openvino backend runs on cpu, not on {options.device}")
        if precision not in PRECISION_HINTS:
            raise ConfigError(f"the openvino backend runs {', '.join(PRECISION_HINTS)}, not {precision!r}")
        if precision == "bf16" and "bf16" not in self.precisions(options.device):
            raise BackendUnavailable(
                f"bf16 needs a CPU with AMX-BF16 or AVX512-BF16; this one ({cpu_info().summary()}) has neither"
            )
        if precision == "int8" and model_path is None:
            raise ConfigError("an int8 openvino backend needs a quantized model (runtime/quantize.py)")
        self.spec = spec
        self.options = options
        self.precision = precision
        self.onnx = onnx_for(spec)
        self.model_path = Path(model_path) if model_path is not None else self.onnx.path
        self._core = ov.Core()
        self._cache_dir = openvino_cache_dir()
        try:
            self._cache_dir.mkdir(parents=True, exist_ok=True)
            self._core.set_property({"CACHE_DIR": str(self._cache_dir)})
        except OSError as e:  # no cache: every start compiles, nothing else changes
            log.warning("posepipe: OpenVINO's model cache %s is not writable (%s); set POSEPIPE_HOME", self._cache_dir, e)
            self._cache_dir = None
        try:
            self._model = self._core.read_model(str(self.model_path))
        except Exception as e:  # OpenVINO raises RuntimeError subclasses with the parser's message
            raise ModelError(f"{self.model_path}: OpenVINO cannot read this model: {e}") from e
        self.input_names = [port.get_any_name() for port in self._model.inputs]
        self.output_names = [port.get_any_name() for port in self._model.outputs]
        self._config = {
            "INFERENCE_NUM_THREADS": int(options.cpu_threads),
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
            "INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision],
        }
        if precision == "int8" and "bf16" in self.precisions(options.device):
            self._config["INFERENCE_PRECISION_HINT"] = "bf16"
        first = self._model.inputs[0].get_partial_shape()
        fixed_one = first.rank.is_static and first.rank.get_length() > 0 and first[0].is_static and first[0].get_length() == 1
        if fixed_one or nms_exported_for_one_image(spec):
            self.max_batch = 1
        self._compiled: Dict[int, Any] = {}  # batch -> infer request
        self._lock = threading.Lock()

    def run(self, inputs: Mapping[str, np.ndarray]) -> List[np.ndarray]:
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise ModelError(f"{self.spec.model_dir}: missing model input(s) {missing}; the model takes {self.input_names}")
        feeds = {n: np.ascontiguousarray(inputs[n]) for n in self.input_names}
        batch = len(feeds[self.input_names[0]])
        with self._lock:
            request = self._compiled.get(batch) or self._compile(batch, feeds)
            try:
                # Inputs are read in place; outputs come back as copies (share_outputs
                # off), since the request reuses its output tensors on the next call.
                results = request.infer(feeds, share_inputs=True, share_outputs=False)
            except Exception as e:
                raise ModelError(f"{self.spec.model_dir}: OpenVINO failed to run the model: {e}") from e
            return [results[i] for i in range(len(self.output_names))]

    def _compile(self, batch: int, feeds: Mapping[str, np.ndarray]):
        model = self._model.clone()
        shapes = {}
        for port in model.inputs:
            name = port.get_any_name()
            if port.get_partial_shape().is_dynamic:
                shapes[name] = list(feeds[name].shape)
        try:
            if shapes:
                model.reshape(shapes)
            compiled = self._core.compile_model(model, "CPU", self._config)
        except Exception as e:
            raise ModelError(f"{self.model_path}: OpenVINO cannot compile this model for batch {batch}: {e}") from e
        log.debug("posepipe: OpenVINO compiled %s for batch %d (%s)", self.spec.model_dir, batch, self.precision)
        request = compiled.create_infer_request()
        self._compiled[batch] = request
        return request

    def describe(self) -> Dict[str, Any]:
        import openvino

        return {
            "backend": self.name,
            "openvino": openvino.__version__,
            "model_dir": str(self.spec.model_dir),
            "device": str(self.options.device),
            "model_file": str(self.model_path),
            "onnx_source": self.onnx.source,
            "precision": self.precision,
            "inference_precision_hint": self._config["INFERENCE_PRECISION_HINT"],
            "cpu_threads": self.options.cpu_threads,
            "max_batch": self.max_batch,
            "model_cache": str(self._cache_dir) if self._cache_dir else None,
        }
