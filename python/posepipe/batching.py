"""Split a batch into power-of-two chunks before it reaches a backend.

oneDNN (and TensorRT) build kernels per input shape, which costs 0.3-1 s the
first time a batch size is seen. Cutting N into its binary parts (13 = 8+4+1)
keeps the set of shapes to log2(max)+1, all warmed up at start, with no padded
work; on CPU the per-item cost barely depends on the batch size beyond a few."""
from __future__ import annotations

from typing import Dict, List

import numpy as np

from .runtime.base import Backend


def pow2_chunks(n: int, max_chunk: int) -> List[int]:
    """Sizes summing to n, each a power of two no larger than max_chunk, largest first."""
    top = 1 << (max(1, max_chunk).bit_length() - 1)
    sizes = []
    while n > 0:
        size = top
        while size > n:
            size >>= 1
        sizes.append(size)
        n -= size
    return sizes


def chunk_sizes_to_warm(max_chunk: int) -> List[int]:
    top = 1 << (max(1, max_chunk).bit_length() - 1)
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
