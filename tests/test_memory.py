"""glibc malloc tuning (python/posepipe/runtime/memory.py): it must really
keep large freed blocks with the process, which is where its speed comes from
(no fresh pages to fault in on the next run)."""
import platform
import subprocess
import sys
import textwrap

import pytest

from posepipe.runtime.memory import tune_glibc_malloc

GLIBC = platform.libc_ver()[0] == "glibc"

# Fills and frees a 64 MB NumPy array and prints how much of it is still
# resident afterwards (MB). Run in a child so that the tuning, which is
# process-wide, does not leak into the other tests.
CHILD = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    if sys.argv[1] == "tuned":
        from posepipe.runtime.memory import tune_glibc_malloc
        assert tune_glibc_malloc()
    def resident_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    before = resident_mb()
    block = np.ones(16 << 20, np.float32)
    del block
    print(resident_mb() - before)
    """
)


def kept_after_free_mb(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's; elsewhere tune_glibc_malloc is a no-op (tested below)")
def test_tuning_keeps_large_freed_blocks():
    # By default glibc maps a 64 MB block on its own and unmaps it on free;
    # tuned, it comes from the heap, which is not trimmed below 1 GiB.
    assert kept_after_free_mb("default") < 8
    assert kept_after_free_mb("tuned") > 56


def test_is_a_no_op_off_glibc(monkeypatch):
    monkeypatch.setattr(platform, "libc_ver", lambda *a, **k: ("musl", "1.2"))
    assert tune_glibc_malloc() is False
