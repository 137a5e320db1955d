"""The ASGI app: PaddleX's `human_keypoint_detection` basic-serving API, plus
/ready and /metrics, on FastAPI.

    app = create_app("human_keypoint_detection", ServingSettings(max_batch=8))
    # or create_app("my.yaml"), create_app({...config dict...}), create_app(pipeline_object)

Run it with any ASGI server (`uvicorn module:app`); `posepipe serve` (see
`server.serve`) also sets up logging and graceful shutdown. Models load in the
background after startup: /health answers at once, /ready and the inference
endpoint answer 503 until the pipeline is loaded and warmed up."""
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
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from .. import __version__
from ..errors import InputError
from ..io import Frame, InputLimits
from . import inputs
from .batching import Batcher, Closed, QueueFull
from .errors import ApiError, dumps, error_response
from .metrics import Metrics
from .middleware import BodyLimit, RequestContext, request_state
from .schemas import INFER_ENDPOINT, ErrorResponse, InferRequest, InferResponse
from .settings import ServingSettings

log = logging.getLogger("posepipe.serving")

PipelineSpec = Union[str, os.PathLike, Mapping[str, Any], Any]

_ERROR_RESPONSES: Dict[Union[int, str], Dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "The image cannot be used (bad base64, not an image, "
          "truncated, URL refused or not fetchable)"},
    413: {"model": ErrorResponse, "description": "Request body, image bytes or image pixels over the limit"},
    422: {"model": ErrorResponse, "description": "The body is not the documented JSON (errorMsg: JSON list of errors)"},
    500: {"model": ErrorResponse, "description": "Internal server error"},
    503: {"model": ErrorResponse, "description": "Overloaded, not ready yet, or shutting down; see Retry-After"},
    504: {"model": ErrorResponse, "description": "The image URL did not download within the timeout"},
}


