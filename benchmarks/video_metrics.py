"""Measures for video results, shared by benchmarks/video.py and the tests.

Every function takes plain per-frame person lists (a result's "boxes": dicts
with "coordinate", "keypoints" [17,3] and, when tracked, "track_id").

  agreement(reference, test)   how closely a run follows a reference run of
                               the same frames (e.g. det_frequency=5 against
                               every frame): mean OKS of matched persons, and
                               the longest run of frames a reference person
                               has no counterpart ("lost")
  jitter(points)               mean frame-to-frame displacement (pixels);
                               on a person standing still, all of it is noise
  lag_frames(raw, smoothed)    the delay, in frames, that best lays a smoothed
                               path onto the raw one"""
from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from posepipe.oks import oks

# A reference joint counts in OKS when its score is above this (COCO counts labelled joints only).
VISIBLE = 0.3
# Persons pair up when their OKS is above this; below, the reference person is "lost" on that frame.
MATCH_OKS = 0.5


def oks_to_reference(ref: Dict, test: Dict) -> float:
    """COCO's OKS of `test` against `ref`: ref's box area as the scale, ref's visible joints."""
    ref_kpts, test_kpts = np.asarray(ref["keypoints"], float), np.asarray(test["keypoints"], float)
    x1, y1, x2, y2 = ref["coordinate"]
    area = max((x2 - x1) * (y2 - y1), 1.0)
    visible = ref_kpts[:, 2] > VISIBLE
    d2 = ((ref_kpts[:, :2] - test_kpts[:, :2]) ** 2).sum(axis=1)
    return float(oks(d2, visible, area))


def agreement(reference: Sequence[List[Dict]], test: Sequence[List[Dict]]) -> Dict[str, float]:
    """Per frame, reference and test persons paired by an optimal assignment
    on OKS. Reference persons without a visible joint are left out. A
    reference person's lost streak is the number of consecutive frames it has
    no pair with OKS > MATCH_OKS; persons are followed across frames by their
    reference track_id."""
    if len(reference) != len(test):
        raise ValueError(f"{len(reference)} reference frames but {len(test)} test frames")
    matched_oks: List[float] = []
    streak: Dict[int, int] = {}
    last_lost: Dict[int, int] = {}
    worst = lost = counted = 0
    for f, (ref_people, test_people) in enumerate(zip(reference, test)):
        ref_people = [p for p in ref_people if (np.asarray(p["keypoints"])[:, 2] > VISIBLE).any()]
        similarity = np.array([[oks_to_reference(r, t) for t in test_people] for r in ref_people]).reshape(
            len(ref_people), len(test_people)
        )
        pairs = {}
        if similarity.size:
            for r, t in zip(*linear_sum_assignment(similarity, maximize=True)):
                if similarity[r, t] > MATCH_OKS:
                    pairs[r] = similarity[r, t]
        for r, person in enumerate(ref_people):
            counted += 1
            key = person.get("track_id", -1 - r)
            if r in pairs:
                matched_oks.append(pairs[r])
                continue
            lost += 1
            streak[key] = streak.get(key, 0) + 1 if last_lost.get(key) == f - 1 else 1
            last_lost[key] = f
            worst = max(worst, streak[key])
    return {
        "mean_oks": float(np.mean(matched_oks)) if matched_oks else float("nan"),
        "worst_lost_streak": worst,
        "lost_person_frames": lost,
        "reference_person_frames": counted,
    }


def jitter(points: np.ndarray) -> float:
    """points [T, ..., 2]: mean Euclidean frame-to-frame displacement."""
    return float(np.linalg.norm(np.diff(np.asarray(points, float), axis=0), axis=-1).mean())


def lag_frames(raw: np.ndarray, smoothed: np.ndarray, max_frames: float = 5.0, skip: int = 5) -> float:
    """raw, smoothed [T, 2]: the shift s (frames, to 0.01) minimising
    sum |smoothed(t) - raw(t - s)|^2 over t >= skip (raw interpolated)."""
    raw, smoothed = np.asarray(raw, float), np.asarray(smoothed, float)
    frames = np.arange(len(raw), dtype=float)
    best, best_error = 0.0, float("inf")
    for shift in np.arange(0.0, max_frames, 0.01):
        shifted = np.stack([np.interp(frames - shift, frames, raw[:, d]) for d in range(raw.shape[1])], axis=1)
        error = float(((shifted[skip:] - smoothed[skip:]) ** 2).sum())
        if error < best_error:
            best, best_error = float(shift), error
    return best
