"""Measuring backends fairly on a machine that may be busy: fixed-seed
synthetic inputs in the model's layout, candidates alternating round by
round, the best round kept."""
from __future__ import annotations

import math
import os
import resource
import time
from typing import Callable, Dict, Mapping, Optional, Sequence

import numpy as np

from ..batching import run_split
from ..errors import ModelError
from ..models.spec import ModelSpec
from .base import Backend

CALIBRATION_SEED = 20240917
# Above this share of the machine's CPU taken by other processes while a
# decision was measured, the decision holds for this run but is not cached:
# another time, on a quiet machine, it is measured again.
BUSY_SHARE = 0.25
MIN_ROUNDS = 2  # one sample can be a 10x outlier on a busy machine: never decide on it


def calibration_feeds(spec: ModelSpec, batch: int, input_names: Sequence[str], seed: int = CALIBRATION_SEED):
    """A fixed-seed batch in the model's input layout: smooth colour fields
    with hard-edged blobs (edges and shapes for detectors and keypoint
    heatmaps to respond to), normalised as the yml says. Item i is the same
    image whatever the batch size."""
    import cv2

    pre = spec.detector or spec.keypoint
    h, w = spec.detector.target_hw if spec.detector else (spec.keypoint.input_wh[1], spec.keypoint.input_wh[0])
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(batch):
        img = cv2.resize(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
        for _ in range(6):
            centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            axes = (int(rng.integers(w // 16, w // 4)), int(rng.integers(h // 8, h // 3)))
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            cv2.ellipse(img, centre, axes, float(rng.integers(0, 180)), 0.0, 360.0, colour, -1)
        images.append(img)
    x = np.stack(images).astype(np.float32) * np.float32(1 / 255.0 if pre.is_scale else 1.0)
    x = ((x - np.float32(pre.mean)) / np.float32(pre.std)).transpose(0, 3, 1, 2)
    known = {
        "image": np.ascontiguousarray(x, dtype=np.float32),
        "scale_factor": np.ones((batch, 2), np.float32),
        "im_shape": np.tile(np.float32([h, w]), (batch, 1)),
    }
    unknown = [n for n in input_names if n not in known]
    if unknown:
        raise ModelError(f"{spec.model_dir}: posepipe cannot make calibration data for input(s) {unknown}")
    return {n: known[n] for n in input_names}


def best_ms(
    calls: Mapping[str, Callable[[], object]],
    max_rounds: int,
    budget_s: float = math.inf,
    prune_factor: Optional[float] = None,
) -> Dict[str, float]:
    """Best ms per call, the calls alternating round by round (min over
    rounds damps other load). From round MIN_ROUNDS on, the rounds stop once
    `budget_s` has passed since the first; with `prune_factor`, a call that
    is that much slower than the best stops being timed."""
    best = {name: math.inf for name in calls}
    active = list(calls)
    deadline = None
    for round_no in range(max_rounds):
        for name in active:
            t0 = time.perf_counter()
            calls[name]()
            best[name] = min(best[name], (time.perf_counter() - t0) * 1000)
        if deadline is None:
            deadline = time.perf_counter() + budget_s
        if round_no + 1 < MIN_ROUNDS:
            continue
        if prune_factor is not None:
            top = min(best[n] for n in active)
            active = [n for n in active if best[n] <= prune_factor * top]
            if len(active) == 1:
                break
        if time.perf_counter() > deadline:
            break
    return best


def time_backends(
    backends: Mapping[str, Backend],
    feeds: Mapping[int, Mapping[str, np.ndarray]],
    max_rounds: int,
    budget_s: float = math.inf,
    prune_factor: Optional[float] = None,
) -> Dict[str, Dict[int, float]]:
    """Best ms per backend and batch, backends alternating round by round;
    pruning compares the sum over the batches."""
    calls = {
        name: (lambda backend=backend: {b: _timed(lambda: run_split(backend, dict(f))) for b, f in feeds.items()})
        for name, backend in backends.items()
    }
    per_batch: Dict[str, Dict[int, float]] = {name: {b: math.inf for b in feeds} for name in backends}

    def round_of(name: str) -> Callable[[], None]:
        def call() -> None:
            for b, ms in calls[name]().items():
                per_batch[name][b] = min(per_batch[name][b], ms)

        return call

    best_ms({name: round_of(name) for name in backends}, max_rounds, budget_s, prune_factor)
    return per_batch


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


class OthersCpu:
    """How much CPU other processes took since this was made: the machine's
    busy time (Linux /proc/stat) minus this process's own (its threads, and
    its children once they are waited for). None where /proc/stat is missing."""

    def __init__(self) -> None:
        self.start = time.monotonic(), machine_busy_s(), own_cpu_s()

    def share(self) -> Optional[float]:
        wall, busy, own = self.start
        now = machine_busy_s()
        if busy is None or now is None:
            return None
        elapsed = max(1e-9, (time.monotonic() - wall) * (os.cpu_count() or 1))
        return max(0.0, (now - busy) - (own_cpu_s() - own)) / elapsed

    def quiet(self) -> bool:
        share = self.share()
        return share is None or share <= BUSY_SHARE


def machine_busy_s() -> Optional[float]:
    """CPU seconds all processes have used since boot (Linux /proc/stat), or None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    """CPU seconds of this process and its waited-for children."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
