"""Measuring discipline: alternate the sides, drop warm-up rounds, summarise
as min and median, fit per-person slopes."""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Dict, List, Sequence

import numpy as np


def alternate(
    calls: Dict[str, Callable[[], Any]], rounds: int, warmup: int, settle_s: float
) -> Dict[str, List[Any]]:
    """Call every side once per round, warm-up rounds discarded.

    The order flips every round so no side always runs right after another.
    Before each call the machine idles `settle_s`, long enough for the other
    process's OpenMP threads to stop spinning (KMP_BLOCKTIME is 200 ms)."""
    names = list(calls)
    kept: Dict[str, List[Any]] = {name: [] for name in names}
    for r in range(warmup + rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            time.sleep(settle_s)
            reply = calls[name]()
            if r >= warmup:
                kept[name].append(reply)
    return kept


def summary_ms(seconds: Sequence[float]) -> Dict[str, float]:
    values = [1000.0 * s for s in seconds]
    return {"min_ms": min(values), "median_ms": statistics.median(values), "n": len(values)}


def ratio(slow: Dict[str, float], fast: Dict[str, float]) -> Dict[str, float]:
    """slow/fast on medians and on minima."""
    return {
        "median": slow["median_ms"] / fast["median_ms"],
        "min": slow["min_ms"] / fast["min_ms"],
    }


def fit_slope(persons: Sequence[float], ms: Sequence[float]) -> Dict[str, float]:
    """Least-squares line ms = intercept + slope * persons."""
    slope, intercept = np.polyfit(np.asarray(persons, float), np.asarray(ms, float), 1)
    return {"ms_per_person": float(slope), "intercept_ms": float(intercept)}


def thresholds_for_counts(scores: Sequence[float], counts: Sequence[int]) -> List[Dict[str, float]]:
    """Detection thresholds that keep exactly n of `scores` (sorted, highest
    first) for each n: halfway between the n-th and the (n+1)-th score, so a
    tiny score difference between two implementations keeps the same boxes.
    Counts above the number of scores, and duplicates, are dropped."""
    points = []
    for n in sorted(set(counts)):
        if n < 1 or n > len(scores):
            continue
        below = scores[n] if n < len(scores) else 0.0
        if scores[n - 1] == below:
            continue  # a tie: no threshold keeps exactly n
        points.append({"target_persons": n, "det_threshold": (scores[n - 1] + below) / 2.0})
    return points
