"""The accuracy gate a lower precision must pass before posepipe runs it.

Both pipelines (fp32, the reference, and the candidate precision) run end to
end on the user's calibration images; their persons are compared:

* persons are paired per image by box IoU (>= MATCH_IOU, best first); a
  reference person without a partner is *lost*, a candidate person without
  one is *added*;
* each pair's keypoints are scored by OKS against the fp32 keypoints, as
  COCO scores them (pycocotools' formula and sigmas, the fp32 box area as the
  object's area), over the keypoints fp32 calls visible (score >
  VISIBLE_SCORE); a person with none visible has no OKS and is counted apart;
* the deviation is the pixel distance of those visible keypoints.

The gate passes when no person is lost or added, no paired person's
detection score moves by more than MAX_SCORE_DRIFT, and at least
MIN_CLOSE_SHARE of the persons keep OKS >= MIN_OKS.

The score drift is what makes persons near the detection threshold appear
or vanish: whether the calibration images happen to hold such a person
decides "lost or added", the drift shows the risk on every person. Measured
on real photos against fp32: bf16 moved scores by at most 0.007; NanoDet
quantized to int8 on 4 COCO images by up to 0.08, passed "no person lost or
added" on those images and then lost one and added two on the benchmark
photos.

The OKS criterion is a share, not a mean, on purpose: measured on 12 photos (50 persons), bf16 kept OKS >= 0.99
on 49 of them, and one small, far-away person whose heatmaps are nearly flat
flipped to another peak (OKS 0.23); a mean would be at the mercy of such a
person, the share is not, while a systematic error fails it at once.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from ..oks import box_iou, oks

MATCH_IOU = 0.5
VISIBLE_SCORE = 0.3
MIN_OKS = 0.9
MIN_CLOSE_SHARE = 0.9
MAX_SCORE_DRIFT = 0.02


@dataclass
class Persons:
    """One image's persons: boxes [M,4] (x1, y1, x2, y2), keypoints [M,17,3]
    (x, y, score) and detection scores [M]."""

    boxes: np.ndarray
    keypoints: np.ndarray
    scores: np.ndarray

    @classmethod
    def from_rows(cls, rows: np.ndarray, keypoints: np.ndarray) -> "Persons":
        """From the detector's [M,6] rows (class, score, x1, y1, x2, y2)."""
        rows = np.asarray(rows, np.float64).reshape(-1, 6)
        return cls(rows[:, 2:6], np.asarray(keypoints, np.float64).reshape(-1, 17, 3), rows[:, 1])


