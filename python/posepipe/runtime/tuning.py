"""Settings measured on the machine at hand, never carried over from another:
how many threads a model runs with, and how many person crops go into one
keypoint-model call.

Both are measured at a model's first use with a backend, on the calibration
batch of runtime/timing.py, and cached per model, backend, device and CPU
(runtime/decisions.py), so later starts only read a small JSON file.

Threads: the usable core count, half of it and a quarter of it (at most
three backends built), alternating rounds; fewer than all cores only when
at least 10 % faster. Skipped when the user sets `cpu_threads`.

A decision measured while other processes took more than a quarter of the
CPU holds for that run but is not cached (runtime/decisions.py).

Crops per call: batches 1, 2, 4 and 8 in alternating rounds, then 16 and
32 (up to the backend's max_batch) while the largest so far is the best and
the next still cuts the time per crop by 5 % (GROWTH_GAIN); the smallest
batch within CLOSE_ENOUGH of the best time per crop wins (smaller chunks
waste less when the person count is not a power of two). On CPUs the best is usually a few crops (past that a batch
only loses cache locality); on GPUs it is the top of the range.

Cost at first start: threads, a second (and third) backend build plus about
THREAD_BUDGET_S of timing per model; crops per call, SWEEP_ROUNDS + 1 calls
of each batch size tried (an OpenVINO backend also compiles each size once,
which its own cache keeps for later starts). README, "Settings measured on
this machine", gives measured figures.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..batching import MAX_KEYPOINT_BATCH, run_split
from ..models.spec import KEYPOINT, ModelSpec
from . import decisions
from .base import Backend, RuntimeOptions
from .cpu import cpu_info
from .onnx_export import model_key
from .timing import OthersCpu, best_ms, calibration_feeds

log = logging.getLogger("posepipe")

TUNING_VERSION = 2
GROWTH_GAIN = 0.95  # a bigger batch is tried next while it cut ms per crop to <= 95 % of the best so far
CLOSE_ENOUGH = 1.03  # the smallest batch within 3 % of the best ms per crop is chosen
FIRST_BATCHES = (1, 2, 4, 8)  # always timed (up to the backend's limit); larger ones while they pay
SWEEP_ROUNDS = 4  # timed calls per batch size, alternating, after one untimed call (kernel creation)
CLEAR_LOSS = 1.25  # a size this much slower per crop than the best is not timed again
THREAD_ROUNDS = 5
# Fewer threads than cores only when clearly faster: a busy moment must not
# talk the pipeline out of cores it has.
FEWER_THREADS_GAIN = 0.9
THREAD_BUDGET_S = 1.0


def thread_counts(cores: int) -> List[int]:
    """The thread counts tried: all usable cores, half, a quarter (distinct, >= 1)."""
    return sorted({max(1, cores), max(1, cores // 2), max(1, cores // 4)}, reverse=True)


def with_tuned_threads(
    spec: ModelSpec,
    options: RuntimeOptions,
    label: str,
    build: Callable[[RuntimeOptions], Backend],
    prebuilt: Optional[Dict[int, Backend]] = None,
) -> Tuple[Backend, Dict[str, Any]]:
    """The backend built with the fastest thread count for this model here,
    and how that was decided (for metadata). `prebuilt`: backends already
    built, by thread count."""
    prebuilt = dict(prebuilt or {})
    build_for = lambda t: prebuilt.pop(t, None) or build(dataclasses.replace(options, cpu_threads=t))  # noqa: E731
    counts = thread_counts(cpu_info().cores)
    if options.device.kind != "cpu" or len(counts) == 1:
        return build_for(counts[0]), {"threads": counts[0], "decision": "all cores"}
    key = decisions.decision_key(
        {
            "tuning": "threads",
            "version": TUNING_VERSION,
            "model": model_key(spec),
            "backend": label,
            "use_onednn": options.use_onednn,
            "counts": counts,
        },
        options.device,
    )
    path = decisions.cache_path("tuning", f"{spec.model_name}-threads", key)
    saved = decisions.load(path, key, TUNING_VERSION)
    if saved is not None and saved.get("threads") in counts:
        threads = int(saved["threads"])
        info = {"threads": threads, "decision": "cache", "ms": saved.get("ms"), "cache_file": str(path)}
        return build_for(threads), info
    start, witness = time.perf_counter(), OthersCpu()
    backends = {t: build_for(t) for t in counts}
    first = backends[counts[0]]
    batch = 1 if spec.kind != KEYPOINT else min(4, first.max_batch or 4)
    feeds = calibration_feeds(spec, batch, first.input_names)
    for backend in backends.values():
        run_split(backend, dict(feeds))  # kernel creation, untimed
    ms = best_ms({t: (lambda b=b: run_split(b, dict(feeds))) for t, b in backends.items()}, THREAD_ROUNDS, THREAD_BUDGET_S)
    fastest = min(ms, key=lambda t: (ms[t], -t))
    threads = fastest if ms[fastest] < FEWER_THREADS_GAIN * ms[counts[0]] else counts[0]
    info = {
        "threads": threads,
        "decision": "measured",
        "ms": {str(t): round(v, 3) for t, v in ms.items()},
        "batch": batch,
        "tuning_s": round(time.perf_counter() - start, 3),
    }
    info["cache_file"] = decisions.store_measured(
        path, key, TUNING_VERSION, {"model_dir": str(spec.model_dir), "backend": label, **info}, witness
    )
    log.info(
        "posepipe tuning: %s on %s -> %d threads (%s ms at batch %d; %.1f s)",
        spec.model_name, label, threads, ", ".join(f"{t}: {v:.1f}" for t, v in ms.items()), batch, info["tuning_s"],
    )
    return backends[threads], info


def tuned_keypoint_batch(spec: ModelSpec, backend: Backend, label: str, options: RuntimeOptions) -> Tuple[int, Dict[str, Any]]:
    """The crops per call for this keypoint model on this backend, and how it was decided."""
    limit = min(backend.max_batch or MAX_KEYPOINT_BATCH, MAX_KEYPOINT_BATCH)
    if limit <= 1:
        return 1, {"batch": 1, "decision": f"{backend.name} takes one crop per call"}
    key = decisions.decision_key(
        {
            "tuning": "keypoint_batch",
            "version": TUNING_VERSION,
            "model": model_key(spec),
            "backend": label,
            "cpu_threads": options.cpu_threads,
            "use_onednn": options.use_onednn,
            "limit": limit,
        },
        options.device,
    )
    path = decisions.cache_path("tuning", f"{spec.model_name}-batch", key)
    saved = decisions.load(path, key, TUNING_VERSION)
    if saved is not None and isinstance(saved.get("batch"), int) and 1 <= saved["batch"] <= limit:
        return saved["batch"], {"batch": saved["batch"], "decision": "cache", "ms_per_crop": saved.get("ms_per_crop"), "cache_file": str(path)}
    start, witness = time.perf_counter(), OthersCpu()
    per_crop = sweep_batches(spec, backend, limit)
    best = min(per_crop.values())
    batch = min(b for b, v in per_crop.items() if v <= CLOSE_ENOUGH * best)
    info: Dict[str, Any] = {
        "batch": batch,
        "decision": "measured",
        "ms_per_crop": {str(b): round(v, 3) for b, v in per_crop.items()},
        "tuning_s": round(time.perf_counter() - start, 3),
    }
    info["cache_file"] = decisions.store_measured(
        path, key, TUNING_VERSION, {"model_dir": str(spec.model_dir), "backend": label, **info}, witness
    )
    log.info(
        "posepipe tuning: %s on %s -> %d crops per call (ms per crop %s; %.1f s)",
        spec.model_name, label, batch, ", ".join(f"b{b} {v:.1f}" for b, v in per_crop.items()), info["tuning_s"],
    )
    return batch, info


def sweep_batches(spec: ModelSpec, backend: Backend, limit: int) -> Dict[int, float]:
    """ms per crop at batch 1, 2, 4, 8, then 16, 32 while the largest so far
    is the best; sizes alternate round by round, so that other load on the
    machine falls on all of them alike."""
    feeds_all = calibration_feeds(spec, limit, backend.input_names)
    per_crop = _per_crop_ms(backend, feeds_all, [b for b in FIRST_BATCHES if b <= limit])
    while True:
        best, largest = min(per_crop, key=per_crop.get), max(per_crop)
        if best != largest or 2 * largest > limit:
            return per_crop
        again = _per_crop_ms(backend, feeds_all, [largest, 2 * largest])
        per_crop[largest] = min(per_crop[largest], again[largest])
        per_crop[2 * largest] = again[2 * largest]
        if per_crop[2 * largest] > GROWTH_GAIN * per_crop[largest]:
            return per_crop


def _per_crop_ms(backend: Backend, feeds_all: Dict[str, Any], sizes: List[int]) -> Dict[int, float]:
    """Best ms per crop of each batch size over SWEEP_ROUNDS alternating
    rounds; a size CLEAR_LOSS slower per crop than the best stops being timed."""
    feeds = {b: {k: v[:b] for k, v in feeds_all.items()} for b in sizes}
    for b in sizes:
        run_split(backend, dict(feeds[b]))  # kernel creation / compilation, untimed
    per_crop = {b: math.inf for b in sizes}
    active = list(sizes)
    for _ in range(SWEEP_ROUNDS):
        for b in active:
            t0 = time.perf_counter()
            run_split(backend, dict(feeds[b]))
            per_crop[b] = min(per_crop[b], (time.perf_counter() - t0) * 1000 / b)
        best = min(per_crop.values())
        active = [b for b in active if per_crop[b] <= CLEAR_LOSS * best]
    return per_crop
