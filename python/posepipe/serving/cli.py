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

from ..cli_support import PipelineChoice, fail
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
    add_flags(p.add_argument_group("pipeline (as paddlex --serve)"), PipelineChoice)
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
        choice = from_args(PipelineChoice, args)
        settings = from_args(ServingSettings, args)
        options = given(PipelineOptions, args)
        PipelineOptions(**options)
        cluster = from_args(RayCluster, args)
        ray_settings = from_args(RayServeSettings, args)
    except ValueError as e:  # the dataclasses' own checks (ConfigError is a ValueError)
        parser.error(str(e))
    misplaced = cluster.flag_needing_ray(given(RayServeSettings, args))
    if misplaced:
        parser.error(f"--{misplaced} needs --ray")
    if cluster.ray and settings.port == 0:
        parser.error("--ray needs a --port number: Ray Serve's proxy cannot pick a free one")

    # A bad name or YAML is reported now, before the server starts; model
    # loading (the slow part) happens after startup, behind /ready.
    from ..config import load_config
    from ..errors import PosepipeError

    try:
        load_config(choice.pipeline, None)
    except PosepipeError as e:
        return fail(str(e), 2, PROG)

    if cluster.ray:
        from ..ray import RayMissing, require_ray

        try:
            require_ray()
        except RayMissing as e:
            return fail(str(e), 1, PROG)
        from ..ray.cli import serve_main

        return serve_main(
            choice.pipeline, settings, cluster, ray_settings, device=choice.device, use_hpip=choice.use_hpip,
            pipeline_options=options,
        )

    from .server import serve

    return serve(choice.pipeline, settings, device=choice.device, use_hpip=choice.use_hpip, pipeline_options=options)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
