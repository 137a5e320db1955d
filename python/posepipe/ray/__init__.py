"""posepipe on Ray: the HTTP server as a Ray Serve application and batch
inference on Ray Data, over the same pipeline and request handling as
`posepipe serve` and `posepipe`.

    import posepipe.ray
    app = posepipe.ray.build_app("my.yaml", ray_settings=posepipe.ray.RayServeSettings(replicas=2))
    ray.serve.run(app, route_prefix="/")                       # what `posepipe serve --ray` does

    report = posepipe.ray.run_batch("my.yaml", "photos/", "out/")   # what `posepipe --ray` does
    rows = posepipe.ray.predict_dataset(ray.data.read_binary_files("photos/", include_paths=True), "my.yaml")

For a Ray Serve config file (`serve run` / `serve deploy`): import_path
`posepipe.ray.serve:app_builder` (README "Scaling out").

Needs the ray extra (`pip install "posepipe[ray]"`); the settings import
without it, and everything else says how to install it."""
from __future__ import annotations

import importlib
from typing import Any

from .settings import RayBatchSettings, RayCluster, RayServeSettings

# The extra pins the Ray versions the tests run (pyproject.toml).
INSTALL_HINT = 'pip install "posepipe[ray]"'

__all__ = [
    "RayBatchSettings",
    "RayCluster",
    "RayServeSettings",
    "app_builder",
    "build_app",
    "predict_dataset",
    "require_ray",
    "run_batch",
]

_LAZY = {
    "build_app": "serve",
    "app_builder": "serve",
    "run_batch": "batch",
    "predict_dataset": "batch",
}


class RayMissing(ImportError):
    """Ray (with its serve and data parts) is not installed."""


def require_ray() -> Any:
    """The `ray` module, or RayMissing saying how to install it."""
    try:
        ray = importlib.import_module("ray")
        importlib.import_module("ray.serve")
        importlib.import_module("ray.data")
    except ImportError as e:
        raise RayMissing(
            f"running on Ray needs the ray extra: {INSTALL_HINT} (missing module {e.name!r})"
        ) from None
    return ray


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    require_ray()
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