@dataclass
class AccuracyReport:
    images: int = 0
    persons: int = 0  # in the reference
    lost: int = 0
    added: int = 0
    scored: int = 0  # pairs with visible keypoints
    close: int = 0  # of those, OKS >= MIN_OKS
    oks: List[float] = field(default_factory=list)
    deviation_px: List[float] = field(default_factory=list)
    score_drift: float = 0.0  # the largest |detection score change| of a paired person

    @property
    def close_share(self) -> float:
        return self.close / self.scored if self.scored else 0.0

    @property
    def passed(self) -> bool:
        return (
            self.scored > 0
            and self.lost == 0
            and self.added == 0
            and self.score_drift <= MAX_SCORE_DRIFT
            and self.close_share >= MIN_CLOSE_SHARE
        )

    def reason(self) -> str:
        """Why the gate failed (or "passed")."""
        if self.persons == 0:
            return "the fp32 pipeline finds no person on the calibration images; give photos of people"
        if self.scored == 0:
            return "no person on the calibration images has a visible keypoint"
        problems = []
        if self.lost or self.added:
            problems.append(f"{self.lost} person(s) lost and {self.added} added against fp32")
        if self.score_drift > MAX_SCORE_DRIFT:
            problems.append(
                f"detection scores moved by up to {self.score_drift:.3f} (more than {MAX_SCORE_DRIFT}), "
                "enough to move persons across the detection threshold"
            )
        if self.close_share < MIN_CLOSE_SHARE:
            problems.append(
                f"{self.close} of {self.scored} persons ({self.close_share:.0%}) keep OKS >= {MIN_OKS} against fp32, "
                f"fewer than {MIN_CLOSE_SHARE:.0%}"
            )
        return "; ".join(problems) or "passed"

    def summary(self) -> Dict[str, Any]:
        dev = np.asarray(self.deviation_px) if self.deviation_px else np.zeros(1)
        oks = np.asarray(self.oks) if self.oks else np.zeros(1)
        return {
            "passed": self.passed,
            "reason": self.reason(),
            "images": self.images,
            "persons": self.persons,
            "lost": self.lost,
            "added": self.added,
            "score_drift": round(self.score_drift, 4),
            "oks_close_share": round(self.close_share, 4),
            "oks_min": round(float(oks.min()), 4),
            "oks_median": round(float(np.median(oks)), 4),
            "deviation_px": {
                "median": round(float(np.median(dev)), 3),
                "p95": round(float(np.percentile(dev, 95)), 3),
                "max": round(float(dev.max()), 3),
            },
            "thresholds": {
                "min_oks": MIN_OKS,
                "min_close_share": MIN_CLOSE_SHARE,
                "visible_score": VISIBLE_SCORE,
                "max_score_drift": MAX_SCORE_DRIFT,
            },
        }

    def line(self) -> str:
        s = self.summary()
        d = s["deviation_px"]
        return (
            f"{s['persons']} persons on {s['images']} images, {s['lost']} lost, {s['added']} added, "
            f"scores moved <= {s['score_drift']:.3f}, "
            f"{self.close}/{self.scored} at OKS >= {MIN_OKS} (min {s['oks_min']:.3f}), "
            f"keypoints moved median {d['median']:.2f} / p95 {d['p95']:.2f} / max {d['max']:.2f} px"
        )


def compare_persons(reference: Sequence[Persons], candidate: Sequence[Persons]) -> AccuracyReport:
    """The candidate's persons against the reference's, image by image."""
    if len(reference) != len(candidate):
        raise ValueError(f"{len(candidate)} candidate images for {len(reference)} reference images")
    report = AccuracyReport(images=len(reference))
    for ref, cand in zip(reference, candidate):
        pairs, lost, added = pair_persons(ref.boxes, cand.boxes)
        report.persons += len(ref.boxes)
        report.lost += lost
        report.added += added
        for i, j in pairs:
            report.score_drift = max(report.score_drift, abs(float(ref.scores[i]) - float(cand.scores[j])))
            visible = ref.keypoints[i, :, 2] > VISIBLE_SCORE
            if not visible.any():
                continue
            d2 = ((ref.keypoints[i, :, :2] - cand.keypoints[j, :, :2]) ** 2).sum(axis=1)
            report.oks.append(float(oks(d2, visible, box_area(ref.boxes[i]))))
            report.deviation_px.extend(np.sqrt(d2[visible]).tolist())
            report.scored += 1
            report.close += report.oks[-1] >= MIN_OKS
    return report


def box_area(box: np.ndarray) -> float:
    return float(max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1]))


def pair_persons(ref: np.ndarray, cand: np.ndarray) -> Tuple[List[Tuple[int, int]], int, int]:
    """Greedy best-IoU pairs (>= MATCH_IOU): (pairs, lost reference persons, added candidate persons)."""
    if not len(ref) or not len(cand):
        return [], len(ref), len(cand)
    iou = box_iou(ref, cand)
    pairs: List[Tuple[int, int]] = []
    used_ref, used_cand = set(), set()
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        i, j = divmod(int(flat), iou.shape[1])
        if iou[i, j] < MATCH_IOU:
            break
        if i in used_ref or j in used_cand:
            continue
        pairs.append((i, j))
        used_ref.add(i)
        used_cand.add(j)
    return pairs, len(ref) - len(pairs), len(cand) - len(pairs)
