"""The Ray settings, declared once; `posepipe serve` and `posepipe` build their
`--ray...` flags from these fields (flags.py). Importing this needs no Ray.

RayCluster: where to run (both commands). RayServeSettings: how many pipeline
replicas serve HTTP. RayBatchSettings: the actor pool of a batch job."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Mapping, Optional

from ..config import load_config
from ..errors import ConfigError
from ..flags import setting


def _positive(owner: str, name: str, value: Any, kind: type = int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int) or value <= 0:
        noun = "a positive number" if kind is float else "a positive integer"
        raise ConfigError(f"{owner}.{name} must be {noun} or None, got {value!r}")


@dataclass(frozen=True)
class RayCluster:
    ray: bool = setting(
        False, help="run on Ray instead of in this process (needs the ray extra: pip install 'posepipe[ray]')"
    )
    ray_address: Optional[str] = setting(
        None,
        help="the Ray cluster to join: auto (the one this machine belongs to), HOST:6379 or ray://HOST:10001; "
        "none: start a Ray on this machine for this command",
    )

    def __post_init__(self) -> None:
        if self.ray_address is not None and (not isinstance(self.ray_address, str) or not self.ray_address.strip()):
            raise ConfigError(f"RayCluster.ray_address must be a non-empty string or None, got {self.ray_address!r}")

    def flag_needing_ray(self, ray_flags_given: Iterable[str]) -> Optional[str]:
        """The first Ray flag given without --ray (the names of a Ray
        settings class's fields that were given), or None."""
        if self.ray:
            return None
        flags = sorted(ray_flags_given) + (["ray_address"] if self.ray_address else [])
        return flags[0] if flags else None


@dataclass(frozen=True)
class RayServeSettings:
    replicas: Optional[int] = setting(
        None, help="pipeline replicas, a fixed number (none: 1); not together with --min_replicas/--max_replicas"
    )
    min_replicas: Optional[int] = setting(
        None, help="autoscaling: fewest pipeline replicas (none: 1 when --max_replicas is given)"
    )
    max_replicas: Optional[int] = setting(None, help="autoscaling: most pipeline replicas")
    # Ray Serve adds replicas while each holds more requests than this.
    target_ongoing_requests: Optional[float] = setting(
        None, help="autoscaling: requests per replica that Ray Serve aims for; none: 2 x max_batch"
    )
    replica_cpus: Optional[float] = setting(
        None,
        help="CPUs Ray reserves for each pipeline replica; none: --cpu_threads, else 1 (a replica's pipeline "
        "then runs that many threads)",
    )
    # Light work (reading bodies, downloads, decoding); it reserves no CPU.
    ingress_replicas: int = setting(1, help="replicas of the HTTP ingress that parses, downloads and decodes")

    def __post_init__(self) -> None:
        owner = "RayServeSettings"
        for name in ("replicas", "min_replicas", "max_replicas", "ingress_replicas"):
            _positive(owner, name, getattr(self, name))
        for name in ("target_ongoing_requests", "replica_cpus"):
            _positive(owner, name, getattr(self, name), float)
        autoscaling = self.min_replicas is not None or self.max_replicas is not None
        if self.replicas is not None and autoscaling:
            raise ConfigError(
                "give either --replicas (a fixed number) or --min_replicas/--max_replicas (autoscaling), not both"
            )
        if self.min_replicas is not None and self.max_replicas is None:
            raise ConfigError("--min_replicas needs --max_replicas (the most replicas autoscaling may start)")
        if self.max_replicas is not None and (self.min_replicas or 1) > self.max_replicas:
            raise ConfigError(f"--min_replicas {self.min_replicas} is more than --max_replicas {self.max_replicas}")

    def scaling(self, max_batch: int) -> Dict[str, Any]:
        """The pipeline deployment's num_replicas or autoscaling_config."""
        if self.max_replicas is None:
            return {"num_replicas": self.replicas or 1}
        return {
            "autoscaling_config": {
                "min_replicas": self.min_replicas or 1,
                "max_replicas": self.max_replicas,
                "target_ongoing_requests": self.target_ongoing_requests or 2 * max_batch,
            }
        }

    def replace(self, **changes: Any) -> "RayServeSettings":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class RayBatchSettings:
    actors: Optional[int] = setting(
        None, help="pipeline actors; none: as many as the cluster's CPUs hold (CPUs / --actor_cpus)"
    )
    actor_cpus: Optional[float] = setting(
        None,
        help="CPUs Ray reserves for each actor; none: --cpu_threads, else 1 (an actor's pipeline then runs "
        "that many threads)",
    )
    # Per call, an actor decodes the next images while its models run; bigger
    # calls cost less Ray overhead, smaller ones lose less to a killed actor.
    images_per_call: int = setting(8, help="images an actor takes per call")

    def __post_init__(self) -> None:
        _positive("RayBatchSettings", "actors", self.actors)
        _positive("RayBatchSettings", "actor_cpus", self.actor_cpus, float)
        _positive("RayBatchSettings", "images_per_call", self.images_per_call)


def threads_for(cpus: Optional[float], pipeline_options: Dict[str, Any]) -> "tuple[float, Dict[str, Any]]":
    """The CPUs Ray reserves for one pipeline worker and the options its
    pipeline runs with: cpu_threads defaults to those CPUs (never "all cores",
    which would oversubscribe a machine shared by several workers)."""
    options = dict(pipeline_options)
    reserved = cpus if cpus is not None else float(options.get("cpu_threads") or 1)
    if options.get("cpu_threads") is None:
        options["cpu_threads"] = max(1, int(reserved))
    calibration = options.get("calibration")
    if calibration is not None:
        # A worker may run in another working folder: paths travel absolute.
        many = isinstance(calibration, (list, tuple))
        paths = [_absolute(c) for c in (calibration if many else [calibration])]
        options["calibration"] = paths if many else paths[0]
    return reserved, options


def portable_config(pipeline: Any) -> Dict[str, Any]:
    """The pipeline config (a name, YAML path or config dict) as a dict with
    absolute model_dir paths, so that a worker in another working folder (or
    on another node) reads the same one."""
    config = load_config(None, dict(pipeline)) if isinstance(pipeline, Mapping) else load_config(pipeline, None)
    for module in (config.detector, config.keypoints):
        if module.model_dir is not None:
            module.model_dir = _absolute(module.model_dir)
    return config.to_dict()


def _absolute(item: Any) -> Any:
    return os.path.abspath(os.fspath(item)) if isinstance(item, (str, os.PathLike)) else item
