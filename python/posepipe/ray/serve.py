"""The HTTP server as a Ray Serve application: PaddleX's API, limits and
errors exactly as `posepipe serve` (the same serving.app request handling),
with the pipeline in replicas.

Two deployments:
  ingress   the HTTP app of `posepipe serve` (serving.app.build_http_app) over
            a `RayEngine`: admission, body limits and timeouts, parsing, URL
            downloads with their policy, base64 and the reply happen here, and
            each image file goes to a pipeline replica. A replica that dies
            with requests in it costs exactly those requests, answered here as
            503 (Ray's own proxy would say 500); Ray starts a new replica.
  pipeline  N replicas (or autoscaled), each holding one pipeline on its own
            inference thread. It decodes the file (serving.inputs, the same
            limits), Ray Serve's `@serve.batch` forms the detector
            batches (max_batch, max_wait_ms); each batch runs through
            serving.stage_calls.run_frames (person caps, keypoint steps, failure
            isolation), and the reply's `result` (JPEG included) is made here.

What differs from `posepipe serve`: `max_queue` counts the requests an
ingress replica holds until their reply (not until their detection batch
starts), `max_queue_pixels` and `max_queue_persons` are not enforced (each
replica's queue is bounded by its max_ongoing_requests, max_queue), and
connections, header timeouts and keep-alive are Ray's HTTP proxy's."""
from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
from ray import serve
from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, RequestCancelledError

from ..config import PIPELINE_NAME
from ..errors import InputError
from ..io import Frame
from ..serving import inputs, logs
from ..serving.app import ServingRuntime, build_http_app
from ..serving.batching import Closed, QueueFull
from ..serving.engine import PipelineSpec, build_pipeline, check_pipeline, is_config, visualize_default, warm_up
from ..serving.errors import ApiError
from ..serving.responses import result_payload
from ..serving.settings import ServingSettings
from ..serving.stage_calls import run_frames
from .settings import RayServeSettings, portable_config, threads_for

log = logging.getLogger("posepipe.serving")

APP_NAME = "posepipe"


class PipelineReplica:
    """One pipeline, loaded and warmed up before Ray sends it anything."""

    def __init__(
        self,
        pipeline: PipelineSpec,
        settings: ServingSettings,
        device: Optional[str],
        use_hpip: Optional[bool],
        pipeline_options: Dict[str, Any],
    ):
        logs.configure(settings.log_level, settings.log_format)
        self._settings = settings
        # Paddle predictors stay on the thread that made them: build, warm up and run on this one.
        self._infer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="posepipe-infer")
        self._images = ThreadPoolExecutor(max_workers=settings.decode_workers, thread_name_prefix="posepipe-decode")
        self._limits = settings.input_limits()
        self.pipeline = self._infer.submit(
            build_pipeline, pipeline, device=device, use_hpip=use_hpip, pipeline_options=pipeline_options
        ).result()
        if settings.warmup:
            self._infer.submit(warm_up, self.pipeline).result()
        self.run_batch.set_max_batch_size(settings.max_batch)
        self.run_batch.set_batch_wait_timeout_s(settings.max_wait_ms / 1000.0)
        log.info("pipeline replica ready", extra={"pid": os.getpid()})

    def ready(self) -> bool:
        return True

    async def infer(self, data: bytes, threshold: Optional[float], visualize: bool) -> Dict[str, Any]:
        """The reply's `result` for one image file, or {"error": {status, message}}.
        The file travels here, not its pixels: a tenth of the bytes to move."""
        try:
            image = await asyncio.get_running_loop().run_in_executor(
                self._images, inputs.decode_image, data, self._limits
            )
        except ApiError as e:
            return {"error": {"status": e.status, "message": e.message}}
        return await self.run_batch((image, threshold, visualize))

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.005)  # set from the settings in __init__
    async def run_batch(self, items: List[Tuple[np.ndarray, Optional[float], bool]]) -> List[Dict[str, Any]]:
        loop = asyncio.get_running_loop()
        results: List[Any] = [None] * len(items)
        groups: Dict[Optional[float], List[int]] = {}
        for i, (_, threshold, _) in enumerate(items):
            groups.setdefault(threshold, []).append(i)
        s = self._settings
        for threshold, indices in groups.items():
            frames = [Frame(items[i][0], None) for i in indices]
            outcomes = await loop.run_in_executor(
                self._infer,
                lambda: run_frames(
                    self.pipeline, frames, threshold, max_persons=s.max_persons, max_batch_persons=s.max_batch_persons
                ),
            )
            for i, outcome in zip(indices, outcomes):
                results[i] = outcome
        return list(
            await asyncio.gather(*(self._reply(result, visualize) for result, (_, _, visualize) in zip(results, items)))
        )

    async def _reply(self, result: Any, visualize: bool) -> Dict[str, Any]:
        if isinstance(result, InputError):
            return {"error": {"status": 400, "message": str(result)}}
        if isinstance(result, BaseException):
            log.error("inference failed", exc_info=result)
            return {"error": {"status": 500, "message": "Internal server error"}}
        if not visualize:
            return result_payload(result, False)
        return await asyncio.get_running_loop().run_in_executor(self._images, result_payload, result, True)


