"""The ASGI app: PaddleX's `human_keypoint_detection` basic-serving API, plus
/ready and /metrics, on FastAPI.

    app = create_app("human_keypoint_detection", ServingSettings(max_batch=8))
    # or create_app("my.yaml"), create_app({...config dict...}), create_app(pipeline_object)

Run it with any ASGI server (`uvicorn module:app`); `posepipe serve` (see
`server.serve`) also sets up logging, header timeouts and graceful shutdown.
Models load in the background after startup: /health answers at once, /ready
answers 503 until the pipeline is loaded and warmed up, and an inference
request that comes before waits for that (up to `ready_wait_s`).

One inference request, in order: wait for readiness; take a place in the queue
(or 503 at once); only then read the body (within `body_timeout_s`) and parse
it; fetch a URL image with a download slot instead of the queue place (or
base64-decode it); hand the image file to the engine (engine.py), which
decodes it and runs the pipeline's stages; answer. A request
whose client has gone is dropped wherever it waits."""
from __future__ import annotations

import asyncio
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, Awaitable, Callable, Dict, List, Optional, Tuple, Union

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from .. import __version__
from ..download import Deadline, DownloadError, DownloadPolicy, fetch_bytes
from ..errors import InputError
from . import inputs
from .batching import Closed, QueueFull
from .engine import Engine, LocalEngine, PipelineSpec, visualize_default
from .errors import ApiError, dumps, error_response
from .metrics import Metrics
from .middleware import BodyPolicy, BodyTooLarge, RequestContext, request_state
from .responses import success_body
from .schemas import INFER_ENDPOINT, ErrorResponse, InferRequest, InferResponse, parse_request
from .settings import ServingSettings

log = logging.getLogger("posepipe.serving")

__all__ = ["ClientGone", "PipelineSpec", "ServingRuntime", "build_http_app", "create_app"]

_ERROR_RESPONSES: Dict[Union[int, str], Dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "The image cannot be used (bad base64, not an image, "
          "truncated, URL refused or not fetchable)"},
    408: {"model": ErrorResponse, "description": "The request body did not arrive within the timeout"},
    413: {"model": ErrorResponse, "description": "Request body, image bytes or image pixels over the limit"},
    415: {"model": ErrorResponse, "description": "A compressed request body (Content-Encoding); send plain JSON"},
    422: {"model": ErrorResponse, "description": "The body is not the documented JSON (errorMsg: JSON list of errors)"},
    500: {"model": ErrorResponse, "description": "Internal server error"},
    503: {"model": ErrorResponse, "description": "Overloaded, not ready in time, or shutting down; see Retry-After"},
    504: {"model": ErrorResponse, "description": "The image URL did not download within the timeout"},
}

class ClientGone(Exception):
    """The client closed the connection before its reply."""


