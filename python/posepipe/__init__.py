"""posepipe: fast top-down human keypoint detection, a drop-in for PaddleX's
`human_keypoint_detection` pipeline."""
from __future__ import annotations

from typing import Any, Dict, Optional

from .errors import ConfigError, DatasetError, DeviceError, InputError, ModelError, PosepipeError

__version__ = "0.1.0"

__all__ = [
    "create_pipeline",
    "ConfigError",
    "DatasetError",
    "DeviceError",
    "InputError",
    "ModelError",
    "PosepipeError",
    "__version__",
]


def create_pipeline(
    pipeline: Optional[str] = "human_keypoint_detection",
    config: Optional[Dict[str, Any]] = None,
    device: Optional[str] = None,
    use_hpip: Optional[bool] = None,
    hpi_config: Optional[Dict[str, Any]] = None,
    **options: Any,
):
    """Build the keypoint pipeline, as `paddlex.create_pipeline` does.

    `pipeline` is the pipeline name or the path of a PaddleX pipeline YAML;
    `config` (a dict in the same schema) wins over it. `use_hpip` and
    `hpi_config` (which backend use_hpip runs; runtime/hpi_config.py) are
    PaddleX's: when given (not None) they replace the config's top-level
    `use_hpip` / `hpi_config`; use_hpip is off when neither says. Extra
    keyword options are posepipe's (posepipe.options.PipelineOptions)."""
    from .pipeline import KeypointPipeline  # lazy: keeps `import posepipe` light

    return KeypointPipeline.from_config(
        pipeline, config, device=device, use_hpip=use_hpip, hpi_config=hpi_config, **options
    )
