"""Inference backends behind one small interface (base.Backend).

`create_backend(spec, options, backend="paddle")` looks the backend up in
BACKENDS; a new backend (ONNX Runtime, OpenVINO) is one module and one entry."""
from __future__ import annotations

from typing import Dict, Type

from ..errors import ConfigError
from ..models.spec import ModelSpec
from .base import Backend, BackendUnavailable, RuntimeOptions
from .device import Device, parse_device
from .paddle import PaddleBackend  # cheap: paddle itself is imported when a backend is built

BACKENDS: Dict[str, Type[Backend]] = {
    "paddle": PaddleBackend,
}


def create_backend(spec: ModelSpec, options: RuntimeOptions, backend: str = "paddle") -> Backend:
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
