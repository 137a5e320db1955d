"""`serve()`: the app on uvicorn, with posepipe's logging, header timeouts and
graceful shutdown.

SIGTERM or SIGINT: uvicorn stops accepting connections; requests still
waiting for the models to load get their 503 at once; in-flight requests
finish (up to graceful_timeout_s); then the app's shutdown drains the queue
and stops the pipeline thread. After SIGTERM the process exits 0 (a stop that
was asked for and done); Ctrl-C exits 130, as a shell expects.

uvicorn closes idle keep-alive connections, but has no timeout for a
connection that never finishes its request headers; a watchdog here gives
each connection `header_timeout_s` for them (after its previous response:
that plus the keep-alive time), then answers 408 and closes it. The body's
own timeout is the app's (`body_timeout_s`)."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
import weakref
from typing import Any, Dict, Iterator, List, Optional, Tuple

import uvicorn

from . import logs
from .app import PipelineSpec, ServingRuntime, create_app
from .errors import dumps, envelope, new_log_id
from .settings import ServingSettings

access_log = logging.getLogger("posepipe.access")
# How often the header watchdog looks (uvicorn ticks every 0.1 s).
_WATCHDOG_TICKS = 5


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, runtime: ServingRuntime, settings: ServingSettings):
        super().__init__(config)
        self._runtime = runtime
        self._settings = settings
        # connection -> (the request cycle it had when first seen waiting for headers, since when)
        self._waiting: "weakref.WeakKeyDictionary[Any, Tuple[Any, float]]" = weakref.WeakKeyDictionary()
        self._loop: Optional[asyncio.AbstractEventLoop] = None

    async def startup(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets=sockets)

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        if self._loop is not None:  # a signal handler: hand over to the event loop
            self._loop.call_soon_threadsafe(self._runtime.begin_shutdown)

    async def on_tick(self, counter: int) -> bool:
        if counter % _WATCHDOG_TICKS == 0:
            self._drop_slow_headers()
        return await super().on_tick(counter)

    def _drop_slow_headers(self) -> None:
        now = time.monotonic()
        for connection in list(self.server_state.connections):
            cycle = getattr(connection, "cycle", None)
            if cycle is not None and not cycle.response_complete:
                self._waiting.pop(connection, None)  # a request is being read or answered
                continue
            seen_cycle, since = self._waiting.setdefault(connection, (cycle, now))
            if seen_cycle is not cycle:
                self._waiting[connection] = (cycle, now)
                continue
            limit = self._settings.header_timeout_s
            if cycle is not None:  # after a response uvicorn's keep-alive timer runs first
                limit += self._settings.timeout_keep_alive_s
            if now - since > limit:
                self._waiting.pop(connection, None)
                self._send_408(connection, now - since)

    def _send_408(self, connection: Any, waited: float) -> None:
        transport = getattr(connection, "transport", None)
        if transport is None or transport.is_closing():
            return
        message = f"no complete request headers within {self._settings.header_timeout_s:g} s"
        log_id = new_log_id()
        body = dumps(envelope(log_id, 408, message))
        head = (
            "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        transport.write(head.encode("ascii") + body)
        transport.close()
        self._runtime.metrics.observe_request("", "", 408, waited)
        if self._settings.access_log:
            client = getattr(connection, "client", None)
            fields: Dict[str, Any] = {"logId": log_id, "status": 408, "error": message}
            if client:
                fields["client"] = f"{client[0]}:{client[1]}"
            access_log.info("- - 408", extra=fields)


@contextlib.contextmanager
def _sigterm_ends_cleanly() -> Iterator[None]:
    """uvicorn re-raises the signal that stopped it once it is done, with the
    handlers from before it started; for SIGTERM that is a no-op here, so
    `serve` returns and the process exits 0."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def serve(
    pipeline: PipelineSpec = "human_keypoint_detection",
    settings: Optional[ServingSettings] = None,
    *,
    device: Optional[str] = None,
    use_hpip: Optional[bool] = None,
    pipeline_options: Optional[Dict[str, Any]] = None,
    configure_logging: bool = True,
) -> int:
    """Serve until stopped; 0 after a clean stop (SIGTERM included), 1 when the
    pipeline failed to load or the port could not be bound, 130 after Ctrl-C."""
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
    runtime: ServingRuntime = app.state.posepipe
    server = _Server(config, runtime, settings)
    failures: List[BaseException] = []

    def on_load_failure(error: BaseException) -> None:
        failures.append(error)
        server.should_exit = True

    runtime.on_load_failure = on_load_failure
    try:
        with _sigterm_ends_cleanly():
            server.run()
    except KeyboardInterrupt:
        return 130
    except SystemExit as e:  # uvicorn exits this way when it cannot bind
        return int(e.code) if isinstance(e.code, int) else 1
    if failures:
        return 1
    return 0 if server.started else 1
