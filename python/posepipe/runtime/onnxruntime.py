"""ONNX Runtime backend: CPU, or NVIDIA GPUs through the CUDA / TensorRT
execution providers.

The ONNX file comes from runtime/onnx_export.py (shipped `inference.onnx`, or
a cached paddle2onnx conversion).

Batch limits (`max_batch`, honoured by batching.run_split). paddle2onnx
exports `multiclass_nms3` for batch 1 only (the real NanoDet file even fixes
its input to [1,...]; the converted PP-YOLOE declares a symbolic batch, yet
fails at batch 2 inside its NMS block: "Concat: mismatched dimensions of 2
and 1"). Such a model declares max_batch 1: it gets one session run per image
and the outputs are concatenated along axis 0, which is exactly the batched
layout (rows [M,6] stack image after image and the per-image counts [1]
become [N]). A TensorRT engine declares the largest batch of its
optimisation profile.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..errors import ConfigError, ModelError
from ..models.spec import ModelSpec
from .base import Backend, BackendUnavailable, RuntimeOptions
from .device import Device
from .onnx_export import model_key, nms_exported_for_one_image, onnx_for, posepipe_home
from .trt_profile import trt_batch_profile

log = logging.getLogger("posepipe")

INSTALL_HINT = (
    "the onnxruntime backend needs onnxruntime: pip install onnxruntime (CPU) or onnxruntime-gpu "
    "(NVIDIA CUDA / TensorRT), or pip install 'posepipe[onnx]'"
)
# Execution-provider short names (what `ep=` takes) -> ONNX Runtime's names.
PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
TRT_WORKSPACE_BYTES = 2 << 30


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as e:
        raise BackendUnavailable(f"{INSTALL_HINT} ({e})") from e
    return onnxruntime


class OrtBackend(Backend):
    name = "onnxruntime"

    @classmethod
    def precisions(cls, device: Device) -> Tuple[str, ...]:
        return ("fp32", "fp16") if device.kind == "gpu" else ("fp32",)

    def __init__(self, spec: ModelSpec, options: RuntimeOptions, ep: str = "auto", fp16: bool = True):
        """`ep`: "cpu", "cuda", "tensorrt", or "auto" (cpu on cpu; TensorRT,
        with CUDA then CPU for the nodes it cannot take, on gpu:N).
        `fp16` applies to TensorRT only (the CUDA provider runs the float32 graph)."""
        ort = import_onnxruntime()
        device = options.device
        if device.kind not in ("cpu", "gpu"):
            raise ConfigError(f"the onnxruntime backend runs on cpu or NVIDIA gpu:N, not on {device}")
        if ep == "auto":
            ep = "cpu" if device.kind == "cpu" else "tensorrt"
        if ep not in PROVIDERS:
            raise ConfigError(f"unknown onnxruntime execution provider {ep!r}; choose from {', '.join(PROVIDERS)}")
        if (ep == "cpu") != (device.kind == "cpu"):
            raise ConfigError(f"execution provider {ep!r} does not run on device {device}")
        wanted = PROVIDERS[ep]
        if wanted not in ort.get_available_providers():
            raise BackendUnavailable(
                f"onnxruntime {ort.__version__} has no {wanted} (available: {', '.join(ort.get_available_providers())}); "
                "install onnxruntime-gpu with matching CUDA/cuDNN (and TensorRT) libraries"
            )
        self.spec = spec
        self.options = options
        self.ep = ep
        self.fp16 = bool(fp16) and ep == "tensorrt"
        self.precision = "fp16" if self.fp16 else "fp32"
        self.onnx = onnx_for(spec)
        self._per_image = nms_exported_for_one_image(spec)
        self._engine_cache: Optional[Path] = None
        self._profile: Dict[str, Tuple[List[int], List[int], List[int]]] = {}
        if ep == "tensorrt":
            self._profile = trt_batch_profile(spec, _declared_shapes(ort, self.onnx.path), one_image=self._per_image)

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = options.cpu_threads
        # One graph at a time: parallelism comes from the intra-op pool.
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Pool threads spin between the ops of a run (a sleeping thread takes
        # long to wake for each of ~100 small ops) and stop as soon as the run
        # returns: posepipe runs two sessions plus C++ kernels in turn, and a
        # session still spinning after its run steals the cores of the next
        # step. Measured, 2 cores, whole pipeline, NanoDet + MoveNet: 6 persons
        # 68 ms vs 71 ms never spinning vs 104 ms spinning past the run.
        so.add_session_config_entry("session.intra_op.allow_spinning", "1")
        so.add_session_config_entry("session.force_spinning_stop", "1")
        # paddle2onnx leaves unused initialisers that ORT reports one warning each for.
        so.log_severity_level = 3
        try:
            session = ort.InferenceSession(str(self.onnx.path), sess_options=so, providers=self._providers(ort))
        except Exception as e:  # ORT raises its own pybind types (Fail, InvalidGraph, ...)
            raise ModelError(f"{self.onnx.path}: ONNX Runtime cannot load this model with {wanted}: {e}") from e
        # ORT quietly falls back to the CPU when a GPU provider's libraries fail
        # to load; a silent CPU run would be measured as "the GPU backend".
        if session.get_providers()[0] != wanted:
            raise BackendUnavailable(
                f"onnxruntime could not start {wanted} (session runs on {session.get_providers()}); "
                "check the CUDA/cuDNN/TensorRT libraries on LD_LIBRARY_PATH"
            )
        self._session = session
        inputs = session.get_inputs()
        self.input_names = [i.name for i in inputs]
        self.output_names = [o.name for o in session.get_outputs()]
        batch_dim = inputs[0].shape[0] if inputs and inputs[0].shape else None
        if self._per_image or batch_dim == 1:
            self.max_batch = 1
        elif self._profile:
            self.max_batch = min(p[2][0] for p in self._profile.values())

    def run(self, inputs: Mapping[str, np.ndarray]) -> List[np.ndarray]:
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise ModelError(f"{self.spec.model_dir}: missing model input(s) {missing}; the model takes {self.input_names}")
        feeds = {n: np.ascontiguousarray(inputs[n]) for n in self.input_names}
        try:
            return self._session.run(self.output_names, feeds)
        except Exception as e:
            raise ModelError(f"{self.spec.model_dir}: ONNX Runtime failed to run the model: {e}") from e

    def describe(self) -> Dict[str, Any]:
        import onnxruntime

        out: Dict[str, Any] = {
            "backend": self.name,
            "onnxruntime": onnxruntime.__version__,
            "model_dir": str(self.spec.model_dir),
            "device": str(self.options.device),
            "execution_provider": PROVIDERS[self.ep],
            "providers": list(self._session.get_providers()),
            "onnx": str(self.onnx.path),
            "onnx_source": self.onnx.source,
            "cpu_threads": self.options.cpu_threads,
            "max_batch": self.max_batch,
        }
        if self.ep == "tensorrt":
            out.update(fp16=self.fp16, engine_cache=str(self._engine_cache))
        return out

    # --- GPU providers -----------------------------------------------------

    def _providers(self, ort) -> List[Any]:
        if self.ep == "cpu":
            return ["CPUExecutionProvider"]
        index = self.options.device.index
        cuda = ("CUDAExecutionProvider", {"device_id": index})
        if self.ep == "cuda":
            return [cuda, "CPUExecutionProvider"]
        # Engines are keyed by ORT on the graph and shapes; a folder per model
        # and precision keeps them findable and removable.
        cache = posepipe_home() / "trt" / f"ort-{self.spec.model_name}-{model_key(self.spec)[:16]}-{'fp16' if self.fp16 else 'fp32'}"
        cache.mkdir(parents=True, exist_ok=True)
        self._engine_cache = cache
        trt: Dict[str, Any] = {
            "device_id": index,
            "trt_fp16_enable": self.fp16,
            "trt_max_workspace_size": TRT_WORKSPACE_BYTES,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(cache),
        }
        if self._profile:
            # One engine for every batch size in the profile, instead of one
            # engine built per new input shape at run time.
            fmt = lambda i: ",".join(f"{n}:{'x'.join(map(str, s[i]))}" for n, s in self._profile.items())  # noqa: E731
            trt.update(trt_profile_min_shapes=fmt(0), trt_profile_opt_shapes=fmt(1), trt_profile_max_shapes=fmt(2))
        # Nodes TensorRT cannot take (e.g. NonMaxSuppression on old TensorRT) run on CUDA, then CPU.
        return [("TensorrtExecutionProvider", trt), cuda, "CPUExecutionProvider"]


def _declared_shapes(ort, path: Path) -> Dict[str, Sequence[Any]]:
    """Input shapes as the ONNX file declares them (ints, or names for dynamic axes)."""
    so = ort.SessionOptions()
    so.log_severity_level = 3
    probe = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    return {i.name: list(i.shape) for i in probe.get_inputs()}
