"""Split a batch into power-of-two chunks before it reaches a backend.

oneDNN (and TensorRT) build kernels per input shape, which costs 0.3-1 s the
first time a batch size is seen. Cutting N into its binary parts (13 = 8+4+1)
keeps the set of shapes to log2(max)+1, all warmed up at start, with no padded
work; on CPU the per-item cost barely depends on the batch size beyond a few."""
from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np

from .runtime.base import Backend
from .runtime.onnxruntime import TRT_MAX_BATCH

# Crop pixels per keypoint-model call on CPU. Past a few crops per call a CPU
# gains nothing from a bigger batch and loses cache locality: measured on
# 2 cores, MoveNet 256x256 is fastest at 4 crops per call (ONNX Runtime 11.4
# ms/crop vs 12.7 at 16; Paddle+oneDNN 21 vs 29), PP-TinyPose 128x96 up to
# 16. Four 256x256 crops is that budget.
CPU_KPT_PIXELS_PER_CALL = 4 * 256 * 256
# GPUs want large batches: as many as the TensorRT engines' profiles cover.
GPU_KPT_BATCH = TRT_MAX_BATCH


def floor_pow2(n: int) -> int:
    """The largest power of two <= n (1 for n < 1)."""
    return 1 << (max(1, n).bit_length() - 1)


def pow2_chunks(n: int, max_chunk: int) -> List[int]:
    """Sizes summing to n, each a power of two no larger than max_chunk, largest first."""
    top = floor_pow2(max_chunk)
    sizes = []
    while n > 0:
        size = top
        while size > n:
            size >>= 1
        sizes.append(size)
        n -= size
    return sizes


def keypoint_batch_limit(input_wh: Tuple[int, int], device_kind: str) -> int:
    """Most crops per keypoint-model call when the user did not set one:
    a pixel budget on CPU (a power of two, so chunks stay warm shapes), 32 elsewhere."""
    if device_kind != "cpu":
        return GPU_KPT_BATCH
    return floor_pow2(CPU_KPT_PIXELS_PER_CALL // max(1, input_wh[0] * input_wh[1]))


def chunk_sizes_to_warm(max_chunk: int) -> List[int]:
    top = floor_pow2(max_chunk)
    return [1 << i for i in range(top.bit_length())]


def run_chunked(backend: Backend, feeds: Dict[str, np.ndarray], max_chunk: int) -> List[np.ndarray]:
    """Run the backend over power-of-two slices of the batch axis and join the
    outputs along axis 0 (right for [N,...] outputs and for a detector's
    [M,6] rows + per-image counts alike)."""
    n = len(next(iter(feeds.values())))
    sizes = pow2_chunks(n, max_chunk)
    if len(sizes) == 1:
        return backend.run(feeds)
    parts: List[List[np.ndarray]] = []
    start = 0
    for size in sizes:
        parts.append(backend.run({k: v[start : start + size] for k, v in feeds.items()}))
        start += size
    return [np.concatenate(outs, axis=0) for outs in zip(*parts)]
