"""PaddleX pipeline YAML <-> typed dataclasses.

posepipe reads and writes PaddleX's `human_keypoint_detection` pipeline schema
unchanged, so a user's existing YAML works and `--get_pipeline_config` writes one
that PaddleX accepts too."""
from __future__ import annotations

import dataclasses
import numbers
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple, Union

import yaml

from .errors import ConfigError

PIPELINE_NAME = "human_keypoint_detection"


@dataclass
class DetectorConfig:
    model_name: str = "PP-YOLOE-S_human"
    model_dir: Optional[str] = None
    batch_size: int = 1
    # None: the model's own `draw_threshold` from inference.yml.
    threshold: Optional[float] = None
    # (w, h) of the detector input; None: the Resize size in inference.yml.
    img_size: Optional[Tuple[int, int]] = None
    module_name: str = "object_detection"
    # PaddleX's per-module hpi_config (runtime/hpi_config.py), merged key by
    # key over the pipeline's.
    hpi_config: Optional[Dict[str, Any]] = None
    # PaddleX's per-module use_hpip: wins over the pipeline's, even over
    # create_pipeline's argument; None: the pipeline's.
    use_hpip: Optional[bool] = None


@dataclass
class KeypointConfig:
    model_name: str = "PP-TinyPose_128x96"
    model_dir: Optional[str] = None
    # Crops per keypoint-model call. PaddleX runs one person per call whatever
    # this says; posepipe batches all persons of a detector batch, in calls of
    # the size measured fastest on this machine (runtime/tuning.py) when this
    # is 1 (PaddleX's default), and of at most this many when it is above 1.
    batch_size: int = 1
    flip: bool = False
    # None: what inference.yml's TopDownEvalAffine says.
    use_udp: Optional[bool] = None
    module_name: str = "keypoint_detection"
    hpi_config: Optional[Dict[str, Any]] = None
    use_hpip: Optional[bool] = None


@dataclass
class PipelineConfig:
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    keypoints: KeypointConfig = field(default_factory=KeypointConfig)
    pipeline_name: str = PIPELINE_NAME
    # PaddleX's pipeline-level hpi_config and use_hpip: create_pipeline's
    # arguments, when given (not None), replace them.
    hpi_config: Optional[Dict[str, Any]] = None
    use_hpip: Optional[bool] = None

    @classmethod
    def default(cls) -> "PipelineConfig":
        return cls()

    @classmethod
    def from_dict(cls, data: Dict[str, Any], source: str = "config") -> "PipelineConfig":
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
        name = data.get("pipeline_name", PIPELINE_NAME)
        if name != PIPELINE_NAME:
            raise ConfigError(f"{source}: pipeline_name is {name!r}; posepipe runs only {PIPELINE_NAME!r}")
        sub = data.get("SubModules")
        if not isinstance(sub, dict):
            raise ConfigError(f"{source}: missing the 'SubModules' mapping")
        for key in ("ObjectDetection", "KeypointDetection"):
            if not isinstance(sub.get(key), dict):
                raise ConfigError(f"{source}: missing the 'SubModules.{key}' mapping")
        det = _build(DetectorConfig, sub["ObjectDetection"], f"{source}: SubModules.ObjectDetection")
        kpt = _build(KeypointConfig, sub["KeypointDetection"], f"{source}: SubModules.KeypointDetection")
        hpi = data.get("hpi_config")
        if hpi is not None and not isinstance(hpi, dict):
            raise ConfigError(f"{source}: hpi_config must be a mapping, got {hpi!r}")
        use_hpip = check_use_hpip(data.get("use_hpip"), f"{source}: use_hpip")
        return cls(detector=det, keypoints=kpt, pipeline_name=name, hpi_config=hpi, use_hpip=use_hpip)

    @classmethod
    def from_yaml(cls, path: Union[str, os.PathLike]) -> "PipelineConfig":
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise ConfigError(f"{path}: pipeline config file not found")
        try:
            with open(path, "r", encoding="utf-8") as f:
                data = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({e})") from None
        return cls.from_dict(data, source=path)

    def to_dict(self) -> Dict[str, Any]:
        """PaddleX's schema, key for key."""
        det, kpt = self.detector, self.keypoints
        out: Dict[str, Any] = {
            "pipeline_name": self.pipeline_name,
            "SubModules": {
                "ObjectDetection": {
                    "module_name": det.module_name,
                    "model_name": det.model_name,
                    "model_dir": det.model_dir,
                    "batch_size": det.batch_size,
                    "threshold": det.threshold,
                    "img_size": list(det.img_size) if det.img_size else None,
                },
                "KeypointDetection": {
                    "module_name": kpt.module_name,
                    "model_name": kpt.model_name,
                    "model_dir": kpt.model_dir,
                    "batch_size": kpt.batch_size,
                    "flip": kpt.flip,
                    "use_udp": kpt.use_udp,
                },
            },
        }
        # use_hpip and hpi_config only when set, so the default YAML stays PaddleX's key for key.
        for target, owner in ((out, self), (out["SubModules"]["ObjectDetection"], det),
                              (out["SubModules"]["KeypointDetection"], kpt)):
            for key in ("use_hpip", "hpi_config"):
                if getattr(owner, key) is not None:
                    target[key] = getattr(owner, key)
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def load_config(pipeline: Union[str, os.PathLike, None], config: Optional[Dict[str, Any]]) -> PipelineConfig:
    """The config for `create_pipeline(pipeline=..., config=...)`: an explicit
    dict wins, then a YAML path, then the built-in pipeline name."""
    if config is not None:
        return PipelineConfig.from_dict(config)
    if pipeline is None or os.fspath(pipeline) == PIPELINE_NAME:
        return PipelineConfig.default()
    text = os.fspath(pipeline)
    if text.endswith((".yaml", ".yml")) or os.path.exists(text):
        return PipelineConfig.from_yaml(text)
    raise ConfigError(
        f"unknown pipeline {text!r}: give {PIPELINE_NAME!r} or the path of a pipeline YAML file"
    )


