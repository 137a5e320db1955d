"""Model directories: inference.yml parsing (spec) and name -> directory (official)."""
from .official import OFFICIAL_MODELS, resolve_model_dir
from .spec import DetectorPreprocess, KeypointPreprocess, ModelSpec, load_model_spec

__all__ = [
    "OFFICIAL_MODELS",
    "DetectorPreprocess",
    "KeypointPreprocess",
    "ModelSpec",
    "load_model_spec",
    "resolve_model_dir",
]
