"""The COCO evaluator (pycocotools), unchanged: posepipe hands it the
ground truth and COCO-format results and reports its numbers as they come.

* `stats`: COCOeval's ten keypoint stats or twelve bbox stats, by name; -1
  is COCO's "no ground truth in this area range".
* `per_image`: read from the evaluator's own matching (`evalImgs`, area
  "all", the largest maxDets), not recomputed: per image, the share of its
  counted persons matched at each OKS/IoU threshold (averaged over the ten),
  the detections left unmatched at the 0.50 threshold, and which detection
  matched each person at 0.50 (to see whether a detector's box above some
  score found it)."""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from typing import Any, Dict, List, Sequence

import numpy as np

KEYPOINTS = "keypoints"
BBOX = "bbox"
STAT_NAMES = {
    KEYPOINTS: ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl"),
    BBOX: ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"),
}


def _pycocotools():
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as e:
        from ..errors import PosepipeError

        raise PosepipeError(f"evaluation needs pycocotools: pip install 'posepipe[eval]' ({e})") from None
    return COCO, COCOeval


@dataclass(frozen=True)
class ImageMatches:
    persons: int  # ground-truth persons the evaluator counts (not ignored)
    recall: float  # matched persons / persons, averaged over the thresholds; nan without persons
    false_positives: int  # detections unmatched at the 0.50 threshold
    matched_scores: Sequence[float]  # per counted person, the score of its 0.50 match (0.0: none)


@dataclass(frozen=True)
class Scores:
    stats: Dict[str, float]
    per_image: Dict[int, ImageMatches]


def ground_truth(coco_json: Dict[str, Any]):
    """A pycocotools COCO over the parsed annotation JSON, built quietly."""
    COCO, _ = _pycocotools()
    gt = COCO()
    gt.dataset = coco_json
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def score(gt, results: List[Dict[str, Any]], iou_type: str, category_id: int, image_ids: Sequence[int]) -> Scores:
    """COCOeval(iou_type) of `results` (COCO results format) on `image_ids`."""
    COCO, COCOeval = _pycocotools()
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        if results:
            # loadRes adds fields to each result dict; the caller's stay as they are.
            dt = gt.loadRes([dict(r) for r in results])
        else:
            # loadRes cannot take an empty list; an empty result set scores 0 (or -1 without ground truth).
            dt = COCO()
            dt.dataset = {"images": gt.dataset["images"], "categories": gt.dataset["categories"], "annotations": []}
            dt.createIndex()
        ev = COCOeval(gt, dt, iouType=iou_type)
        ev.params.imgIds = sorted(image_ids)
        ev.params.catIds = [category_id]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = {name: float(v) for name, v in zip(STAT_NAMES[iou_type], ev.stats)}
    return Scores(stats, _per_image(ev))


def _per_image(ev) -> Dict[int, ImageMatches]:
    p = ev.params
    all_range, max_det = p.areaRng[p.areaRngLbl.index("all")], p.maxDets[-1]
    at_50 = int(np.argmin(np.abs(np.asarray(p.iouThrs) - 0.5)))
    found: Dict[int, ImageMatches] = {}
    for e in ev.evalImgs:
        if e is None or list(e["aRng"]) != list(all_range) or e["maxDet"] != max_det:
            continue
        counted = ~np.asarray(e["gtIgnore"], bool)
        gt_matches = np.asarray(e["gtMatches"]).reshape(len(p.iouThrs), -1)[:, counted]
        dt_matches = np.asarray(e["dtMatches"]).reshape(len(p.iouThrs), -1)
        dt_ignore = np.asarray(e["dtIgnore"], bool).reshape(len(p.iouThrs), -1)
        n = int(counted.sum())
        score_of = dict(zip(e["dtIds"], e["dtScores"]))
        found[e["image_id"]] = ImageMatches(
            persons=n,
            recall=float((gt_matches > 0).mean()) if n else float("nan"),
            false_positives=int(((dt_matches[at_50] == 0) & ~dt_ignore[at_50]).sum()),
            matched_scores=tuple(float(score_of.get(int(m), 0.0)) if m > 0 else 0.0 for m in gt_matches[at_50]),
        )
    return found

