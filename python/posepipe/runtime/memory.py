"""glibc malloc settings for CPU inference.

glibc serves every allocation above its mmap threshold (at most 32 MiB) with
a fresh mmap and unmaps it on free. Paddle Inference allocates its large
activations per run (MoveNet's biggest is 50 MB), so each run faulted in
~63 MB of new pages again: 16,000 minor faults, ~29 ms of kernel time on a
66 ms MoveNet batch-4 run (2-core EPYC, Paddle 3.3.1). Serving those sizes
from the heap and never trimming it keeps the pages mapped between runs:
that run drops to 50 ms, NanoDet from ~32 to 25 ms, same outputs. Paddle's
own allocator flags (allocator_strategy, chunk sizes) do not avoid it.

The price: freed memory stays with the process (its RSS stays at its peak
instead of shrinking between calls). That is the right trade for a process
that runs models again and again; `PipelineOptions(tune_malloc=False)` /
`--no_tune_malloc` leaves malloc alone. The settings are process-wide, so
they are set per pipeline (idempotently), and only on glibc (elsewhere there is nothing to do).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

log = logging.getLogger("posepipe")

# mallopt parameter numbers from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
TRIM_THRESHOLD_BYTES = 1 << 30


def tune_glibc_malloc() -> bool:
    """Serve large blocks from the heap and keep freed memory; True when in
    force. Idempotent, so every pipeline may call it."""
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
    except (OSError, AttributeError) as e:
        log.debug("posepipe: glibc mallopt unavailable (%s)", e)
        return False
    if ok:
        log.debug("posepipe: glibc malloc tuned (M_MMAP_MAX=0, M_TRIM_THRESHOLD=%d)", TRIM_THRESHOLD_BYTES)
    return ok
