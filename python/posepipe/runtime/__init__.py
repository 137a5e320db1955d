"""Inference backends behind one small interface (base.Backend).

`create_backend(spec, options, backend="paddle", use_hpip=False, hpi=None)`
builds one: by name from BACKENDS, or with `use_hpip` the fastest that
matches plain Paddle (runtime/select.py), or the one PaddleX's `hpi_config`
names (runtime/hpi_config.py). A new backend is one module and one entry."""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Optional, Tuple, Type

from ..errors import ConfigError
from ..models.spec import ModelSpec
from .base import PRECISIONS, Backend, BackendUnavailable, RuntimeOptions
from .candidates import CANDIDATES, Candidate
from .device import Device, parse_device
from .hpi_config import HpiConfig, parse_hpi_config
from .onnx_export import SHIPPED_NAME
from .onnxruntime import OrtBackend  # cheap: onnxruntime itself is imported when a backend is built
from .openvino import OpenVinoBackend  # cheap: openvino itself is imported when a backend is built
from .paddle import PaddleBackend  # cheap: paddle itself is imported when a backend is built

log = logging.getLogger("posepipe")

BACKENDS: Dict[str, Type[Backend]] = {
    "paddle": PaddleBackend,
    "onnxruntime": OrtBackend,
    "openvino": OpenVinoBackend,
}
# Backends that run the model's ONNX: hpi_config's auto_paddle2onnx=False keeps them to a shipped file.
_ONNX_BACKENDS = ("openvino", "onnxruntime")


def create_backend(spec: ModelSpec, options: RuntimeOptions, backend: str = "paddle", **choice: Any) -> Backend:
    """`backend` names one of BACKENDS; an explicitly named backend (not the
    default) wins over `use_hpip`. `choice`: backend_builder's keywords."""
    return backend_builder(spec, options.device, backend, **choice)[1](options)


def backend_builder(
    spec: ModelSpec,
    device: Device,
    backend: str = "paddle",
    *,
    use_hpip: bool = False,
    hpi: Optional[HpiConfig] = None,
    candidates: Optional[Tuple[Candidate, ...]] = None,
) -> Tuple[str, Callable[[RuntimeOptions], Backend]]:
    """(a label for logs and tuning caches, how to build the backend for given
    options). `use_hpip` measures `candidates` (default: the device's) unless
    `hpi` names a backend."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; available: {', '.join(BACKENDS)}")
    if use_hpip and backend == "paddle":
        named = hpi.candidate(device) if hpi is not None else None
        if named is not None:
            return named.name, lambda options: named.build(spec, options)
        pool = tuple(candidates if candidates is not None else CANDIDATES.get(device.kind, ()))
        if hpi is not None and not hpi.auto_paddle2onnx and not (spec.model_dir / SHIPPED_NAME).is_file():
            log.info("posepipe hpip: %s: no shipped %s and auto_paddle2onnx is off; ONNX backends left out", spec.model_dir, SHIPPED_NAME)
            pool = tuple(c for c in pool if not c.name.startswith(_ONNX_BACKENDS))
        from .select import select_backend

        return "hpip", lambda options: select_backend(spec, options, candidates=pool)
    cls = BACKENDS[backend]
    return backend, lambda options: cls(spec, options)


__all__ = [
    "BACKENDS",
    "PRECISIONS",
    "Backend",
    "BackendUnavailable",
    "Device",
    "HpiConfig",
    "RuntimeOptions",
    "backend_builder",
    "create_backend",
    "parse_device",
    "parse_hpi_config",
]
