"""What runs a decoded image through the pipeline for the HTTP app: an Engine.

The request handling (app.py: admission, body, parsing, downloads, decoding,
the reply) is the same for every server; the engine is what differs:
`LocalEngine` holds the pipeline in this process and schedules its stages
(batching.py); posepipe.ray's engine sends each image to a Ray Serve replica
that holds one. Both answer `submit` with the reply's `result` object
(responses.result_payload).

Also here: turning what create_app / build_app were given (a pipeline name, a
YAML path, a config dict or a pipeline object) into a pipeline, and the
PaddleX rule for the default of `visualize`."""
from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Protocol, Union

from ..io import Frame
from . import inputs
from .batching import Batcher
from .responses import result_payload
from .settings import ServingSettings
from .stage_calls import has_stages

if TYPE_CHECKING:  # pragma: no cover
    from .app import ServingRuntime

log = logging.getLogger("posepipe.serving")

PipelineSpec = Union[str, os.PathLike, Mapping[str, Any], Any]


class Engine(Protocol):
    """Admission (`try_reserve` raises batching.QueueFull or Closed; every
    reservation ends in `release` or is taken over by `submit`), loading, and
    inference."""

    def start(self, runtime: "ServingRuntime") -> None:
        """In the event loop, before any request."""

    async def load(self, runtime: "ServingRuntime") -> None:
        """Until the engine can serve (sets runtime.status as it goes); raises if it cannot."""

    def try_reserve(self) -> None: ...

    def release(self) -> None: ...

    def busy_message(self, what: str) -> str:
        """The 503 text when try_reserve ran out of `what`."""

    async def submit(self, data: bytes, threshold: Optional[float], visualize: bool) -> Dict[str, Any]:
        """The reply's `result` for one reserved image file (the reservation is
        taken over); ApiError 400/413 when it does not decode within the limits
        (serving.inputs.decode_image)."""

    async def close(self) -> None:
        """Finish what was submitted, then stop."""


class LocalEngine:
    """The pipeline in this process, built on its own inference thread after
    startup (Paddle predictors stay on the thread that made them), warmed up,
    and fed by the Batcher."""

    def __init__(
        self,
        pipeline: PipelineSpec,
        settings: ServingSettings,
        *,
        device: Optional[str] = None,
        use_hpip: Optional[bool] = None,
        pipeline_options: Optional[Dict[str, Any]] = None,
    ):
        self.settings = settings
        self.spec = pipeline
        self._build_args = dict(device=device, use_hpip=use_hpip, pipeline_options=pipeline_options)
        self.pipeline: Any = None if is_config(pipeline) else check_pipeline(pipeline)
        self.batcher: Optional[Batcher] = None
        self._infer_pool: Optional[ThreadPoolExecutor] = None
        self._image_pool: Optional[Executor] = None
        self._limits = settings.input_limits()

    def start(self, runtime: "ServingRuntime") -> None:
        s = self.settings
        self._infer_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="posepipe-infer")
        self._image_pool = runtime.decode_pool
        metrics = runtime.metrics
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
            on_batch=metrics.observe_batch,
            on_keypoint_step=metrics.observe_keypoint_step,
            on_depth=metrics.queue_depth.set,
        )
        self.batcher.start()

    async def load(self, runtime: "ServingRuntime") -> None:
        loop = asyncio.get_running_loop()
        if self.pipeline is None:
            runtime.status = "loading"
            log.info("loading the pipeline", extra={"pipeline": describe(self.spec)})
            self.pipeline = await loop.run_in_executor(
                self._infer_pool, lambda: build_pipeline(self.spec, **self._build_args)
            )
        if self.settings.warmup and runtime.status != "shutting down":
            runtime.status = "warming up"
            await loop.run_in_executor(self._infer_pool, warm_up, self.pipeline)

    # --- the batcher's view of the pipeline (called on the inference thread) -----

    def predict_boxes(self, frames, det_threshold):
        return self.pipeline.predict_boxes(frames, det_threshold)

    def estimate_keypoints(self, frames, boxes):
        return self.pipeline.estimate_keypoints(frames, boxes)

    def build_result(self, frame, boxes, keypoints):
        return self.pipeline.build_result(frame, boxes, keypoints)

    # --- admission and inference ----------------------------------------------------

    def try_reserve(self) -> None:
        assert self.batcher is not None
        self.batcher.try_reserve()

    def release(self) -> None:
        assert self.batcher is not None
        self.batcher.release()

    @property
    def queued_pixels(self) -> int:
        return self.batcher.queued_pixels if self.batcher is not None else 0

    @property
    def queued_persons(self) -> int:
        return self.batcher.queued_persons if self.batcher is not None else 0

    def busy_message(self, what: str) -> str:
        if what == "persons":
            return (
                f"the server is busy: {self.queued_persons} persons found in earlier images are waiting "
                "for their keypoints; retry later"
            )
        if what == "pixels":
            return (
                f"the server is busy: the waiting images already hold {self.settings.max_queue_pixels} pixels; "
                "retry later"
            )
        return f"the server is busy: its queue is full ({self.settings.max_queue} requests); retry later"

    async def submit(self, data: bytes, threshold: Optional[float], visualize: bool) -> Dict[str, Any]:
        assert self.batcher is not None
        loop = asyncio.get_running_loop()
        try:
            image = await loop.run_in_executor(self._image_pool, inputs.decode_image, data, self._limits)
        except BaseException:
            self.batcher.release()
            raise
        result = await self.batcher.submit(Frame(image, None), threshold, image.shape[0] * image.shape[1])
        if visualize:  # drawing and JPEG encoding off the event loop
            return await loop.run_in_executor(self._image_pool, result_payload, result, True)
        return result_payload(result, False)

    async def close(self) -> None:
        if self.batcher is not None:
            await self.batcher.close()
        if self._infer_pool is not None:
            self._infer_pool.shutdown(wait=False, cancel_futures=True)