class ServingRuntime:
    """What one app holds between requests: the pipeline, the batcher, the
    thread pools, the URL client, the metrics and the readiness state."""

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
        self._spec = pipeline
        self._device = device
        self._use_hpip = use_hpip
        self._pipeline_options = dict(pipeline_options or {})
        self.pipeline: Any = None if _is_config(pipeline) else pipeline
        if self.pipeline is not None and not hasattr(self.pipeline, "predict_frames"):
            raise TypeError(
                "create_app: give a pipeline name, a YAML path, a config dict, or an object with predict_frames()"
            )
        serving_section = _serving_section(pipeline)
        self.visualize_default = (
            settings.visualize if settings.visualize is not None else bool(serving_section.get("visualize", True))
        )
        self.status = "starting"  # starting | loading | warming up | ready | failed | shutting down
        self.load_error: Optional[str] = None
        self.on_load_failure: Optional[Callable[[BaseException], None]] = None
        self.batcher: Optional[Batcher] = None
        self.fetcher: Optional[inputs.UrlFetcher] = None
        self._infer_pool: Optional[ThreadPoolExecutor] = None
        self._decode_pool: Optional[ThreadPoolExecutor] = None
        self._load_task: Optional[asyncio.Task] = None

    @property
    def ready(self) -> bool:
        return self.status == "ready"

    # --- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        self._infer_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="posepipe-infer")
        self._decode_pool = ThreadPoolExecutor(max_workers=s.decode_workers, thread_name_prefix="posepipe-decode")
        self.fetcher = inputs.UrlFetcher(
            allow_private=s.allow_private_urls,
            timeout_s=s.url_timeout_s,
            max_bytes=s.max_image_bytes,
            max_redirects=s.max_redirects,
            user_agent=f"posepipe/{__version__}",
        )
        self.batcher = Batcher(
            self._run_batch,
            self._infer_pool,
            max_batch=s.max_batch,
            max_wait_s=s.max_wait_ms / 1000.0,
            max_queue=s.max_queue,
            max_queue_pixels=s.max_queue_pixels,
            on_batch=self.metrics.observe_batch,
            on_depth=self.metrics.queue_depth.set,
        )
        self.batcher.start()
        self._load_task = asyncio.get_running_loop().create_task(self._load(), name="posepipe-load")

    async def stop(self) -> None:
        self.status = "shutting down"
        self.metrics.ready.set(0)
        if self.batcher is not None:
            await self.batcher.close()
        if self.fetcher is not None:
            await self.fetcher.aclose()
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()
        if self._decode_pool is not None:
            self._decode_pool.shutdown(wait=True)
        if self._infer_pool is not None:
            self._infer_pool.shutdown(wait=False, cancel_futures=True)
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
            if self.settings.warmup:
                self.status = "warming up"
                await loop.run_in_executor(self._infer_pool, self._warm)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - reported through /ready and the log
            self.status = "failed"
            self.load_error = f"{type(e).__name__}: {e}"
            log.error("the pipeline failed to load: %s", self.load_error, exc_info=True)
            if self.on_load_failure is not None:
                self.on_load_failure(e)
            return
        if self.status == "shutting down":
            return
        self.status = "ready"
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

    def _warm(self) -> None:
        """Run every batch size the server can send once, so the first real
        requests don't pay for kernel selection and memory allocation (with
        oneDNN a new input shape costs 0.3-1 s once). A pipeline with its own
        `warmup()` (e.g. one that also warms its keypoint model,
        which synthetic frames without people cannot reach) is asked to do it."""
        warmup = getattr(self.pipeline, "warmup", None)
        if callable(warmup):
            warmup()
            return
        rng = np.random.default_rng(0)
        image = rng.integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
        for size in range(1, self.settings.max_batch + 1):
            self.pipeline.predict_frames([Frame(image, None) for _ in range(size)], None)

    def _run_batch(self, frames: List[Frame], threshold: Optional[float]) -> Sequence[Any]:
        return self.pipeline.predict_frames(frames, threshold)

    # --- one request -------------------------------------------------------------

    def admit(self) -> None:
        if not self.ready:
            reason = "shutting_down" if self.status == "shutting down" else "not_ready"
            self.metrics.rejected.labels(reason).inc()
            raise ApiError(503, self.not_ready_message(), {"Retry-After": str(self.settings.retry_after_s)})
        assert self.batcher is not None
        try:
            self.batcher.try_reserve()
        except QueueFull:
            self.metrics.rejected.labels("queue_full").inc()
            raise ApiError(
                503,
                f"the server is busy: {self.settings.max_queue} requests are already waiting; retry later",
                {"Retry-After": str(self.settings.retry_after_s)},
            ) from None
        except Closed:
            self.metrics.rejected.labels("shutting_down").inc()
            raise ApiError(503, "the server is shutting down", {"Retry-After": str(self.settings.retry_after_s)}) from None

    def not_ready_message(self) -> str:
        if self.status == "failed":
            return f"the pipeline failed to load: {self.load_error}"
        if self.status == "shutting down":
            return "the server is shutting down"
        return f"not ready: {self.status}"

    async def load_image(self, text: str) -> np.ndarray:
        loop = asyncio.get_running_loop()
        if inputs.is_url(text):
            if not self.settings.allow_url_inputs:
                raise ApiError(400, "image: URL inputs are disabled on this server; send the image as base64")
            assert self.fetcher is not None
            data = await self.fetcher.fetch(text)
            return await loop.run_in_executor(self._decode_pool, inputs.decode_image, data, self.limits)
        return await loop.run_in_executor(self._decode_pool, inputs.image_from_base64, text, self.limits)

    async def infer(self, body: InferRequest, log_id: str) -> bytes:
        self.admit()
        assert self.batcher is not None
        try:
            image = await self.load_image(body.image)
        except BaseException:
            self.batcher.release()
            raise
        try:
            result = await self.batcher.submit(Frame(image, None), body.detThreshold, image.shape[0] * image.shape[1])
        except QueueFull:
            self.metrics.rejected.labels("queue_full").inc()
            raise ApiError(
                503,
                f"the server is busy: the waiting images already hold {self.settings.max_queue_pixels} pixels; "
                "retry later",
                {"Retry-After": str(self.settings.retry_after_s)},
            ) from None
        except Closed:
            self.metrics.rejected.labels("shutting_down").inc()
            raise ApiError(503, "the server is shutting down", {"Retry-After": str(self.settings.retry_after_s)}) from None
        except InputError as e:
            raise ApiError(400, str(e)) from None
        visualize = body.visualize if body.visualize is not None else self.visualize_default
        if visualize:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._decode_pool, _success_body, log_id, result, True)
        return _success_body(log_id, result, False)


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
            with io.BytesIO() as buffer:
                drawn.convert("RGB").save(buffer, format="JPEG")
                payload["image"] = base64.b64encode(buffer.getvalue()).decode("ascii")
    return dumps({"logId": log_id, "result": payload, "errorCode": 0, "errorMsg": "Success"})


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
    an already built pipeline object with `predict_frames(frames, det_threshold)`.
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
        return Response(runtime.metrics.render(), media_type=runtime.metrics.content_type)

    @app.post(
        INFER_ENDPOINT,
        operation_id="infer",
        response_model=InferResponse,
        response_model_exclude_none=True,
        responses=_ERROR_RESPONSES,
        summary="Human keypoint detection on one image",
    )
    async def _infer(request: Request, body: InferRequest) -> Response:
        state = request_state(request.scope)
        try:
            payload = await runtime.infer(body, state["log_id"])
        except ApiError:
            state["log_id"] = _client_log_id(body.model_extra) or state["log_id"]
            raise
        except Exception:  # noqa: BLE001 - a pipeline bug: logged with the logId, answered 500
            state["log_id"] = _client_log_id(body.model_extra) or state["log_id"]
            log.exception("inference failed", extra={"logId": state["log_id"]})
            raise ApiError(500, "Internal server error") from None
        return Response(payload, media_type="application/json")

    # Outermost last: RequestContext sees every request, including 413s.
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContext, metrics=runtime.metrics, access_log_enabled=settings.access_log)
    return app
