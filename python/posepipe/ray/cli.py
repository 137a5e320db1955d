"""`posepipe serve --ray` and `posepipe --ray`: connect to Ray (or start one on
this machine), run, and leave the cluster as it was found.

    posepipe serve --pipeline my.yaml --ray --replicas 2 --port 8080
    posepipe serve --pipeline my.yaml --ray --ray_address auto --min_replicas 1 --max_replicas 8
    posepipe --pipeline my.yaml --input photos/ --save_path out/ --ray [--actors 4]"""
from __future__ import annotations

import logging
import signal
import sys
import threading
from typing import Any, Callable, Dict, Optional

from ..serving.settings import ServingSettings
from . import require_ray
from .settings import RayBatchSettings, RayCluster, RayServeSettings

log = logging.getLogger("posepipe.serving")


class _Connection:
    """ray.init for this command; shut down afterwards only if it started Ray."""

    def __init__(self, cluster: RayCluster):
        self.ray = require_ray()
        self.started_here = cluster.ray_address is None and not self.ray.is_initialized()
        if not self.ray.is_initialized():
            if cluster.ray_address is None:
                self.ray.init(include_dashboard=False, logging_level=logging.WARNING)
            else:
                self.ray.init(address=cluster.ray_address, logging_level=logging.WARNING)

    def close(self) -> None:
        if self.started_here:
            self.ray.shutdown()


def serve_main(
    pipeline: Any,
    settings: ServingSettings,
    cluster: RayCluster,
    ray_settings: RayServeSettings,
    *,
    device: Optional[str],
    use_hpip: Optional[bool],
    pipeline_options: Dict[str, Any],
) -> int:
    """Serve until SIGTERM (exit 0) or Ctrl-C (130); 1 when the application
    cannot be deployed. The application is deleted on the way out; a Serve
    that this command started is shut down with it."""
    from ..serving import logs

    logs.configure(settings.log_level, settings.log_format)
    connection = _Connection(cluster)
    from ray import serve

    from .serve import APP_NAME, build_app

    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    code = 0
    try:
        serve.start(
            http_options={
                "host": settings.host,
                "port": settings.port,
                "keep_alive_timeout_s": settings.timeout_keep_alive_s,
            }
        )
        app = build_app(
            pipeline, settings, device=device, use_hpip=use_hpip, pipeline_options=pipeline_options,
            ray_settings=ray_settings,
        )
        _warn_if_short_of_cpus(connection.ray, ray_settings, pipeline_options)
        serve.run(app, name=APP_NAME, route_prefix="/")
        log.info("ready", extra={"url": f"http://{settings.host}:{settings.port}", "ray": True})
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        code = 130
    except Exception as e:  # noqa: BLE001 - a deployment that failed (the replicas' logs say why)
        log.error("the Ray Serve application failed: %s", e)
        code = 1
    finally:
        signal.signal(signal.SIGTERM, previous)
        try:
            serve.delete(APP_NAME)
            if connection.started_here:
                serve.shutdown()
        finally:
            connection.close()
    return code


def _warn_if_short_of_cpus(ray: Any, ray_settings: RayServeSettings, pipeline_options: Dict[str, Any]) -> None:
    """Replicas that do not fit wait for CPUs (forever on a fixed cluster): say so."""
    from .settings import threads_for

    cpus, _ = threads_for(ray_settings.replica_cpus, pipeline_options)
    wanted = cpus * (ray_settings.min_replicas or ray_settings.replicas or 1)
    available = ray.cluster_resources().get("CPU", 0)
    if wanted > available:
        log.warning(
            "the replicas ask for %g CPUs, the Ray cluster has %g: the others wait until CPUs join "
            "(lower --replicas, or --replica_cpus / --cpu_threads)", wanted, available,
        )


def batch_main(
    pipeline_config: Dict[str, Any],
    input: Any,
    save_path: str,
    cluster: RayCluster,
    settings: RayBatchSettings,
    *,
    det_threshold: Optional[float],
    device: Optional[str],
    use_hpip: Optional[bool],
    pipeline_options: Dict[str, Any],
    images: bool,
    quiet: bool,
    on_error: Callable[[str], None],
) -> "tuple[int, int]":
    """(failed, total) of a Ray Data run of `posepipe --ray`."""
    connection = _Connection(cluster)
    # Ray Data says where its logs are and how its plan looks; -q: only errors.
    logging.getLogger("ray.data").setLevel(logging.ERROR if quiet else logging.WARNING)
    try:
        from .batch import run_batch

        report = run_batch(
            pipeline_config,
            input,
            save_path,
            det_threshold=det_threshold,
            device=device,
            use_hpip=use_hpip,
            pipeline_options=pipeline_options,
            settings=settings,
            images=images,
            progress=not quiet,
            on_error=on_error,
        )
    finally:
        connection.close()
    if report.skipped and not quiet:
        print(f"posepipe: {report.skipped} of {report.total} inputs already had their results in {save_path}",
              file=sys.stderr)
    return len(report.errors), report.total
