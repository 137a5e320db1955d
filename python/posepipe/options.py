"""posepipe's run options: how the pipeline runs, beyond what PaddleX's config
says it computes. `create_pipeline(..., **options)` takes these fields; the
`posepipe` and `posepipe serve` commands build their flags from them (flags.py)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional

from .errors import ConfigError
from .flags import setting
from .io import InputLimits

PRECISIONS = ("fp32", "fp16", "bf16", "int8", "auto")


@dataclass(frozen=True)
class PipelineOptions:
    cpu_threads: Optional[int] = setting(
        None,
        help="CPU threads for the models and the kernels; none: measured per model on this machine (cached)",
        aliases=("threads",),
    )
    prefetch: bool = setting(
        True, help="decode each batch of images only when the models need it (default: the next batch is decoded while the models run)"
    )
    use_onednn: Optional[bool] = setting(
        None, help="force oneDNN on or off on CPU (Paddle backend); none: posepipe picks it per model"
    )
    backend: str = setting(
        "paddle", help="inference backend when use_hpip is off", choices=("paddle", "onnxruntime", "openvino")
    )
    precision: Optional[str] = setting(
        None,
        help="compute precision: fp32; bf16 (CPUs with AMX/AVX512-BF16) or int8 (VNNI/AMX-INT8) via OpenVINO; "
        "fp16 (GPUs); auto: the fastest that passes the accuracy check on --calibration; none: fp32 on CPU, "
        "use_hpip's choice on GPUs (see README)",
        choices=PRECISIONS,
    )
    calibration: Any = setting(
        None,
        help="photos of people (a folder or an image file) that a lower precision is checked on, and int8 calibrated "
        "on; needed by int8 and auto",
        parse=str,
        metavar="DIR",
    )
    tune_malloc: bool = setting(
        True,
        help="leave glibc malloc as it is (default: keep large freed blocks mapped, process-wide, since Paddle "
        "otherwise page-faults its activations in again on every run; see README)",
    )
    input_limits: InputLimits = setting(default_factory=InputLimits, cli=False)

    def __post_init__(self) -> None:
        if self.cpu_threads is not None and (
            isinstance(self.cpu_threads, bool) or not isinstance(self.cpu_threads, int) or self.cpu_threads < 1
        ):
            raise ConfigError(f"cpu_threads must be a positive integer or None, got {self.cpu_threads!r}")
        for name in ("prefetch", "tune_malloc"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.use_onednn not in (None, True, False):
            raise ConfigError(f"use_onednn must be true, false or None, got {self.use_onednn!r}")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)} or None, got {self.precision!r}")
        calibration = self.calibration
        if calibration is not None:
            if isinstance(calibration, (str, os.PathLike)):
                calibration = os.fspath(calibration)
            elif isinstance(calibration, (list, tuple)) and calibration:
                calibration = tuple(os.fspath(c) if isinstance(c, os.PathLike) else c for c in calibration)
            else:
                raise ConfigError(
                    f"calibration must be a folder, an image file or a non-empty list of them, got {calibration!r}"
                )
            object.__setattr__(self, "calibration", calibration)
        if self.precision in ("int8", "auto") and self.calibration is None:
            raise ConfigError(
                f"precision={self.precision!r} needs calibration images (calibration=a folder or a list of photos of "
                "people, CLI --calibration DIR): int8 is calibrated on them, and a lower precision runs only after "
                "passing an accuracy check on them"
            )
