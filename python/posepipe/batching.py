"""The one splitter between a batch and a backend.

Every model call goes through `run_split`: the batch is cut into power-of-two
chunks no larger than the caller's limit (the configured or measured batch
size) nor the backend's own `max_batch` (a graph exported for one image, a
TensorRT profile), and the outputs are joined along axis 0.

Why powers of two: oneDNN, OpenVINO and TensorRT build kernels per input
shape, which costs 0.3-1 s the first time a batch size is seen. Cutting N into
its binary parts (13 = 8+4+1) keeps the set of shapes to log2(max)+1, all
warmed up at start, with no padded work."""
from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List, Optional

import numpy as np

if TYPE_CHECKING:  # the runtime package imports this module (runtime/trt_profile.py)
    from .runtime.base import Backend

# The most crops per keypoint-model call: the top of the measured batch sizes
# (runtime/tuning.py) and of the TensorRT engines' batch profile
# (runtime/trt_profile.py).
MAX_KEYPOINT_BATCH = 32


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


def chunk_limit(backend: Backend, max_chunk: Optional[int] = None) -> Optional[int]:
    """The most items per call for this backend under the caller's limit (None: no limit)."""
    limits = [x for x in (max_chunk, backend.max_batch) if x is not None]
    return min(limits) if limits else None


def chunk_sizes_to_warm(backend: Backend, max_chunk: Optional[int]) -> List[int]:
    """Every chunk size run_split can send to this backend."""
    limit = chunk_limit(backend, max_chunk)
    top = floor_pow2(limit if limit is not None else 1)
    return [1 << i for i in range(top.bit_length())]


def run_split(backend: Backend, feeds: Dict[str, np.ndarray], max_chunk: Optional[int] = None) -> List[np.ndarray]:
    """Run the backend over power-of-two slices of the batch axis and join the
    outputs along axis 0 (right for [N,...] outputs and for a detector's
    [M,6] rows + per-image counts alike)."""
    n = len(next(iter(feeds.values())))
    limit = chunk_limit(backend, max_chunk)
    sizes = [n] if limit is None else pow2_chunks(n, limit)
    if len(sizes) <= 1:
        return backend.run(feeds)
    parts: List[List[np.ndarray]] = []
    start = 0
    for size in sizes:
        parts.append(backend.run({k: v[start : start + size] for k, v in feeds.items()}))
        start += size
    return [np.concatenate(outs, axis=0) for outs in zip(*parts)]
