"""Is a backend's output the same as plain Paddle's, up to float rounding?

Outputs are compared by what posepipe does with them, not tensor by tensor:

* keypoint models: the heatmaps (output 0), max |diff|. The argmax output
  (output 1) is not used by posepipe (it decodes the heatmaps itself), so it
  is reported but does not decide. A heatmap bound also bounds the peak: if
  |a - b| <= t everywhere, b's peak cell is within 2t of a's peak value, so a
  peak can only move between cells the reference itself calls a near-tie.
* detectors with NMS in the graph ([M,6] rows + per-image counts): per image,
  rows above `min_score` are paired with the other side's same box (same
  class, every coordinate within `box_px`) and their scores compared; the
  sorted top scores are compared too, which needs no pairing. NMS is
  discontinuous, so a row may lack a counterpart without anything being wrong
  when it is
  - at a cut: within `score` of `min_score` or of the lowest kept score
    (keep_top_k cuts by rank: a model with 100 boxes at 0.996-1.0 cuts there);
  - a near-tie swap: an overlapping box (IoU >= 0.55) of the same class with a
    score within `score` was kept instead (which of two near-equal boxes
    suppresses the other depends on the last bit). At most 10% of an image's
    boxes (none below 10 boxes) may be excused so: a backend that moves boxes
    is not "noisy".
  Anything else fails. Rows below `min_score` are not compared: their boxes
  come from near-flat DFL distributions, where float rounding moves
  coordinates a lot, and nobody keeps them (the pipeline's threshold is 0.5).
* detectors without NMS (boxes [N,A,4] + scores [N,C,A]): all scores, and
  the boxes of anchors scoring above `min_score`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

import numpy as np

from ..models.spec import KEYPOINT
from ..oks import box_iou


@dataclass(frozen=True)
class Tolerance:
    heatmap: float  # max |diff| of keypoint heatmaps (values in [0, 1])
    score: float  # max |diff| of detection scores
    box_px: float  # max |diff| of box coordinates, pixels of the (scale 1) calibration input
    min_score: float = 0.05  # detections below this are not compared


# float32 backends (ONNX Runtime CPU/CUDA, oneDNN, Paddle GPU). Measured on
# the calibration batches against plain Paddle (tests/test_backend_parity.py):
# heatmaps <= 2.4e-6 for ORT and oneDNN alike; detector scores <= 1.3e-4 and
# boxes <= 0.043 px (640 px input) on the synthetic-weight PP-YOLOE, whose
# scores saturate near 1.0 on the calibration blobs; <= 6e-7 / 1.7e-4 px on
# the real NanoDet. oneDNN (PaddleX's own CPU default) is as far from plain
# Paddle as ORT is, so the bounds are set ~4x and ~2x above that spread:
# tighter would reject PaddleX's default configuration. What they allow is
# invisible downstream: a box moved by 0.1 px moves keypoints by less than
# warpAffine's 1/32-px quantisation already does between two correct
# implementations (official_arch/README.md: 0.43 px).
FP32 = Tolerance(heatmap=1e-4, score=5e-4, box_px=0.1)
# float16 TensorRT: 11-bit mantissa (relative step 4.9e-4) through ~50 layers
# gives relative errors around 1e-3. Heatmap/score bounds keep keypoint scores
# inside the pipeline's 1e-2; 1 px on a 640 px input is ~1.5e-3 relative.
# Not measured here (no GPU in this session); selection still rejects an
# fp16 engine that exceeds them.
FP16 = Tolerance(heatmap=5e-3, score=5e-3, box_px=1.0)
TOLERANCES = {"fp32": FP32, "fp16": FP16}

NMS_OVERLAP_IOU = 0.55  # a box NMS (IoU 0.6) may suppress, minus float noise
# Near-ties are rare: a backend needing many excuses is different, not noisy.
MAX_SWAP_SHARE = 0.1
TOP_SCORES = 10


@dataclass
class ParityReport:
    ok: bool = True
    max_diff: Dict[str, float] = field(default_factory=dict)
    problems: List[str] = field(default_factory=list)

    def fail(self, problem: str) -> None:
        self.ok = False
        self.problems.append(problem)

    def note(self, name: str, value: float) -> None:
        self.max_diff[name] = max(float(value), self.max_diff.get(name, 0.0))

    def merge(self, other: "ParityReport", prefix: str = "") -> None:
        for name, value in other.max_diff.items():
            self.note(name, value)
        for problem in other.problems:
            self.fail(prefix + problem)


def compare(kind: str, reference: Sequence[np.ndarray], outputs: Sequence[np.ndarray], tol: Tolerance) -> ParityReport:
    """Parity of one model call's outputs against the reference's."""
    report = ParityReport()
    if len(outputs) != len(reference):
        report.fail(f"{len(outputs)} outputs, the reference has {len(reference)}")
        return report
    if kind == KEYPOINT:
        return _compare_keypoints(reference, outputs, tol, report)
    first = reference[0]
    if first.ndim == 2 and first.shape[-1] == 6:
        return _compare_nms_rows(reference, outputs, tol, report)
    if first.ndim == 3 and len(reference) > 1:
        return _compare_raw_boxes(reference, outputs, tol, report)
    report.fail(f"unrecognised detector outputs {[tuple(x.shape) for x in reference]}")
    return report


def _compare_keypoints(ref, out, tol: Tolerance, report: ParityReport) -> ParityReport:
    a, b = np.asarray(ref[0], np.float64), np.asarray(out[0], np.float64)
    if a.shape != b.shape:
        report.fail(f"heatmaps {b.shape}, the reference has {a.shape}")
        return report
    diff = float(np.abs(a - b).max()) if a.size else 0.0
    report.note("heatmap", diff)
    if not diff <= tol.heatmap:  # also catches NaN
        report.fail(f"heatmap max |diff| {diff:.3g} > {tol.heatmap:g}")
    if len(ref) > 1 and np.shape(ref[1]) == np.shape(out[1]) and np.size(ref[1]):
        # The in-graph argmax: informative only (posepipe decodes the heatmaps).
        report.max_diff["argmax_disagreement"] = float(np.mean(np.asarray(ref[1]) != np.asarray(out[1])))
    return report


def _compare_nms_rows(ref, out, tol: Tolerance, report: ParityReport) -> ParityReport:
    ref_images, out_images = _split_rows(ref), _split_rows(out)
    if len(ref_images) != len(out_images):
        report.fail(f"rows for {len(out_images)} images, the reference has {len(ref_images)}")
        return report
    compared = 0
    for i, (r, o) in enumerate(zip(ref_images, out_images)):
        compared += _match_rows(r, o, tol, report, f"image {i}: ")
    report.max_diff.setdefault("score", 0.0)
    report.max_diff.setdefault("box_px", 0.0)
    report.max_diff["compared_boxes"] = float(compared)
    if not report.max_diff["score"] <= tol.score:
        report.fail(f"score max |diff| {report.max_diff['score']:.3g} > {tol.score:g}")
    if not report.max_diff.get("top_scores", 0.0) <= tol.score:
        report.fail(f"top-{TOP_SCORES} scores max |diff| {report.max_diff['top_scores']:.3g} > {tol.score:g}")
    return report


def _split_rows(outputs) -> List[np.ndarray]:
    rows = np.asarray(outputs[0], np.float64)
    counts = np.asarray(outputs[1]).reshape(-1).astype(np.int64) if len(outputs) > 1 else np.array([len(rows)])
    if counts.sum() != len(rows):
        return []
    return np.split(rows, np.cumsum(counts)[:-1])


def _match_rows(ref_all: np.ndarray, out_all: np.ndarray, tol: Tolerance, report: ParityReport, where: str) -> int:
    ref = _confident(ref_all, tol.min_score)
    out = _confident(out_all, tol.min_score)
    # keep_top_k cuts by rank: the lowest kept score is a cut as much as min_score is.
    cut = max([tol.min_score] + [float(x[:, 1].min()) for x in (ref_all, out_all) if len(x)])
    used = np.zeros(len(out), bool)
    unpaired: List[Tuple[np.ndarray, np.ndarray, str]] = []
    for row in ref:
        # The same box: same class, every coordinate within the tolerance. (IoU
        # cannot tell: two near-duplicate 500 px boxes 20 px apart overlap > 0.9.)
        dist = np.full(len(out), np.inf)
        free = (out[:, 0] == row[0]) & ~used
        dist[free] = np.abs(out[free, 2:6] - row[2:6]).max(axis=1)
        j = int(np.argmin(dist)) if len(dist) else -1
        if j < 0 or not dist[j] <= tol.box_px:
            unpaired.append((row, out, "reference box"))
            continue
        used[j] = True
        report.note("score", abs(row[1] - out[j, 1]))
        report.note("box_px", dist[j])
    unpaired += [(row, ref, "box absent from the reference") for row in out[~used]]
    # A swap leaves one unpaired row on each side; counted per side. Below 10
    # boxes none is allowed: a lone moved box looks exactly like a swap.
    allowed = int(MAX_SWAP_SHARE * len(ref))
    swaps = {"reference box": 0, "box absent from the reference": 0}
    for row, other, what in unpaired:
        if row[1] <= cut + tol.score:
            continue  # at a cut: may fall either way
        if _near_tie(row, other, tol):
            swaps[what] += 1
            if swaps[what] <= allowed:
                continue
            what = f"{what} (beyond {allowed} near-tie swap(s))"
        report.fail(f"{where}{what} {np.round(row[2:6], 1).tolist()} (score {row[1]:.4f}) has no counterpart within {tol.box_px:g} px")
    report.max_diff["near_tie_swaps"] = report.max_diff.get("near_tie_swaps", 0.0) + min(swaps.values())
    # Sorted scores need no pairing; an extra row near a cut sorts to the tail, past k.
    k = min(TOP_SCORES, len(ref), len(out))
    report.note("top_scores", np.abs(ref[:k, 1] - out[:k, 1]).max() if k else 0.0)
    return int(used.sum())


def _confident(rows: np.ndarray, min_score: float) -> np.ndarray:
    rows = rows[rows[:, 1] > min_score]
    return rows[np.argsort(-rows[:, 1], kind="stable")]


def _near_tie(row: np.ndarray, other: np.ndarray, tol: Tolerance) -> bool:
    """Did NMS keep another box instead of this one? An overlapping box of the
    same class with a score within the tolerance was kept on the other side."""
    if not len(other):
        return False
    near = (other[:, 0] == row[0]) & (np.abs(other[:, 1] - row[1]) <= tol.score)
    return bool(near.any() and (box_iou(row[None, 2:6], other[near, 2:6])[0] >= NMS_OVERLAP_IOU).any())


def _compare_raw_boxes(ref, out, tol: Tolerance, report: ParityReport) -> ParityReport:
    boxes_a, scores_a = np.asarray(ref[0], np.float64), np.asarray(ref[1], np.float64)
    boxes_b, scores_b = np.asarray(out[0], np.float64), np.asarray(out[1], np.float64)
    if boxes_a.shape != boxes_b.shape or scores_a.shape != scores_b.shape:
        report.fail(f"outputs {boxes_b.shape}/{scores_b.shape}, the reference has {boxes_a.shape}/{scores_a.shape}")
        return report
    score_diff = float(np.abs(scores_a - scores_b).max()) if scores_a.size else 0.0
    report.note("score", score_diff)
    if not score_diff <= tol.score:
        report.fail(f"score max |diff| {score_diff:.3g} > {tol.score:g}")
    confident = scores_a.max(axis=1) > tol.min_score  # [N, A]
    box_diff = float(np.abs(boxes_a - boxes_b)[confident].max()) if confident.any() else 0.0
    report.note("box_px", box_diff)
    report.max_diff["compared_boxes"] = float(confident.sum())
    if not box_diff <= tol.box_px:
        report.fail(f"box max |diff| {box_diff:.3g} px > {tol.box_px:g}")
    return report


def summarize(max_diff: Dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2g}" for k, v in max_diff.items()) or "-"


__all__: Tuple[str, ...] = ("FP16", "FP32", "TOLERANCES", "ParityReport", "Tolerance", "compare", "summarize")
