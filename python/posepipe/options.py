"""posepipe's run options: how the pipeline runs, beyond what PaddleX's config
says it computes. `create_pipeline(..., **options)` takes these fields; the
`posepipe` and `posepipe serve` commands build their flags from them (flags.py)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .errors import ConfigError
from .flags import setting
from .io import InputLimits


@dataclass(frozen=True)
class PipelineOptions:
    cpu_threads: Optional[int] = setting(
        None, help="CPU threads for the models and the kernels; none: all cores", aliases=("threads",)
    )
    kpt_batch_size: Optional[int] = setting(
        None,
        help="most person crops per keypoint-model call (every person of a detector batch is batched up to it); "
        "none: a per-model size for the device",
    )
    prefetch: bool = setting(
        True, help="decode each batch of images only when the models need it (default: the next batch is decoded while the models run)"
    )
    use_onednn: Optional[bool] = setting(
        None, help="force oneDNN on or off on CPU (Paddle backend); none: posepipe picks it per model"
    )
    backend: str = setting("paddle", help="inference backend when use_hpip is off", choices=("paddle", "onnxruntime"))
    tune_malloc: bool = setting(
        True,
        help="leave glibc malloc as it is (default: keep large freed blocks mapped, process-wide, since Paddle "
        "otherwise page-faults its activations in again on every run; see README)",
    )
    input_limits: InputLimits = setting(default_factory=InputLimits, cli=False)

    def __post_init__(self) -> None:
        for name in ("cpu_threads", "kpt_batch_size"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be a positive integer or None, got {value!r}")
        for name in ("prefetch", "tune_malloc"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.use_onednn not in (None, True, False):
            raise ConfigError(f"use_onednn must be true, false or None, got {self.use_onednn!r}")
