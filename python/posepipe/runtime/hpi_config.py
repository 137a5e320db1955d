"""PaddleX's `hpi_config` (its HPIConfig, PaddleX 3.7.2
`inference/models/runners/hpi/config.py`): which backend `use_hpip` runs.

    {"backend": "paddle" | "openvino" | "onnxruntime" | "tensorrt" | "om",
     "backend_config": {...},      # per backend, below
     "auto_config": true,          # false: use exactly `backend`
     "auto_paddle2onnx": true,     # false: ONNX backends only with a shipped inference.onnx
     "model_name", "device_type", "device_id", "hpi_info"}   # PaddleX fills these; accepted, not used

`backend_config`: paddle `run_mode` ("paddle" plain kernels, "mkldnn"
oneDNN, "trt_fp32" / "trt_fp16" Paddle TensorRT); openvino / onnxruntime
`cpu_num_threads`; tensorrt `precision` ("fp32", the default, or "fp16").

As in PaddleX, it applies with `use_hpip=True`; a named backend is then
used as named (PaddleX checks nothing; posepipe builds it without the
measurement), and without one posepipe measures its candidates. Keys PaddleX
does not know are refused with their name, where PaddleX would drop them."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple

from ..errors import ConfigError
from .candidates import Candidate, openvino, ort, paddle, paddle_trt
from .device import Device

BACKEND_NAMES = ("paddle", "openvino", "onnxruntime", "tensorrt", "om")
_KEYS = frozenset(
    {"backend", "backend_config", "auto_config", "auto_paddle2onnx", "model_name", "device_type", "device_id", "hpi_info"}
)
_RUN_MODES = ("paddle", "mkldnn", "trt_fp32", "trt_fp16", "paddle_fp16")


@dataclass(frozen=True)
class HpiConfig:
    backend: Optional[str] = None
    backend_config: Mapping[str, Any] = field(default_factory=dict)
    auto_config: bool = True
    auto_paddle2onnx: bool = True

    @property
    def cpu_threads(self) -> Optional[int]:
        value = self.backend_config.get("cpu_num_threads")
        return int(value) if value is not None else None

    def candidate(self, device: Device) -> Optional[Candidate]:
        """The backend this config names, as a candidate to build; None: measure them all."""
        if self.backend is None:
            return None
        if self.backend == "om":
            raise ConfigError("hpi_config: backend 'om' runs on Ascend NPUs through PaddleX's ultra-infer; posepipe has no OM backend")
        if self.backend == "openvino":
            return Candidate("openvino", "fp32", openvino("fp32"))
        if self.backend == "onnxruntime":
            ep = "cpu" if device.kind == "cpu" else "cuda"
            return Candidate(f"onnxruntime_{ep}" if ep != "cpu" else "onnxruntime", "fp32", ort(ep))
        if self.backend == "tensorrt":
            precision = str(self.backend_config.get("precision", "fp32"))
            if precision != "fp16":  # fp32 TensorRT: the ORT provider with fp16 off
                return Candidate("onnxruntime_tensorrt_fp32", "fp32", _ort_trt_fp32)
            return Candidate("onnxruntime_tensorrt_fp16", "fp16", ort("tensorrt"))
        run_mode = self.backend_config.get("run_mode")
        if run_mode == "mkldnn":
            return Candidate("paddle_onednn", "fp32", paddle(True))
        if run_mode == "paddle":
            return Candidate("paddle", "fp32", paddle(False) if device.kind == "cpu" else paddle(None))
        if run_mode in ("trt_fp32", "trt_fp16"):
            precision = run_mode[4:]
            return Candidate(f"paddle_tensorrt_{precision}", precision, paddle_trt(precision))
        if run_mode == "paddle_fp16":
            raise ConfigError("hpi_config: run_mode 'paddle_fp16' is not supported by posepipe; use 'trt_fp16' on GPUs")
        return Candidate("paddle", "fp32", paddle(None))


def _ort_trt_fp32(spec, options):
    from .onnxruntime import OrtBackend

    return OrtBackend(spec, options, ep="tensorrt", fp16=False)


def parse_hpi_config(value: Any, where: str = "hpi_config") -> Optional[HpiConfig]:
    if value is None:
        return None
    if hasattr(value, "model_dump"):  # PaddleX's own HPIConfig object
        value = value.model_dump(exclude_none=True)
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a mapping (PaddleX's hpi_config), got {type(value).__name__}")
    unknown = sorted(set(value) - _KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(_KEYS))})")
    backend = value.get("backend")
    if backend is not None and backend not in BACKEND_NAMES:
        raise ConfigError(f"{where}: backend must be one of {', '.join(BACKEND_NAMES)}, got {backend!r}")
    backend_config = value.get("backend_config") or {}
    if not isinstance(backend_config, Mapping):
        raise ConfigError(f"{where}: backend_config must be a mapping, got {backend_config!r}")
    run_mode = backend_config.get("run_mode")
    if run_mode is not None and run_mode not in _RUN_MODES:
        raise ConfigError(f"{where}: backend_config.run_mode must be one of {', '.join(_RUN_MODES)}, got {run_mode!r}")
    precision = backend_config.get("precision")
    if precision is not None and precision not in ("fp32", "fp16"):
        raise ConfigError(f"{where}: backend_config.precision must be fp32 or fp16, got {precision!r}")
    threads = backend_config.get("cpu_num_threads")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"{where}: backend_config.cpu_num_threads must be a positive integer, got {threads!r}")
    flags: Dict[str, bool] = {}
    for name in ("auto_config", "auto_paddle2onnx"):
        flag = value.get(name, True)
        if not isinstance(flag, bool):
            raise ConfigError(f"{where}: {name} must be true or false, got {flag!r}")
        flags[name] = flag
    if not flags["auto_config"] and backend is None:
        raise ConfigError(f"{where}: auto_config is false, so a backend must be named")
    return HpiConfig(backend=backend, backend_config=dict(backend_config), **flags)


def merge_hpi_configs(*configs: Optional[Mapping[str, Any]]) -> Optional[Dict[str, Any]]:
    """PaddleX's merge: later (more specific) dicts win key by key."""
    present: Tuple[Mapping[str, Any], ...] = tuple(c for c in configs if c is not None)
    if not present:
        return None
    merged: Dict[str, Any] = {}
    for config in present:
        if hasattr(config, "model_dump"):
            config = config.model_dump(exclude_none=True)
        if not isinstance(config, Mapping):
            raise ConfigError(f"hpi_config: expected a mapping (PaddleX's hpi_config), got {type(config).__name__}")
        merged.update(config)
    return merged
