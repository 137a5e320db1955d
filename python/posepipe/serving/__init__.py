"""posepipe's HTTP server: PaddleX's `human_keypoint_detection` serving API
(same request/response JSON, same 422 envelope) on FastAPI + uvicorn, with
dynamic batching, a bounded queue, input limits, URL safety, /health, /ready,
Prometheus /metrics and graceful shutdown.

    from posepipe.serving import create_app, serve, ServingSettings
    app = create_app("my.yaml", ServingSettings(max_batch=8))   # any ASGI server
    serve("my.yaml", ServingSettings(port=8080))                 # uvicorn, as `posepipe serve`

Attributes load lazily, so `posepipe.serving.cli` imports without FastAPI."""
from __future__ import annotations

from typing import Any

__all__ = ["create_app", "serve", "ServingSettings", "main"]


def __getattr__(name: str) -> Any:
    if name == "ServingSettings":
        from .settings import ServingSettings

        return ServingSettings
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "serve":
        from .server import serve

        return serve
    if name == "main":
        from .cli import main

        return main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
