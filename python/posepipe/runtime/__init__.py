"""Inference backends behind one small interface (base.Backend).

`create_backend(spec, options, backend="paddle")` looks the backend up in
BACKENDS; a new backend (ONNX Runtime, OpenVINO) is one module and one entry."""
from __future__ import annotations

from typing import Dict, Type

from ..errors import ConfigError
from ..models.spec import ModelSpec
from .base import Backend, BackendUnavailable, RuntimeOptions
from .device import Device, parse_device
from .onnxruntime import OrtBackend  # cheap: onnxruntime itself is imported when a backend is built
from .paddle import PaddleBackend  # cheap: paddle itself is imported when a backend is built

BACKENDS: Dict[str, Type[Backend]] = {
    "paddle": PaddleBackend,
    "onnxruntime": OrtBackend,
}


def create_backend(spec: ModelSpec, options: RuntimeOptions, backend: str = "paddle") -> Backend:
    if options.use_hpip and backend == "paddle":
        # PaddleX's high-performance switch: measure the backends this device
        # has and keep the fastest that matches plain Paddle (runtime/select.py).
        # A backend named explicitly (not the default) wins over use_hpip.
        from .select import select_backend

        return select_backend(spec, options)
    try:
        cls = BACKENDS[backend]
    except KeyError:
        raise ConfigError(f"unknown backend {backend!r}; available: {', '.join(BACKENDS)}") from None
    return cls(spec, options)


__all__ = [
    "BACKENDS",
    "Backend",
    "BackendUnavailable",
    "Device",
    "RuntimeOptions",
    "create_backend",
    "parse_device",
]