class ServingRuntime:
    """What one app holds between requests: its engine (what runs the
    pipeline), the decode and download threads, the download policy, the
    metrics and the readiness state; and the handling of one request."""

    def __init__(self, engine: Engine, settings: ServingSettings, visualize_default: bool = True):
        self.settings = settings
        self.engine = engine
        self.metrics = Metrics(settings.max_batch)
        self.metrics.queue_limit.set(settings.max_queue)
        self.limits = settings.input_limits()
        self.download_policy = DownloadPolicy(
            timeout_s=settings.url_timeout_s,
            max_bytes=settings.max_image_bytes,
            max_redirects=settings.max_redirects,
            allow_private=settings.allow_private_urls,
        )
        self.visualize_default = visualize_default
        self.status = "starting"  # starting | loading | warming up | ready | failed | shutting down
        self.load_error: Optional[str] = None
        self.on_load_failure: Optional[Callable[[BaseException], None]] = None
        self.decode_pool: Optional[ThreadPoolExecutor] = None
        self.downloads = 0  # URL downloads in progress
        self._settled: Optional[asyncio.Event] = None  # set once ready, failed or shutting down
        self._download_pool: Optional[ThreadPoolExecutor] = None
        self._load_task: Optional[asyncio.Task] = None

    @property
    def ready(self) -> bool:
        return self.status == "ready"

    # --- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        self._settled = asyncio.Event()
        self.decode_pool = ThreadPoolExecutor(max_workers=s.decode_workers, thread_name_prefix="posepipe-decode")
        # One thread per download slot: a slow URL holds a thread, never the event loop or a queue place.
        self._download_pool = ThreadPoolExecutor(max_workers=s.max_downloads, thread_name_prefix="posepipe-download")
        self.engine.start(self)
        self._load_task = asyncio.get_running_loop().create_task(self._load(), name="posepipe-load")

    def begin_shutdown(self) -> None:
        """Refuse new work from now on (the queue still runs what it holds);
        requests waiting for readiness get their 503 at once."""
        if self.status != "shutting down":
            self.status = "shutting down"
            self.metrics.ready.set(0)
        if self._settled is not None:
            self._settled.set()

    async def stop(self) -> None:
        self.begin_shutdown()
        await self.engine.close()
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()
        # Decodes and downloads still running end on their own (a download at its
        # deadline); they are waited for off the event loop, which keeps serving.
        loop = asyncio.get_running_loop()
        pools = [pool for pool in (self.decode_pool, self._download_pool) if pool is not None]
        await asyncio.gather(*(loop.run_in_executor(None, pool.shutdown) for pool in pools))
        log.info("stopped")

    async def _load(self) -> None:
        started = time.perf_counter()
        try:
            await self.engine.load(self)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - reported through /ready and the log
            self.status = "failed"
            self.load_error = f"{type(e).__name__}: {e}"
            assert self._settled is not None
            self._settled.set()
            log.error("the pipeline failed to load: %s", self.load_error, exc_info=True)
            if self.on_load_failure is not None:
                self.on_load_failure(e)
            return
        if self.status == "shutting down":
            return
        self.status = "ready"
        assert self._settled is not None
        self._settled.set()
        self.metrics.ready.set(1)
        log.info("ready", extra={"seconds": round(time.perf_counter() - started, 3)})

    # --- one request -------------------------------------------------------------

    async def wait_ready(self) -> None:
        """While the models load, wait for them, up to ready_wait_s (`admit` then says whether they came)."""
        if self.status in ("starting", "loading", "warming up") and self._settled is not None:
            try:
                await asyncio.wait_for(self._settled.wait(), self.settings.ready_wait_s)
            except asyncio.TimeoutError:
                pass

    def admit(self) -> None:
        """Take a place in the queue, or 503 at once (not ready, shutting down, full)."""
        if not self.ready:
            self.metrics.rejected.labels("shutting_down" if self.status == "shutting down" else "not_ready").inc()
            raise ApiError(503, self.not_ready_message(), self._retry_after())
        try:
            self.engine.try_reserve()
        except QueueFull as e:
            raise self._busy(e) from None
        except Closed:
            raise self._closed() from None

    def _busy(self, error: QueueFull) -> ApiError:
        self.metrics.rejected.labels("persons_full" if error.what == "persons" else "queue_full").inc()
        return ApiError(503, self.engine.busy_message(error.what), self._retry_after())

    def _closed(self) -> ApiError:
        self.metrics.rejected.labels("shutting_down").inc()
        return ApiError(503, "the server is shutting down", self._retry_after())

    def not_ready_message(self) -> str:
        if self.status == "failed":
            return f"the pipeline failed to load: {self.load_error}"
        if self.status == "shutting down":
            return "the server is shutting down"
        return f"not ready: {self.status}"

    def _retry_after(self) -> Dict[str, str]:
        return {"Retry-After": str(self.settings.retry_after_s)}

    async def handle(self, request: Request, state: Dict[str, Any]) -> bytes:
        """One inference request, from its headers to the reply's body."""
        await self.wait_ready()
        self.admit()
        held = [True]  # this request holds a queue place (submit takes it over)
        try:
            raw = await self._read_body(request)
            body = parse_request(raw, request.headers.get("content-type"))
            state["client_log_id"] = _client_log_id(body.model_extra)
            return await _unless_client_leaves(request, self._answer(body, state, held))
        finally:
            if held[0]:
                self.engine.release()

    async def _read_body(self, request: Request) -> bytes:
        try:
            raw = await asyncio.wait_for(request.body(), self.settings.body_timeout_s)
            request_state(request.scope)["body_read"] = True
            return raw
        except asyncio.TimeoutError:
            raise ApiError(
                408,
                f"the request body did not arrive within {self.settings.body_timeout_s:g} s",
                {"Connection": "close"},
            ) from None
        except ClientDisconnect:
            raise ClientGone() from None
        except BodyTooLarge as e:
            raise ApiError(413, str(e), {"Connection": "close"}) from None

    async def _answer(self, body: InferRequest, state: Dict[str, Any], held: List[bool]) -> bytes:
        assert self.decode_pool is not None
        if inputs.is_url(body.image):
            if not self.settings.allow_url_inputs:
                raise ApiError(400, "image: URL inputs are disabled on this server; send the image as base64")
            self.engine.release()  # the download holds a download slot instead
            held[0] = False
            data = await self._download(body.image, state)
            self.admit()
            held[0] = True
        else:
            data = await asyncio.get_running_loop().run_in_executor(
                self.decode_pool, inputs.decode_base64, body.image, self.limits.max_bytes
            )
        held[0] = False
        visualize = body.visualize if body.visualize is not None else self.visualize_default
        try:
            payload = await self.engine.submit(data, body.detThreshold, visualize)
        except QueueFull as e:
            raise self._busy(e) from None
        except Closed:
            raise self._closed() from None
        except InputError as e:
            raise ApiError(400, str(e)) from None
        return success_body(state["log_id"], payload)

    async def _download(self, url: str, state: Dict[str, Any]) -> bytes:
        s = self.settings
        assert self._download_pool is not None
        if self.downloads >= s.max_downloads:
            self.metrics.rejected.labels("downloads_full").inc()
            raise ApiError(
                503,
                f"the server is busy: {self.downloads} image URL downloads are in progress; retry later",
                self._retry_after(),
            )
        loop = asyncio.get_running_loop()
        deadline = Deadline(s.url_timeout_s)
        self.downloads += 1
        self.metrics.downloads.set(self.downloads)
        job = self._download_pool.submit(fetch_bytes, url, self.download_policy, deadline)
        # The slot frees when the thread is done, which a cancelled request's abort makes prompt.
        job.add_done_callback(lambda _: _call_soon(loop, self._download_done))
        try:
            return await asyncio.wrap_future(job)
        except asyncio.CancelledError:
            deadline.cancel()
            raise
        except DownloadError as e:
            if e.detail:
                state["detail"] = e.detail
            raise inputs.download_error(e) from None

    def _download_done(self) -> None:
        self.downloads -= 1
        self.metrics.downloads.set(self.downloads)