# --- pipelines from what the caller gave ----------------------------------------------


def is_config(pipeline: PipelineSpec) -> bool:
    return isinstance(pipeline, (str, os.PathLike, Mapping))


def check_pipeline(pipeline: Any) -> Any:
    if not has_stages(pipeline):
        raise TypeError(
            "give a pipeline name, a YAML path, a config dict, or an object with predict_boxes(), "
            "estimate_keypoints() and build_result() (as posepipe's pipeline has)"
        )
    return pipeline


def build_pipeline(
    spec: PipelineSpec,
    *,
    device: Optional[str] = None,
    use_hpip: Optional[bool] = None,
    pipeline_options: Optional[Dict[str, Any]] = None,
) -> Any:
    """The pipeline `spec` stands for: create_pipeline on a name, a YAML path
    or a config dict; a pipeline object as it is."""
    if not is_config(spec):
        return check_pipeline(spec)
    from .. import create_pipeline

    options = dict(pipeline_options or {})
    if isinstance(spec, Mapping):
        return create_pipeline(config=dict(spec), device=device, use_hpip=use_hpip, **options)
    return create_pipeline(pipeline=os.fspath(spec), device=device, use_hpip=use_hpip, **options)


def warm_up(pipeline: Any) -> None:
    """Every batch shape once, so the first requests don't pay for kernel
    selection and memory allocation (with oneDNN 0.3-1 s per new shape)."""
    warmup = getattr(pipeline, "warmup", None)
    if callable(warmup):
        warmup()


def describe(spec: PipelineSpec) -> str:
    if isinstance(spec, Mapping):
        return "<config dict>"
    return os.fspath(spec) if isinstance(spec, (str, os.PathLike)) else type(spec).__name__


def visualize_default(settings: ServingSettings, spec: PipelineSpec) -> bool:
    """The request's `visualize` when it is null: the server setting, else the
    pipeline config's `Serving.visualize` (PaddleX's app config), else true."""
    if settings.visualize is not None:
        return settings.visualize
    return bool(_serving_section(spec).get("visualize", True))


def _serving_section(spec: PipelineSpec) -> Dict[str, Any]:
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
