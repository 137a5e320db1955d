"""ServingSettings: every knob of the HTTP server, with its default and the CLI
flag that sets it (`posepipe serve --help` prints the same list)."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Optional

_LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
_LOG_FORMATS = ("json", "text")


@dataclass(frozen=True)
class ServingSettings:
    # --- where to listen (same defaults as `paddlex --serve`) -----------------
    host: str = "0.0.0.0"
    port: int = 8080

    # --- batching: concurrent requests share one pipeline call ----------------
    # Most images per pipeline call. On CPU the models' cost grows about
    # linearly with the batch, so bigger batches buy little throughput and cost
    # latency; on GPU raise it.
    max_batch: int = 4
    # How long the oldest waiting request may wait for others to join its batch.
    # A batch leaves as soon as it is full, or at once when the previous batch
    # kept the requests waiting longer than this already.
    max_wait_ms: float = 5.0
    # Requests admitted but not yet handed to the pipeline (decoding or queued).
    # One more is answered 503 at once (with Retry-After) instead of queueing.
    max_queue: int = 64
    # Decoded pixels the waiting requests may hold (3 bytes each: 256 MP is
    # 768 MB). One more decoded image over it: 503. Bounds memory where
    # max_queue alone would not (64 x 67 MP would be 13 GB).
    max_queue_pixels: int = 256_000_000

    # --- limits on what a request may make the server do ----------------------
    # Request body, checked from Content-Length before the body is read (and
    # while reading a chunked body). Over it: 413.
    max_body_bytes: int = 32 * 1024 * 1024
    # Encoded image after base64 decoding, or downloaded from a URL. Over it: 413.
    max_image_bytes: int = 24 * 1024 * 1024
    # Decoded width x height, checked from the image header before decoding. Over it: 413.
    max_pixels: int = 8192 * 8192
    # Whole URL download (DNS, connect, redirects, body). Over it: 504.
    url_timeout_s: float = 10.0
    max_redirects: int = 5
    # False: an `image` that is a URL is refused (400); only base64 is accepted.
    allow_url_inputs: bool = True
    # False: URLs whose host resolves to a private, loopback, link-local,
    # multicast or reserved address are refused (400); every resolved address
    # and every redirect hop is checked, and the connection goes to the checked
    # address (no DNS-rebinding window).
    allow_private_urls: bool = False

    # --- responses -------------------------------------------------------------
    # Default of the request's `visualize` when it is null or missing. None: the
    # pipeline YAML's `Serving.visualize`, else True (PaddleX's rule).
    visualize: Optional[bool] = None

    # --- process ---------------------------------------------------------------
    # Threads that decode images and encode visualizations (0: min(4, cores)).
    decode_threads: int = 0
    # Run the pipeline once on synthetic images before /ready says yes.
    warmup: bool = True
    # On SIGTERM/SIGINT: stop accepting, finish in-flight requests for up to
    # this long, then stop.
    graceful_timeout_s: float = 30.0
    # uvicorn's cap on concurrent connections+requests (None: none); above it
    # uvicorn itself answers 503 (a plain-text body, not the JSON envelope).
    limit_concurrency: Optional[int] = None
    timeout_keep_alive_s: int = 5
    # Seconds a 503 asks the client to wait (Retry-After).
    retry_after_s: int = 1
    log_level: str = "info"
    log_format: str = "json"  # one JSON object per line, or "text"
    access_log: bool = True  # one line per request, with its logId

    def __post_init__(self) -> None:
        def positive_int(name: str) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ServingSettings.{name} must be a positive integer, got {value!r}")

        for name in ("max_batch", "max_queue", "max_queue_pixels", "max_body_bytes", "max_image_bytes", "max_pixels"):
            positive_int(name)
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ValueError(f"ServingSettings.port must be 0..65535, got {self.port!r}")
        for name in ("max_wait_ms", "graceful_timeout_s"):
            if not isinstance(getattr(self, name), (int, float)) or getattr(self, name) < 0:
                raise ValueError(f"ServingSettings.{name} must be a number >= 0, got {getattr(self, name)!r}")
        if not isinstance(self.url_timeout_s, (int, float)) or self.url_timeout_s <= 0:
            raise ValueError(f"ServingSettings.url_timeout_s must be > 0, got {self.url_timeout_s!r}")
        if not isinstance(self.max_redirects, int) or self.max_redirects < 0:
            raise ValueError(f"ServingSettings.max_redirects must be >= 0, got {self.max_redirects!r}")
        if not isinstance(self.decode_threads, int) or self.decode_threads < 0:
            raise ValueError(f"ServingSettings.decode_threads must be >= 0, got {self.decode_threads!r}")
        if self.limit_concurrency is not None:
            positive_int("limit_concurrency")
        if self.log_level not in _LOG_LEVELS:
            raise ValueError(f"ServingSettings.log_level must be one of {', '.join(_LOG_LEVELS)}, got {self.log_level!r}")
        if self.log_format not in _LOG_FORMATS:
            raise ValueError(f"ServingSettings.log_format must be json or text, got {self.log_format!r}")

    @property
    def decode_workers(self) -> int:
        return self.decode_threads or max(1, min(4, os.cpu_count() or 1))

    def replace(self, **changes) -> "ServingSettings":
        return dataclasses.replace(self, **changes)