async def _unless_client_leaves(request: Request, work: Awaitable[bytes]) -> bytes:
    """The outcome of `work`, or ClientGone (and `work` cancelled, which takes
    its frame out of the queue) if the client disconnects first."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(request.receive))
    try:
        done, _ = await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()
    if task in done:
        return task.result()
    try:
        await task
    except BaseException:  # noqa: BLE001 - its outcome no longer has anyone to go to
        pass
    raise ClientGone()


async def _disconnected(receive: Callable[[], Awaitable[Dict[str, Any]]]) -> None:
    # The body has been read: what comes next is the disconnect (or nothing,
    # until the reply is complete).
    while (await receive())["type"] != "http.disconnect":
        pass


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
    try:
        loop.call_soon_threadsafe(callback)
    except RuntimeError:  # the loop has closed: nothing is counting any more
        pass


def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    return "transfer-encoding" in request.headers or (length is not None and length.strip() not in ("", "0"))


def _loc(parts: Tuple[Union[str, int], ...]) -> str:
    text = ""
    for i, part in enumerate(parts):
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if i else "") + str(part)
    return text


def _client_log_id(body: Any) -> Optional[str]:
    """PaddleX echoes a string `logId` found in the request body in its error replies."""
    if isinstance(body, dict):
        value = body.get("logId")
        if isinstance(value, str) and 0 < len(value) <= 128:
            return value
    return None


def create_app(
    pipeline: PipelineSpec = "human_keypoint_detection",
    settings: Optional[ServingSettings] = None,
    *,
    device: Optional[str] = None,
    use_hpip: Optional[bool] = None,
    pipeline_options: Optional[Dict[str, Any]] = None,
) -> FastAPI:
    """The ASGI app serving `pipeline`: a pipeline name, a PaddleX pipeline YAML
    path or config dict (built with posepipe.create_pipeline after startup), or
    an already built pipeline object with posepipe's stage methods
    (`predict_boxes`, `estimate_keypoints`, `build_result`, and optionally `warmup`).
    `device`, `use_hpip` and `pipeline_options` go to create_pipeline."""
    settings = settings or ServingSettings()
    try:
        engine = LocalEngine(pipeline, settings, device=device, use_hpip=use_hpip, pipeline_options=pipeline_options)
    except TypeError as e:
        raise TypeError(f"create_app: {e}") from None
    return build_http_app(ServingRuntime(engine, settings, visualize_default(settings, pipeline)))


def build_http_app(runtime: ServingRuntime) -> FastAPI:
    """The HTTP side of every posepipe server, around `runtime` (and its
    engine): routes, the error envelope, body limits, logIds and metrics."""
    settings = runtime.settings

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(
        title="posepipe human keypoint detection",
        version=__version__,
        description="PaddleX-compatible human keypoint detection service (person detector, then a "
        "top-down keypoint model). Error replies: {logId, errorCode (= HTTP status), errorMsg}.",
        lifespan=lifespan,
    )
    app.state.posepipe = runtime

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        errors = [{"type": e.get("type"), "loc": _loc(tuple(e.get("loc", ()))), "msg": e.get("msg")} for e in exc.errors()]
        message = json.dumps(errors)
        state = request_state(request.scope)
        state["log_id"] = _client_log_id(exc.body) or state.get("log_id")
        state["error"] = message
        return error_response(state["log_id"], 422, message)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        state = request_state(request.scope)
        state["error"] = str(exc.detail)
        return error_response(state["log_id"], exc.status_code, str(exc.detail), exc.headers)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        state = request_state(request.scope)
        state["error"] = exc.message
        return error_response(state["log_id"], exc.status, exc.message, exc.headers)

    @app.get("/health", operation_id="checkHealth", response_model=ErrorResponse, summary="Liveness")
    async def _health(request: Request) -> Response:
        log_id = request_state(request.scope)["log_id"]
        return Response(dumps({"logId": log_id, "errorCode": 0, "errorMsg": "Healthy"}), media_type="application/json")

    @app.get(
        "/ready",
        operation_id="checkReady",
        response_model=ErrorResponse,
        responses={503: {"model": ErrorResponse, "description": "Models not loaded or not warmed up yet"}},
        summary="Readiness: models loaded and warmed up",
    )
    async def _ready(request: Request) -> Response:
        log_id = request_state(request.scope)["log_id"]
        if runtime.ready:
            return Response(dumps({"logId": log_id, "errorCode": 0, "errorMsg": "Ready"}), media_type="application/json")
        return error_response(log_id, 503, runtime.not_ready_message(), {"Retry-After": str(settings.retry_after_s)})

    @app.get(
        "/metrics",
        operation_id="metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    async def _metrics() -> Response:
        runtime.metrics.queue_pixels.set(getattr(runtime.engine, "queued_pixels", 0))
        runtime.metrics.queue_persons.set(getattr(runtime.engine, "queued_persons", 0))
        return Response(runtime.metrics.render(), media_type=runtime.metrics.content_type)

    @app.post(
        INFER_ENDPOINT,
        operation_id="infer",
        response_model=InferResponse,
        response_model_exclude_none=True,
        responses=_ERROR_RESPONSES,
        summary="Human keypoint detection on one image",
        # The body is read by the handler, after admission; documented here.
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/InferRequest"}}},
            }
        },
    )
    async def _infer(request: Request) -> Response:
        state = request_state(request.scope)
        try:
            payload = await runtime.handle(request, state)
        except ClientGone:
            state["client_gone"] = True
            return Response(status_code=499)  # nobody reads it; the access log says 499
        except ApiError as e:
            state["log_id"] = state.get("client_log_id") or state["log_id"]
            if not state.get("body_read") and _has_body(request):
                # Refused unread (not ready, busy): the body is not read to find the next request.
                e.headers.setdefault("Connection", "close")
            raise
        except RequestValidationError:
            raise
        except Exception:  # noqa: BLE001 - a pipeline bug: logged with the logId, answered 500
            state["log_id"] = state.get("client_log_id") or state["log_id"]
            log.exception("inference failed", extra={"logId": state["log_id"]})
            raise ApiError(500, "Internal server error") from None
        return Response(payload, media_type="application/json")

    base_openapi = app.openapi

    def openapi() -> Dict[str, Any]:
        if app.openapi_schema is None:
            schema = base_openapi()
            schema.setdefault("components", {}).setdefault("schemas", {})["InferRequest"] = (
                InferRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    # Outermost last: RequestContext sees every request, including 413s and 415s.
    app.add_middleware(BodyPolicy, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContext, metrics=runtime.metrics, access_log_enabled=settings.access_log)
    return app
