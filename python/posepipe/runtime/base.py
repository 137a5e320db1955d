"""The one interface every inference backend implements, and its settings."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from ..errors import ConfigError, PosepipeError
from .cpu import usable_cores
from .device import Device

# What a model can compute in. fp32 is the reference every other is checked against.
PRECISIONS = ("fp32", "fp16", "bf16", "int8")


class BackendUnavailable(PosepipeError, ImportError):
    """The package a backend needs (e.g. paddlepaddle) is not installed."""


@dataclass(frozen=True)
class RuntimeOptions:
    """How a backend runs a model. Same results whatever is chosen here, up to
    float rounding (see runtime/paddle.py for the oneDNN measurements)."""

    device: Device = field(default_factory=Device)
    # None: the cores this process may use. Resolved at construction, so describe() shows the number.
    cpu_threads: Optional[int] = None
    # None: posepipe decides per model (runtime/paddle.py: auto_onednn).
    use_onednn: Optional[bool] = None
    enable_memory_optim: bool = True
    # oneDNN's cache of primitives per input shape; the keypoint batch size varies.
    onednn_cache_capacity: int = 16
    gpu_memory_mb: int = 100  # initial GPU memory pool, as PaddleX uses

    def __post_init__(self):
        threads = self.cpu_threads if self.cpu_threads is not None else usable_cores()
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ConfigError(f"cpu_threads must be a positive integer or None, got {self.cpu_threads!r}")
        object.__setattr__(self, "cpu_threads", threads)
        if self.use_onednn not in (None, True, False):
            raise ConfigError(f"use_onednn must be true, false or null, got {self.use_onednn!r}")


class Backend(ABC):
    """Runs one model: named float arrays in, the model's outputs out (in the
    model's output order).

    A backend says what it can take: `max_batch` is the most items one run()
    accepts (None: any; 1 for graphs exported for one image, the top of a
    TensorRT profile), and batching.run_split keeps every call within it;
    `precision` is what this instance computes in, `precisions(device)` what
    the backend can compute in on a device."""

    name: str = ""
    input_names: List[str]
    output_names: List[str]
    max_batch: Optional[int] = None
    precision: str = "fp32"

    @classmethod
    def precisions(cls, device: Device) -> Tuple[str, ...]:
        return ("fp32",)

    @abstractmethod
    def run(self, inputs: Mapping[str, np.ndarray]) -> List[np.ndarray]:
        ...

    @abstractmethod
    def describe(self) -> Dict[str, Any]:
        """Backend, device and the settings in force, for result metadata and logs."""
