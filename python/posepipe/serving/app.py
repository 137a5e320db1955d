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
it; fetch a URL image with a download slot instead of the queue place; decode;
detect and estimate in the shared schedule (batching.py); answer. A request
whose client has gone is dropped wherever it waits."""
from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, Awaitable, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from .. import __version__
from ..download import Deadline, DownloadError, DownloadPolicy, fetch_bytes
from ..errors import InputError
from ..io import Frame, InputLimits
from . import inputs
from .batching import Batcher, Closed, QueueFull
from .errors import ApiError, dumps, error_response
from .metrics import Metrics
from .middleware import BodyPolicy, BodyTooLarge, RequestContext, request_state
from .schemas import INFER_ENDPOINT, ErrorResponse, InferRequest, InferResponse, parse_request
from .settings import ServingSettings

log = logging.getLogger("posepipe.serving")

PipelineSpec = Union[str, os.PathLike, Mapping[str, Any], Any]

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
# JPEG's largest side (libjpeg's JPEG_MAX_DIMENSION); larger visualizations are scaled down to fit.
JPEG_MAX_SIDE = 65500


class ClientGone(Exception):
    """The client closed the connection before its reply."""


class ServingRuntime:
    """What one app holds between requests: the pipeline, the batcher, the
    thread pools, the download policy, the metrics and the readiness state.
    It is also the batcher's view of the pipeline (predict_boxes,
    estimate_keypoints, build_result), which exists only once loaded."""

    def __init__(
        self,
        pipeline: PipelineSpec,
        settings: ServingSettings,
        *,
        device: Optional[str],
        use_hpip: bool,
        pipeline_options: Optional[Dict[str, Any]],
    ):
        self.settings = settings
        self.metrics = Metrics(settings.max_batch)
        self.metrics.queue_limit.set(settings.max_queue)
        self.limits = InputLimits(
            max_pixels=settings.max_pixels, max_bytes=settings.max_image_bytes, url_timeout=settings.url_timeout_s
        )
        self.download_policy = DownloadPolicy(
            timeout_s=settings.url_timeout_s,
            max_bytes=settings.max_image_bytes,
            max_redirects=settings.max_redirects,
            allow_private=settings.allow_private_urls,
            user_agent=f"posepipe/{__version__}",
        )
        self._spec = pipeline
        self._device = device
        self._use_hpip = use_hpip
        self._pipeline_options = dict(pipeline_options or {})
        self.pipeline: Any = None if _is_config(pipeline) else pipeline
        if self.pipeline is not None and not all(
            hasattr(self.pipeline, name) for name in ("predict_boxes", "estimate_keypoints", "build_result")
        ):
            raise TypeError(
                "create_app: give a pipeline name, a YAML path, a config dict, or an object with predict_boxes(), "
                "estimate_keypoints() and build_result() (as posepipe's pipeline has)"
            )
        serving_section = _serving_section(pipeline)
        self.visualize_default = (
            settings.visualize if settings.visualize is not None else bool(serving_section.get("visualize", True))
        )
        self.status = "starting"  # starting | loading | warming up | ready | failed | shutting down
        self.load_error: Optional[str] = None
        self.on_load_failure: Optional[Callable[[BaseException], None]] = None
        self.batcher: Optional[Batcher] = None
        self.decode_pool: Optional[ThreadPoolExecutor] = None
        self.downloads = 0  # URL downloads in progress
        self._settled: Optional[asyncio.Event] = None  # set once ready, failed or shutting down
        self._infer_pool: Optional[ThreadPoolExecutor] = None
        self._download_pool: Optional[ThreadPoolExecutor] = None
        self._load_task: Optional[asyncio.Task] = None

    @property
    def ready(self) -> bool:
        return self.status == "ready"

    # --- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        self._settled = asyncio.Event()
        self._infer_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="posepipe-infer")
        self.decode_pool = ThreadPoolExecutor(max_workers=s.decode_workers, thread_name_prefix="posepipe-decode")
        # One thread per download slot: a slow URL holds a thread, never the event loop or a queue place.
        self._download_pool = ThreadPoolExecutor(max_workers=s.max_downloads, thread_name_prefix="posepipe-download")
        self.batcher = Batcher(
            self,
            self._infer_pool,
            max_batch=s.max_batch,
            max_wait_s=s.max_wait_ms / 1000.0,
            max_queue=s.max_queue,
            max_queue_pixels=s.max_queue_pixels,
            max_persons=s.max_persons,
            max_batch_persons=s.max_batch_persons,
            max_queue_persons=s.max_queue_persons,
            on_batch=self.metrics.observe_batch,
            on_keypoint_step=self.metrics.observe_keypoint_step,
            on_depth=self.metrics.queue_depth.set,
        )
        self.batcher.start()
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
        if self.batcher is not None:
            await self.batcher.close()
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()
        if self._infer_pool is not None:
            self._infer_pool.shutdown(wait=False, cancel_futures=True)
        # Decodes and downloads still running end on their own (a download at its
        # deadline); they are waited for off the event loop, which keeps serving.
        loop = asyncio.get_running_loop()
        pools = [pool for pool in (self.decode_pool, self._download_pool) if pool is not None]
        await asyncio.gather(*(loop.run_in_executor(None, pool.shutdown) for pool in pools))
        log.info("stopped")

    async def _load(self) -> None:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            if self.pipeline is None:
                self.status = "loading"
                log.info("loading the pipeline", extra={"pipeline": _describe(self._spec)})
                # Built on the inference thread: Paddle predictors stay on the thread that made them.
                self.pipeline = await loop.run_in_executor(self._infer_pool, self._build)
            warmup = getattr(self.pipeline, "warmup", None)
            if self.settings.warmup and callable(warmup) and self.status != "shutting down":
                # Every batch shape once, so the first requests don't pay for kernel
                # selection and memory allocation (with oneDNN 0.3-1 s per new shape).
                self.status = "warming up"
                await loop.run_in_executor(self._infer_pool, warmup)
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

    def _build(self) -> Any:
        from .. import create_pipeline

        if isinstance(self._spec, Mapping):
            return create_pipeline(
                config=dict(self._spec), device=self._device, use_hpip=self._use_hpip, **self._pipeline_options
            )
        return create_pipeline(
            pipeline=os.fspath(self._spec), device=self._device, use_hpip=self._use_hpip, **self._pipeline_options
        )

    # --- the batcher's view of the pipeline (called on the inference thread) -----

    def predict_boxes(self, frames: Sequence[Frame], det_threshold: Optional[float]) -> List[np.ndarray]:
        return self.pipeline.predict_boxes(frames, det_threshold)

    def estimate_keypoints(self, frames: Sequence[Frame], boxes: Sequence[np.ndarray]) -> List[np.ndarray]:
        return self.pipeline.estimate_keypoints(frames, boxes)

    def build_result(self, frame: Frame, boxes: np.ndarray, keypoints: np.ndarray) -> Any:
        return self.pipeline.build_result(frame, boxes, keypoints)

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
        assert self.batcher is not None
        try:
            self.batcher.try_reserve()
        except QueueFull as e:
            if e.what == "persons":
                self.metrics.rejected.labels("persons_full").inc()
                message = (
                    f"the server is busy: {self.batcher.queued_persons} persons found in earlier images are waiting "
                    "for their keypoints; retry later"
                )
            else:
                self.metrics.rejected.labels("queue_full").inc()
                message = f"the server is busy: its queue is full ({self.settings.max_queue} requests); retry later"
            raise ApiError(503, message, self._retry_after()) from None
        except Closed:
            self.metrics.rejected.labels("shutting_down").inc()
            raise ApiError(503, "the server is shutting down", self._retry_after()) from None

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
                assert self.batcher is not None
                self.batcher.release()

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
        assert self.batcher is not None and self.decode_pool is not None
        loop = asyncio.get_running_loop()
        if inputs.is_url(body.image):
            if not self.settings.allow_url_inputs:
                raise ApiError(400, "image: URL inputs are disabled on this server; send the image as base64")
            self.batcher.release()  # the download holds a download slot instead
            held[0] = False
            data = await self._download(body.image, state)
            self.admit()
            held[0] = True
            image = await loop.run_in_executor(self.decode_pool, inputs.decode_image, data, self.limits)
        else:
            image = await loop.run_in_executor(self.decode_pool, inputs.image_from_base64, body.image, self.limits)
        held[0] = False
        try:
            result = await self.batcher.submit(Frame(image, None), body.detThreshold, image.shape[0] * image.shape[1])
        except QueueFull:
            self.metrics.rejected.labels("queue_full").inc()
            raise ApiError(
                503,
                f"the server is busy: the waiting images already hold {self.settings.max_queue_pixels} pixels; "
                "retry later",
                self._retry_after(),
            ) from None
        except Closed:
            self.metrics.rejected.labels("shutting_down").inc()
            raise ApiError(503, "the server is shutting down", self._retry_after()) from None
        except InputError as e:
            raise ApiError(400, str(e)) from None
        visualize = body.visualize if body.visualize is not None else self.visualize_default
        if visualize:
            return await loop.run_in_executor(self.decode_pool, _success_body, state["log_id"], result, True)
        return _success_body(state["log_id"], result, False)

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


def _success_body(log_id: str, result: Any, visualize: bool) -> bytes:
    persons = []
    for box in result["boxes"]:
        persons.append(
            {
                "bbox": [float(v) for v in box["coordinate"]],
                "kpts": np.asarray(box["keypoints"], dtype=np.float32).tolist(),
                "detScore": float(box["det_score"]),
                "kptScore": float(box["kpt_score"]),
            }
        )
    payload: Dict[str, Any] = {"persons": persons}
    if visualize:
        drawn = result.img.get("res")
        if drawn is not None:
            payload["image"] = base64.b64encode(_jpeg(drawn)).decode("ascii")
    return dumps({"logId": log_id, "result": payload, "errorCode": 0, "errorMsg": "Success"})


def _jpeg(image: Any) -> bytes:
    """The visualization as JPEG; a side longer than JPEG allows is scaled down
    to JPEG_MAX_SIDE, keeping the aspect ratio (the persons' coordinates in
    the reply stay in input pixels)."""
    image = image.convert("RGB")
    longest = max(image.size)
    if longest > JPEG_MAX_SIDE:
        scale = JPEG_MAX_SIDE / longest
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    with io.BytesIO() as buffer:
        image.save(buffer, format="JPEG")
        return buffer.getvalue()


def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    return "transfer-encoding" in request.headers or (length is not None and length.strip() not in ("", "0"))


def _is_config(pipeline: PipelineSpec) -> bool:
    return isinstance(pipeline, (str, os.PathLike, Mapping))


def _describe(spec: PipelineSpec) -> str:
    if isinstance(spec, Mapping):
        return "<config dict>"
    return os.fspath(spec) if isinstance(spec, (str, os.PathLike)) else type(spec).__name__


def _serving_section(spec: PipelineSpec) -> Dict[str, Any]:
    """The pipeline config's `Serving` mapping (PaddleX's app config), or {}."""
    data: Any = None
    if isinstance(spec, Mapping):
        data = spec
    elif isinstance(spec, (str, os.PathLike)) and os.path.isfile(spec):
        import yaml

        try:
            with open(spec, "r", encoding="utf-8") as f:
                data = yaml.safe_load(f)
        except (OSError, yaml.YAMLError):
            data = None  # create_pipeline reports a broken file
    section = data.get("Serving") if isinstance(data, Mapping) else None
    return dict(section) if isinstance(section, Mapping) else {}


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
    use_hpip: bool = False,
    pipeline_options: Optional[Dict[str, Any]] = None,
) -> FastAPI:
    """The ASGI app serving `pipeline`: a pipeline name, a PaddleX pipeline YAML
    path or config dict (built with posepipe.create_pipeline after startup), or
    an already built pipeline object with posepipe's stage methods
    (`predict_boxes`, `estimate_keypoints`, `build_result`, and optionally `warmup`).
    `device`, `use_hpip` and `pipeline_options` go to create_pipeline."""
    settings = settings or ServingSettings()
    runtime = ServingRuntime(
        pipeline, settings, device=device, use_hpip=use_hpip, pipeline_options=pipeline_options
    )

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
        if runtime.batcher is not None:
            runtime.metrics.queue_pixels.set(runtime.batcher.queued_pixels)
            runtime.metrics.queue_persons.set(runtime.batcher.queued_persons)
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