class RayEngine:
    """serving.engine.Engine over the pipeline deployment's handle. A
    reservation lasts until the reply: `max_queue` bounds what this ingress
    replica holds."""

    def __init__(self, pipeline: Any, settings: ServingSettings):
        self._pipeline = pipeline  # DeploymentHandle of the pipeline deployment
        self._settings = settings
        self._held = 0
        self._closing = False
        self._idle: Optional[asyncio.Event] = None

    def start(self, runtime: ServingRuntime) -> None:
        self._idle = asyncio.Event()
        self._idle.set()

    async def load(self, runtime: ServingRuntime) -> None:
        runtime.status = "loading"
        # Answered once a pipeline replica runs (Ray starts them loaded and warmed up).
        await self._pipeline.ready.remote()

    def try_reserve(self) -> None:
        if self._closing:
            raise Closed()
        if self._held >= self._settings.max_queue:
            raise QueueFull("requests")
        self._held += 1
        assert self._idle is not None
        self._idle.clear()

    def release(self) -> None:
        self._held -= 1
        if self._held == 0 and self._idle is not None:
            self._idle.set()

    def busy_message(self, what: str) -> str:
        return f"the server is busy: its queue is full ({self._settings.max_queue} requests); retry later"

    async def submit(self, data: bytes, threshold: Optional[float], visualize: bool) -> Dict[str, Any]:
        retry = {"Retry-After": str(self._settings.retry_after_s)}
        try:
            reply = await self._pipeline.infer.remote(data, threshold, visualize)
        except RequestCancelledError:
            raise asyncio.CancelledError() from None
        except BackPressureError:
            raise QueueFull("requests") from None
        except (RayActorError, DeploymentUnavailableError) as e:
            log.warning("a pipeline replica failed with a request in it: %s", type(e).__name__)
            raise ApiError(503, "the pipeline replica serving this request stopped; retry", retry) from None
        except RayTaskError as e:
            log.error("the pipeline replica failed: %s", e)
            raise ApiError(500, "Internal server error") from None
        finally:
            self.release()
        error = reply.get("error")
        if error is not None:
            raise ApiError(error["status"], error["message"])
        return reply

    async def close(self) -> None:
        """Let the requests held finish (the ingress is shutting down)."""
        self._closing = True
        if self._idle is not None:
            await self._idle.wait()


@serve.ingress()
class Ingress:
    def __init__(self, pipeline: Any, settings: ServingSettings, visualize: bool):
        logs.configure(settings.log_level, settings.log_format)
        self._runtime = ServingRuntime(RayEngine(pipeline, settings), settings, visualize)

    def __serve_build_asgi_app__(self) -> Any:
        return build_http_app(self._runtime)


