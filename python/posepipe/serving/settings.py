"""ServingSettings: every knob of the HTTP server, declared once with its
default and help; `posepipe serve` builds its flags from these fields (flags.py)."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from ..flags import setting

if TYPE_CHECKING:  # pragma: no cover
    from ..io import InputLimits

_LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
_LOG_FORMATS = ("json", "text")


@dataclass(frozen=True)
class ServingSettings:
    # --- where to listen (same defaults as `paddlex --serve`) -----------------
    host: str = setting("0.0.0.0", help="address to listen on")
    port: int = setting(8080, help="port to listen on (0: any free port)")

    # --- batching: concurrent requests share detector and keypoint calls ------
    # On CPU the models' cost grows about linearly with the batch, so bigger
    # batches buy little throughput and cost latency; on GPU raise it.
    max_batch: int = setting(4, help="most images per detector batch")
    # A batch leaves as soon as it is full, or at once when the previous batch
    # kept the requests waiting longer than this already.
    max_wait_ms: float = setting(5.0, help="how long the oldest queued request waits for others to join its batch")
    max_queue: int = setting(
        64,
        help="requests admitted and not yet detected (reading their body, decoding or queued); one more gets 503 "
        "at once, before its body is read",
    )
    # 256 MP is 768 MB of BGR frames: bounds memory where max_queue alone would
    # not (64 x 67 MP would be 13 GB).
    max_queue_pixels: int = setting(
        256_000_000, help="decoded pixels the waiting requests may hold (a memory bound); over it: 503"
    )
    # Requests cost one detector pass plus one keypoint crop per person, and a
    # low detThreshold on a noisy image finds a person in every box the detector
    # keeps. The keypoint work is scheduled in steps of max_batch_persons,
    # interleaved with other requests' work, so one such image cannot hold up
    # the others; the persons waiting for keypoints count when admitting.
    max_persons: int = setting(
        100,
        help="most persons per image: the top-scoring ones above the threshold are kept (PaddleX's detectors "
        "keep at most 100)",
    )
    max_batch_persons: int = setting(
        32, help="most persons per keypoint step; other requests' work runs between the steps of a crowded image"
    )
    max_queue_persons: int = setting(
        400, help="persons found and waiting for their keypoints; while over it, new requests get 503"
    )

    # --- limits on what a request may make the server do ----------------------
    # Checked from Content-Length before the body is read (and while reading a chunked body).
    max_body_bytes: int = setting(32 * 1024 * 1024, help="request body size; 413 above it")
    max_image_bytes: int = setting(
        24 * 1024 * 1024, help="encoded image size (after base64 decoding, or downloaded); 413 above it"
    )
    # Checked from the image header before decoding.
    max_pixels: int = setting(8192 * 8192, help="decoded width x height; 413 above it")
    url_timeout_s: float = setting(
        10.0, flag="url_timeout", help="seconds for a whole URL download (DNS, connect, redirects, body); 504 after it"
    )
    max_redirects: int = setting(5, help="redirects followed for a URL input")
    # A URL download holds a download slot, not a place in the inference queue.
    max_downloads: int = setting(
        16, help="URL downloads in progress at once (each up to max_image_bytes); one more gets 503 at once"
    )
    allow_url_inputs: bool = setting(True, flag="url_inputs", help="refuse http(s) URLs as `image`: base64 only")
    # Every resolved address and every redirect hop is checked, and the
    # connection goes to the checked address (no DNS-rebinding window).
    allow_private_urls: bool = setting(
        False,
        help="fetch URLs whose host resolves to a private, loopback, link-local or other non-global address "
        "(refused by default)",
    )

    # --- responses -------------------------------------------------------------
    visualize: Optional[bool] = setting(
        None,
        help="default of the request's visualize when it is null or missing; none: the pipeline YAML's "
        "Serving.visualize, else true (PaddleX's rule)",
    )

    # --- process ---------------------------------------------------------------
    decode_threads: int = setting(0, help="threads decoding images and encoding visualizations (0: min(4, cores))")
    warmup: bool = setting(True, help="report ready without warming the pipeline up first (every batch shape once)")
    graceful_timeout_s: float = setting(
        30.0,
        flag="graceful_timeout",
        help="seconds in-flight requests get to finish on SIGTERM/SIGINT before the server stops",
    )
    # The server listens at once and loads its models behind /ready; a request
    # that comes first waits (PaddleX's server listens only once it is ready,
    # so its clients are written to send at once).
    ready_wait_s: float = setting(
        60.0, flag="ready_wait", help="seconds a request that arrives while the models load waits for them; then 503"
    )

    # --- slow or idle clients --------------------------------------------------
    # Above it uvicorn itself answers 503 (a plain-text body, not the JSON envelope).
    limit_concurrency: Optional[int] = setting(
        256, help="most open connections (uvicorn's limit_concurrency); none: no cap"
    )
    timeout_keep_alive_s: int = setting(5, flag="timeout_keep_alive", help="seconds an idle keep-alive connection stays open")
    header_timeout_s: float = setting(
        30.0,
        flag="header_timeout",
        help="seconds a connection may take to send a request's headers (from connecting, or after its previous "
        "response); then it gets 408 and is closed",
    )
    # Counted from when the server starts reading the body (after admission).
    body_timeout_s: float = setting(
        30.0, flag="body_timeout", help="seconds for the whole request body to arrive; then 408 and the connection closes"
    )
    retry_after_s: int = setting(1, flag="retry_after", help="seconds a 503 asks the client to wait (Retry-After)")
    log_level: str = setting("info", help="log level", choices=_LOG_LEVELS)
    log_format: str = setting("json", help="one JSON object per line, or readable text", choices=_LOG_FORMATS)
    access_log: bool = setting(True, help="write no per-request log line (each carries its logId)")

    def __post_init__(self) -> None:
        def positive_int(name: str) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ServingSettings.{name} must be a positive integer, got {value!r}")

        for name in ("max_batch", "max_queue", "max_queue_pixels", "max_body_bytes", "max_image_bytes", "max_pixels",
                     "max_downloads", "max_persons", "max_batch_persons", "max_queue_persons"):
            positive_int(name)
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ValueError(f"ServingSettings.port must be 0..65535, got {self.port!r}")
        for name in ("max_wait_ms", "graceful_timeout_s", "ready_wait_s"):
            if not isinstance(getattr(self, name), (int, float)) or getattr(self, name) < 0:
                raise ValueError(f"ServingSettings.{name} must be a number >= 0, got {getattr(self, name)!r}")
        for name in ("url_timeout_s", "header_timeout_s", "body_timeout_s"):
            if not isinstance(getattr(self, name), (int, float)) or getattr(self, name) <= 0:
                raise ValueError(f"ServingSettings.{name} must be > 0, got {getattr(self, name)!r}")
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

    def input_limits(self) -> "InputLimits":
        """What decoding a request's image is held to."""
        from ..io import InputLimits

        return InputLimits(max_pixels=self.max_pixels, max_bytes=self.max_image_bytes, url_timeout=self.url_timeout_s)

    def replace(self, **changes) -> "ServingSettings":
        return dataclasses.replace(self, **changes)