def _build(cls, raw: Dict[str, Any], where: str):
    known = {f.name for f in dataclasses.fields(cls)}
    values: Dict[str, Any] = {}
    for key, value in raw.items():
        key = "img_size" if key == "imgsz" else key  # PaddleX reads both spellings
        if key not in known:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(known))})")
        values[key] = value
    obj = cls(**values)
    _check(obj, where)
    return obj


def _check(obj, where: str) -> None:
    if not isinstance(obj.model_name, str) or not obj.model_name:
        raise ConfigError(f"{where}: model_name must be a non-empty string")
    if obj.model_dir is not None and not isinstance(obj.model_dir, (str, os.PathLike)):
        raise ConfigError(f"{where}: model_dir must be a path or null")
    if isinstance(obj.batch_size, bool) or not isinstance(obj.batch_size, int) or obj.batch_size < 1:
        raise ConfigError(f"{where}: batch_size must be a positive integer, got {obj.batch_size!r}")
    if obj.hpi_config is not None and not isinstance(obj.hpi_config, dict):
        raise ConfigError(f"{where}: hpi_config must be a mapping, got {obj.hpi_config!r}")
    obj.use_hpip = check_use_hpip(obj.use_hpip, f"{where}: use_hpip")
    if isinstance(obj, DetectorConfig):
        obj.threshold = check_threshold(obj.threshold, f"{where}: threshold")
        obj.img_size = parse_img_size(obj.img_size, where)
    else:
        if not isinstance(obj.flip, bool):
            raise ConfigError(f"{where}: flip must be true or false, got {obj.flip!r}")
        if obj.use_udp is not None and not isinstance(obj.use_udp, bool):
            raise ConfigError(f"{where}: use_udp must be true, false or null, got {obj.use_udp!r}")


def check_use_hpip(value: Any, name: str) -> Optional[bool]:
    """use_hpip as true, false or None (not said here)."""
    if value is None or isinstance(value, bool):
        return value
    raise ConfigError(f"{name} must be true or false, got {value!r}")


def check_threshold(value: Any, name: str) -> Optional[float]:
    """A person-detection score threshold as a float in 0..1, or None (the
    model's own draw_threshold): the one rule for the API, the config and the
    CLI. `name` is how the caller's user spells the setting."""
    if value is None:
        return None
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and 0.0 <= float(value) <= 1.0:
        return float(value)  # NaN fails the comparison above
    raise ConfigError(f"{name} must be a number between 0 and 1 (or None: the model's own), got {value!r}")


def parse_img_size(value, where: str) -> Optional[Tuple[int, int]]:
    """PaddleX accepts an int (square) or a (w, h) pair."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 8192 for v in value)
    ):
        return (int(value[0]), int(value[1]))
    raise ConfigError(f"{where}: img_size must be an integer or a [w, h] pair of integers in 1..8192, got {value!r}")
