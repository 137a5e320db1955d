"""`posepipe serve`: the HTTP server from the command line.

    posepipe serve --pipeline human_keypoint_detection --host 127.0.0.1 --port 8080 --device cpu
    posepipe serve --pipeline my.yaml --max_batch 8 --max_wait_ms 5 --max_queue 64
    posepipe serve --pipeline my.yaml --ray --replicas 2     (Ray Serve: posepipe.ray)

PaddleX's `paddlex --serve` flags (--pipeline, --host, --port, --device,
--use_hpip) mean the same here; the others are posepipe's."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from ..flags import add_flags, from_args, given
from ..options import PipelineOptions
from ..ray.settings import RayCluster, RayServeSettings
from .settings import ServingSettings

PROG = "posepipe serve"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Serve the human_keypoint_detection pipeline over HTTP with PaddleX's API "
        "(POST /human-keypoint-detection), plus /health, /ready, /metrics and /openapi.json.",
    )
    g = p.add_argument_group("pipeline (as paddlex --serve)")
    g.add_argument("--pipeline", default="human_keypoint_detection", help="pipeline name or PaddleX pipeline YAML path")
    g.add_argument("--device", default=None, help="cpu, gpu, gpu:N, ...; none: what create_pipeline picks")
    g.add_argument(
        "--use_hpip",
        action="store_true",
        default=None,
        help="high-performance inference, as PaddleX's flag (default: the pipeline YAML's use_hpip, else off)",
    )
    add_flags(p.add_argument_group("how the pipeline runs"), PipelineOptions)
    add_flags(p.add_argument_group("server"), ServingSettings)
    ray_group = p.add_argument_group("Ray Serve (with --ray; the server's limits above apply too)")
    add_flags(ray_group, RayCluster)
    add_flags(ray_group, RayServeSettings)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    argv = [a for a in argv if a != "--serve"]  # tolerate PaddleX's spelling
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = from_args(ServingSettings, args)
        options = given(PipelineOptions, args)
        PipelineOptions(**options)
        cluster = from_args(RayCluster, args)
        ray_settings = from_args(RayServeSettings, args)
    except ValueError as e:  # the dataclasses' own checks (ConfigError is a ValueError)
        parser.error(str(e))
    ray_flags = sorted(given(RayServeSettings, args)) + (["ray_address"] if cluster.ray_address else [])
    if ray_flags and not cluster.ray:
        parser.error(f"--{ray_flags[0]} needs --ray")
    if cluster.ray and settings.port == 0:
        parser.error("--ray needs a --port number: Ray Serve's proxy cannot pick a free one")

    # A bad name or YAML is reported now, before the server starts; model
    # loading (the slow part) happens after startup, behind /ready.
    from ..config import load_config
    from ..errors import PosepipeError

    try:
        load_config(args.pipeline, None)
    except PosepipeError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2

    if cluster.ray:
        from ..ray import RayMissing, require_ray

        try:
            require_ray()
        except RayMissing as e:
            print(f"{PROG}: error: {e}", file=sys.stderr)
            return 1
        from ..ray.cli import serve_main

        return serve_main(
            args.pipeline, settings, cluster, ray_settings, device=args.device, use_hpip=args.use_hpip,
            pipeline_options=options,
        )

    from .server import serve

    return serve(args.pipeline, settings, device=args.device, use_hpip=args.use_hpip, pipeline_options=options)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
