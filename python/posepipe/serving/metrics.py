"""Prometheus metrics of one app, in the app's own CollectorRegistry (two apps
in one process never share counters; nothing global is registered)."""
from __future__ import annotations

from typing import List

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)

# Paths reported by name; anything else is "other" (no label explosion from scanners).
KNOWN_PATHS = frozenset(
    {"/human-keypoint-detection", "/health", "/ready", "/metrics", "/openapi.json", "/docs", "/redoc"}
)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, max_batch: int):
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "posepipe_http_requests", "HTTP requests answered", ["method", "path", "status"], registry=registry
        )
        self.errors = Counter(
            "posepipe_http_errors", "HTTP error replies (status >= 400) by status code", ["code"], registry=registry
        )
        self.latency = Histogram(
            "posepipe_http_request_duration_seconds",
            "Time from request start to the end of the response",
            ["path"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge("posepipe_http_requests_in_flight", "HTTP requests being handled", registry=registry)
        self.queue_depth = Gauge(
            "posepipe_queue_depth",
            "Inference requests admitted and not yet detected (reading their body, decoding or waiting for a batch)",
            registry=registry,
        )
        self.queue_pixels = Gauge(
            "posepipe_queue_pixels", "Decoded pixels held by requests waiting for a batch", registry=registry
        )
        self.queue_limit = Gauge("posepipe_queue_limit", "max_queue: above it requests get 503", registry=registry)
        self.queue_persons = Gauge(
            "posepipe_queue_persons", "Persons found and waiting for their keypoints", registry=registry
        )
        self.downloads = Gauge("posepipe_downloads_in_progress", "Image URL downloads in progress", registry=registry)
        batch_buckets: List[float] = sorted({1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, max_batch})
        self.batch_size = Histogram(
            "posepipe_batch_size",
            "Images per detector batch",
            buckets=[b for b in batch_buckets if b <= max_batch],
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "posepipe_batch_duration_seconds", "Wall time of one detector batch", buckets=LATENCY_BUCKETS, registry=registry
        )
        self.queue_wait = Histogram(
            "posepipe_queue_wait_seconds",
            "Time a decoded image waited before its batch started",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.images = Counter("posepipe_images", "Images run through the pipeline", registry=registry)
        self.keypoint_persons = Histogram(
            "posepipe_keypoint_step_persons",
            "Persons per keypoint step",
            buckets=[1, 2, 4, 8, 16, 32, 64, 128],
            registry=registry,
        )
        self.keypoint_seconds = Histogram(
            "posepipe_keypoint_step_duration_seconds", "Wall time of one keypoint step", buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.rejected = Counter(
            "posepipe_rejected_requests",
            "Inference requests answered 503 without running: queue_full, persons_full, downloads_full, not_ready, "
            "shutting_down",
            ["reason"],
            registry=registry,
        )
        self.ready = Gauge("posepipe_ready", "1 when models are loaded and warmed up", registry=registry)

    def observe_request(self, method: str, path: str, status: int, seconds: float) -> None:
        label = path if path in KNOWN_PATHS else "other"
        self.requests.labels(method if method in _METHODS else "OTHER", label, str(status)).inc()
        self.latency.labels(label).observe(seconds)
        if status >= 400:
            self.errors.labels(str(status)).inc()

    def observe_batch(self, size: int, seconds: float, waits: List[float]) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)
        self.images.inc(size)
        for wait in waits:
            self.queue_wait.observe(wait)

    def observe_keypoint_step(self, persons: int, seconds: float) -> None:
        self.keypoint_persons.observe(persons)
        self.keypoint_seconds.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
