"""`posepipe serve`: the HTTP server from the command line.

    posepipe serve --pipeline human_keypoint_detection --host 127.0.0.1 --port 8080 --device cpu
    posepipe serve --pipeline my.yaml --max_batch 8 --max_wait_ms 5 --max_queue 64

PaddleX's `paddlex --serve` flags (--pipeline, --host, --port, --device,
--use_hpip) mean the same here; the others are posepipe's."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from ..cli import non_negative_number as _non_negative, positive_number as _positive
from .settings import ServingSettings

PROG = "posepipe serve"


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    d = ServingSettings()
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Serve the human_keypoint_detection pipeline over HTTP with PaddleX's API "
        "(POST /human-keypoint-detection), plus /health, /ready, /metrics and /openapi.json.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("pipeline (as paddlex --serve)")
    g.add_argument("--pipeline", default="human_keypoint_detection", help="pipeline name or PaddleX pipeline YAML path")
    g.add_argument("--device", default=None, help="cpu, gpu, gpu:N, ...; none: what create_pipeline picks")
    g.add_argument("--use_hpip", action="store_true", help="high-performance inference, as PaddleX's flag")
    g.add_argument("--cpu_threads", type=_positive(int), default=None, help="threads for the models; none: all cores")

    g = p.add_argument_group("listening")
    g.add_argument("--host", default=d.host)
    g.add_argument("--port", type=int, default=d.port)

    g = p.add_argument_group("batching and overload")
    g.add_argument("--max_batch", type=_positive(int), default=d.max_batch, help="most images per pipeline call")
    g.add_argument("--max_wait_ms", type=_non_negative(float), default=d.max_wait_ms,
                   help="how long the oldest queued request waits for others to join its batch")
    g.add_argument("--max_queue", type=_positive(int), default=d.max_queue,
                   help="requests waiting for the pipeline (decoding or queued); one more gets 503 at once")
    g.add_argument("--max_queue_pixels", type=_positive(int), default=d.max_queue_pixels,
                   help="decoded pixels the waiting requests may hold (memory bound); over it: 503")
    g.add_argument("--limit_concurrency", type=_positive(int), default=d.limit_concurrency,
                   help="uvicorn's cap on concurrent connections; none: no cap")

    g = p.add_argument_group("input limits and URL safety")
    g.add_argument("--max_body_bytes", type=_positive(int), default=d.max_body_bytes, help="413 above it")
    g.add_argument("--max_image_bytes", type=_positive(int), default=d.max_image_bytes,
                   help="encoded image (after base64, or downloaded); 413 above it")
    g.add_argument("--max_pixels", type=_positive(int), default=d.max_pixels, help="decoded width*height; 413 above it")
    g.add_argument("--url_timeout", type=_positive(float), default=d.url_timeout_s, help="seconds for a whole URL download")
    g.add_argument("--max_redirects", type=_non_negative(int), default=d.max_redirects)
    g.add_argument("--allow_private_urls", action="store_true",
                   help="fetch URLs on private, loopback, link-local and other non-global addresses (refused by default)")
    g.add_argument("--no_url_inputs", action="store_true", help="accept base64 images only")

    g = p.add_argument_group("responses and process")
    g.add_argument("--visualize", type=_bool, default=None,
                   help="default of the request's visualize; none: the YAML's Serving.visualize, else true")
    g.add_argument("--decode_threads", type=_non_negative(int), default=d.decode_threads,
                   help="threads decoding images and encoding visualizations (0: min(4, cores))")
    g.add_argument("--no_warmup", action="store_true", help="report ready without a warm-up run")
    g.add_argument("--graceful_timeout", type=_non_negative(float), default=d.graceful_timeout_s,
                   help="seconds in-flight requests get to finish on SIGTERM/SIGINT")
    g.add_argument("--log_level", default=d.log_level, choices=["critical", "error", "warning", "info", "debug"])
    g.add_argument("--log_format", default=d.log_format, choices=["json", "text"])
    g.add_argument("--no_access_log", action="store_true", help="no per-request log line")
    return p


def settings_from_args(args: argparse.Namespace) -> ServingSettings:
    return ServingSettings(
        host=args.host,
        port=args.port,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
        max_queue_pixels=args.max_queue_pixels,
        max_body_bytes=args.max_body_bytes,
        max_image_bytes=args.max_image_bytes,
        max_pixels=args.max_pixels,
        url_timeout_s=args.url_timeout,
        max_redirects=args.max_redirects,
        allow_url_inputs=not args.no_url_inputs,
        allow_private_urls=args.allow_private_urls,
        visualize=args.visualize,
        decode_threads=args.decode_threads,
        warmup=not args.no_warmup,
        graceful_timeout_s=args.graceful_timeout,
        limit_concurrency=args.limit_concurrency,
        log_level=args.log_level,
        log_format=args.log_format,
        access_log=not args.no_access_log,
    )


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    argv = [a for a in argv if a != "--serve"]  # tolerate PaddleX's spelling
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be 0..65535, got {args.port}")
    settings = settings_from_args(args)

    # A bad name or YAML is reported now, before the server starts; model
    # loading (the slow part) happens after startup, behind /ready.
    from ..config import load_config
    from ..errors import PosepipeError

    try:
        load_config(args.pipeline, None)
    except PosepipeError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2

    from .server import serve

    options = {"cpu_threads": args.cpu_threads} if args.cpu_threads else None
    return serve(args.pipeline, settings, device=args.device, use_hpip=args.use_hpip, pipeline_options=options)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
