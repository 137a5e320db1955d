"""`serve()`: the app on uvicorn, with posepipe's logging and graceful shutdown.

SIGTERM or SIGINT: uvicorn stops accepting connections, lets in-flight
requests finish (up to graceful_timeout_s), then the app's shutdown drains the
batch queue and stops the pipeline thread. As uvicorn does, the signal is then
re-raised, so the process ends the way its supervisor expects."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import uvicorn

from . import logs
from .app import PipelineSpec, create_app
from .settings import ServingSettings


def serve(
    pipeline: PipelineSpec = "human_keypoint_detection",
    settings: Optional[ServingSettings] = None,
    *,
    device: Optional[str] = None,
    use_hpip: bool = False,
    pipeline_options: Optional[Dict[str, Any]] = None,
    configure_logging: bool = True,
) -> int:
    """Serve until stopped; 0 after a clean stop, 1 when the pipeline failed to
    load or the port could not be bound, 130 after Ctrl-C."""
    settings = settings or ServingSettings()
    if configure_logging:
        logs.configure(settings.log_level, settings.log_format)
    app = create_app(pipeline, settings, device=device, use_hpip=use_hpip, pipeline_options=pipeline_options)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,  # logging is set up above (or by the caller)
        access_log=False,  # posepipe.access writes one line per request, with its logId
        timeout_graceful_shutdown=settings.graceful_timeout_s,
        limit_concurrency=settings.limit_concurrency,
        timeout_keep_alive=settings.timeout_keep_alive_s,
        server_header=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    failures: List[BaseException] = []

    def on_load_failure(error: BaseException) -> None:
        failures.append(error)
        server.should_exit = True

    app.state.posepipe.on_load_failure = on_load_failure
    try:
        server.run()
    except KeyboardInterrupt:
        return 130
    except SystemExit as e:  # uvicorn exits this way when it cannot bind
        return int(e.code) if isinstance(e.code, int) else 1
    if failures:
        return 1
    return 0 if server.started else 1
