"""What `posepipe eval` found: the evaluator's stats per mode, which module to
fine-tune, the worst images; as text, as `eval.json` and as drawings."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import cv2
import numpy as np

from ..draw import draw_keypoints
from ..io import iter_frames
from .coco import BBOX, KEYPOINTS, STAT_NAMES, ImageMatches
from .dataset import DatasetFiles, ImageEntry, KeypointDataset
from .settings import DETECTION, E2E, GT_BOXES, MODES

MODE_LABELS = {E2E: "end to end", GT_BOXES: "on ground-truth boxes", DETECTION: "detector alone"}
IOU_TYPES = {E2E: KEYPOINTS, GT_BOXES: KEYPOINTS, DETECTION: BBOX}
_GT_COLOUR, _BOX_COLOUR = (0, 200, 0), (0, 140, 255)  # BGR: ground truth green, detections orange


@dataclass(frozen=True)
class ImageReport:
    image: ImageEntry
    matches: Dict[str, ImageMatches]  # mode -> the evaluator's matching on this image

    def recall(self, mode: str) -> float:
        m = self.matches.get(mode)
        return m.recall if m is not None else float("nan")

    def found_by_detector(self, threshold: float) -> Optional[Tuple[int, int]]:
        """(persons whose 0.50-IoU box scores above threshold, persons), from the detection mode."""
        m = self.matches.get(DETECTION)
        if m is None:
            return None
        return sum(s > threshold for s in m.matched_scores), m.persons


@dataclass
class EvalReport:
    files: DatasetFiles
    counts: str  # the dataset's, as check-dataset prints them
    stats: Dict[str, Dict[str, float]]  # mode -> the evaluator's stats by name
    results: Dict[str, List[Dict[str, Any]]]  # mode -> the COCO results scored
    images: List[ImageReport]
    e2e_threshold: float
    failed: List[Tuple[str, str]] = field(default_factory=list)  # (image file, why)
    dataset_warnings: int = 0
    pipeline_seconds: float = 0.0
    evaluator_seconds: float = 0.0

    def to_json(self) -> Dict[str, Dict[str, float]]:
        """eval.json: one object per mode run, its stat names to numbers."""
        return {mode: dict(self.stats[mode]) for mode in MODES if mode in self.stats}

    def worst(self, count: int) -> List[ImageReport]:
        """The images the first mode run serves worst: lowest share of persons
        matched (over the OKS/IoU thresholds), then most false positives."""
        mode = next(m for m in MODES if m in self.stats)

        def badness(r: ImageReport) -> Tuple[float, int]:
            m = r.matches[mode]
            return (1.0 if math.isnan(m.recall) else m.recall, -m.false_positives)

        candidates = [r for r in self.images if mode in r.matches and (r.matches[mode].persons or r.matches[mode].false_positives)]
        return sorted(candidates, key=badness)[:count]

    def advice(self) -> List[str]:
        if E2E not in self.stats or GT_BOXES not in self.stats:
            return []
        gt_ap, e2e_ap = self.stats[GT_BOXES]["AP"], self.stats[E2E]["AP"]
        detector_cost, keypoint_gap = gt_ap - e2e_ap, 1.0 - gt_ap
        lines = [
            f"keypoint model on ground-truth boxes: AP {gt_ap:.3f} (the keypoint module's own accuracy, as PaddleX publishes it)",
            f"end to end, on the detector's boxes (score > {self.e2e_threshold:g}): AP {e2e_ap:.3f} "
            f"({'-' if detector_cost >= 0 else '+'}{abs(detector_cost):.3f} from the boxes)",
        ]
        if DETECTION in self.stats:
            det = self.stats[DETECTION]
            lines.append(f"person detector alone: bbox AP {det['AP']:.3f}, AR100 {det['AR100']:.3f}")
        module = "the person detector" if detector_cost > keypoint_gap else "the keypoint model"
        lines.append(
            f"fine-tune first: {module} (the detector's boxes cost {detector_cost:.3f} AP; "
            f"the keypoint model leaves {keypoint_gap:.3f} on perfect boxes)"
        )
        return lines

    def lines(self, worst: int = 5) -> List[str]:
        out = [f"dataset: {self.files.describe()}", self.counts]
        for iou_type, title in ((KEYPOINTS, "keypoints (OKS)"), (BBOX, "person detection (bbox)")):
            modes = [m for m in MODES if m in self.stats and IOU_TYPES[m] == iou_type]
            if not modes:
                continue
            out.append(f"{title:<26}" + "".join(f"{name:>7}" for name in STAT_NAMES[iou_type]))
            for mode in modes:
                out.append(f"  {MODE_LABELS[mode]:<24}" + "".join(_stat(self.stats[mode][n]) for n in STAT_NAMES[iou_type]))
        out += self.advice()
        chosen = self.worst(worst)
        if chosen:
            out.append(f"worst {len(chosen)} image{'s' * (len(chosen) != 1)} ({MODE_LABELS[next(m for m in MODES if m in self.stats)]}):")
            for r in chosen:
                out.append("  " + self._image_line(r))
        for name, why in self.failed:
            out.append(f"left out (unreadable): {name}: {why}")
        if self.dataset_warnings:
            out.append(f"{self.dataset_warnings} dataset warning(s): `posepipe check-dataset {self.files.root}` lists them")
        n = len(self.images)
        rate = n / self.pipeline_seconds if self.pipeline_seconds > 0 else float("inf")
        out.append(
            f"{n} images in {self.pipeline_seconds:.2f} s ({rate:.1f} images/s), evaluator {self.evaluator_seconds:.2f} s"
        )
        return out

    def _image_line(self, r: ImageReport) -> str:
        parts = [r.image.file_name]
        for mode in (E2E, GT_BOXES):
            if mode in r.matches:
                m = r.matches[mode]
                parts.append(f"{MODE_LABELS[mode]}: {_share(m.recall)} of {m.persons} person{'s' * (m.persons != 1)} matched")
        found = r.found_by_detector(self.e2e_threshold)
        if found is not None:
            parts.append(f"detector found {found[0]} of {found[1]} (score > {self.e2e_threshold:g})")
        if E2E in r.matches:
            fp = r.matches[E2E].false_positives
            parts.append(f"{fp} false positive{'s' * (fp != 1)}")
        return "; ".join(parts)

    def save(self, save_path: Path, dataset: KeypointDataset, worst: int = 5) -> List[Path]:
        """eval.json, each mode's COCO results (<mode>_results.json, for any COCO
        tool) and the worst images drawn (worst_<rank>_<file>.jpg)."""
        save_path = Path(save_path)
        save_path.mkdir(parents=True, exist_ok=True)
        written = [save_path / "eval.json"]
        written[0].write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")
        for mode, results in self.results.items():
            target = save_path / f"{mode}_results.json"
            target.write_text(json.dumps(results), encoding="utf-8")
            written.append(target)
        for rank, r in enumerate(self.worst(worst), 1):
            frame = next(iter_frames(str(r.image.path)))
            if not hasattr(frame, "image"):
                continue  # it failed to read during the run too, and is listed there
            target = save_path / f"worst_{rank}_{Path(r.image.file_name).stem}.jpg"
            cv2.imwrite(str(target), self._drawing(frame.image, r, dataset))
            written.append(target)
        return written

    def _drawing(self, image: np.ndarray, r: ImageReport, dataset: KeypointDataset) -> np.ndarray:
        """Ground truth in green (boxes, labelled joints), the detector's boxes
        above the pipeline's threshold in orange, the end-to-end skeletons as
        posepipe draws them, and the image's line of the report on top."""
        predicted = [np.asarray(p["keypoints"], np.float32).reshape(-1, 3) for p in self.results.get(E2E, []) if p["image_id"] == r.image.id]
        canvas = draw_keypoints(image, np.stack(predicted)) if predicted else image.copy()
        for p in self.results.get(DETECTION, []):
            if p["image_id"] == r.image.id and p["score"] > self.e2e_threshold:
                x, y, w, h = p["bbox"]
                cv2.rectangle(canvas, (int(x), int(y)), (int(x + w), int(y + h)), _BOX_COLOUR, 1)
        for person in dataset.persons(r.image.id):
            x, y, w, h = person["bbox"]
            cv2.rectangle(canvas, (int(x), int(y)), (int(x + w), int(y + h)), _GT_COLOUR, 1)
            k = person["keypoints"]
            for jx, jy, v in zip(k[0::3], k[1::3], k[2::3]):
                if v > 0:
                    cv2.circle(canvas, (int(jx), int(jy)), 3, _GT_COLOUR, 1)
        _caption(canvas, self._image_line(r))
        return canvas


def _caption(canvas: np.ndarray, text: str) -> None:
    """`text` on top of the image, its "; "-separated parts wrapped to the width."""
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, max(0.4, canvas.shape[1] / 1600)
    lines: List[str] = []
    for part in text.split("; "):
        joined = f"{lines[-1]}; {part}" if lines else part
        if lines and cv2.getTextSize(joined, font, scale, 1)[0][0] <= canvas.shape[1] - 8:
            lines[-1] = joined
        else:
            lines.append(part)
    step = cv2.getTextSize("Ag", font, scale, 1)[0][1] + 8
    for i, line in enumerate(lines):
        origin = (4, step * (i + 1))
        cv2.putText(canvas, line, origin, font, scale, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(canvas, line, origin, font, scale, (255, 255, 255), 1, cv2.LINE_AA)


def _stat(value: float) -> str:
    return f"{'-':>7}" if value < 0 else f"{value:7.3f}"


def _share(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.0%}"