def build_app(
    pipeline: PipelineSpec = PIPELINE_NAME,
    settings: Optional[ServingSettings] = None,
    *,
    device: Optional[str] = None,
    use_hpip: Optional[bool] = None,
    pipeline_options: Optional[Dict[str, Any]] = None,
    ray_settings: Optional[RayServeSettings] = None,
) -> serve.Application:
    """The Ray Serve application serving `pipeline` (a name, a PaddleX YAML
    path, a config dict, or a picklable object with the stage methods) with
    PaddleX's API at the route prefix it is run under. A YAML is read here,
    its model_dir paths taken from the current folder (as `posepipe` does);
    the models must be at those paths on every node that runs a replica."""
    settings = settings or ServingSettings()
    ray_settings = ray_settings or RayServeSettings()
    cpus, options = threads_for(ray_settings.replica_cpus, dict(pipeline_options or {}))
    spec = portable_config(pipeline) if is_config(pipeline) else check_pipeline(pipeline)
    replicas = serve.deployment(
        PipelineReplica,
        name="pipeline",
        ray_actor_options={"num_cpus": cpus},
        max_ongoing_requests=settings.max_queue,
        graceful_shutdown_timeout_s=settings.graceful_timeout_s,
        **ray_settings.scaling(settings.max_batch),
    )
    ingress = serve.deployment(
        Ingress,
        name="ingress",
        num_replicas=ray_settings.ingress_replicas,
        ray_actor_options={"num_cpus": 0},
        max_ongoing_requests=settings.limit_concurrency or 1_000_000,
        graceful_shutdown_timeout_s=settings.graceful_timeout_s,
    )
    return ingress.bind(
        replicas.bind(spec, settings, device, use_hpip, options),
        settings,
        visualize_default(settings, pipeline),
    )


def app_builder(args: Mapping[str, Any]) -> serve.Application:
    """For Ray Serve config files (`import_path: posepipe.ray.serve:app_builder`)
    and `serve run posepipe.ray.serve:app_builder pipeline=my.yaml replicas=2`:
    build_app(**builder_args(args))."""
    return build_app(**builder_args(args))


def builder_args(args: Mapping[str, Any]) -> Dict[str, Any]:
    """A config file's `args` as build_app's arguments: pipeline, device,
    use_hpip, settings (ServingSettings fields), pipeline_options
    (PipelineOptions fields), and RayServeSettings fields (replicas,
    min_replicas, max_replicas, ...), each optional; `serve run k=v` values
    come as text."""
    args = dict(args)
    ray_fields = {name: _number(args.pop(name)) for name in list(args) if name in RayServeSettings.__dataclass_fields__}
    built = {
        "pipeline": args.pop("pipeline", PIPELINE_NAME),
        "device": args.pop("device", None),
        "use_hpip": _boolean(args.pop("use_hpip", None)),
        "settings": ServingSettings(**dict(args.pop("settings", None) or {})),
        "pipeline_options": dict(args.pop("pipeline_options", None) or {}),
        "ray_settings": RayServeSettings(**ray_fields),
    }
    if args:
        raise ValueError(
            f"posepipe.ray.serve:app_builder: unknown argument(s) {', '.join(sorted(args))}; known: pipeline, device, "
            f"use_hpip, settings, pipeline_options, {', '.join(RayServeSettings.__dataclass_fields__)}"
        )
    return built


def _number(value: Any) -> Any:
    """`serve run ... replicas=2` passes text."""
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return float(value)
    return value


def _boolean(value: Any) -> Optional[bool]:
    if value is None:  # not said: the pipeline config's use_hpip
        return None
    if isinstance(value, str):
        from ..flags import parse_bool

        return parse_bool(value)
    return bool(value)
