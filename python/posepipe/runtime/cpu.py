"""The processor at hand: its model name and the instruction sets that decide
which precisions can pay off (AMX / AVX512-BF16 for bf16, VNNI / AMX-INT8 for
int8). Every measured decision (use_hpip, threads, batch sizes, precision) is
keyed by this, so a cache shared between machines never carries one CPU's
choice to another, and every benchmark result names it."""
from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from typing import Dict, FrozenSet, Optional

# The ISA features posepipe reports, by /proc/cpuinfo flag name.
REPORTED_FLAGS = (
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_bf16",
    "amx_int8",
    "amx_fp16",
)
BF16_UNITS = frozenset({"amx_bf16", "avx512_bf16"})
INT8_UNITS = frozenset({"amx_int8", "avx512_vnni", "avx_vnni"})


@dataclass(frozen=True)
class CpuInfo:
    model: str
    flags: FrozenSet[str]
    cores: int  # the cores this process may run on

    @property
    def has_bf16_units(self) -> bool:
        return bool(self.flags & BF16_UNITS)

    @property
    def has_int8_units(self) -> bool:
        return bool(self.flags & INT8_UNITS)

    def isa(self) -> Dict[str, bool]:
        """{flag: present} for the features that matter to inference speed."""
        return {name: name in self.flags for name in REPORTED_FLAGS}

    def summary(self) -> str:
        """`model (avx2, avx512f, amx_bf16, ...)`: one line for logs and tables."""
        present = [name for name in REPORTED_FLAGS if name in self.flags]
        return f"{self.model} ({', '.join(present) or 'no AVX2'}), {self.cores} cores"

    def key(self) -> Dict[str, object]:
        """What a cached measurement depends on."""
        return {"model": self.model, "isa": sorted(n for n in REPORTED_FLAGS if n in self.flags), "cores": self.cores}


def cpu_info(cpuinfo_path: str = "/proc/cpuinfo") -> CpuInfo:
    model: Optional[str] = None
    flags: FrozenSet[str] = frozenset()
    try:
        with open(cpuinfo_path, encoding="utf-8") as f:
            for line in f:
                name, _, value = line.partition(":")
                name = name.strip()
                if name == "model name" and model is None:
                    model = value.strip()
                elif name in ("flags", "Features") and not flags:  # x86 / ARM spelling
                    flags = frozenset(value.split())
                if model is not None and flags:
                    break
    except OSError:
        pass
    return CpuInfo(model or platform.processor() or platform.machine(), flags, usable_cores())


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
