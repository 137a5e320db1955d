"""The pipeline over a dataset, through its public API, for the three modes:

* `keypoints` (end to end): the detector's boxes above the pipeline's
  threshold, then the keypoint model on them: what predict() returns.
* `keypoints_gt_boxes`: the keypoint model alone on the annotated person
  boxes (predict_on_boxes), as PaddleX measures its published keypoint AP.
* `detection`: the detector's person boxes alone (predict_boxes), every box
  above `detection_min_score`.

One detector pass serves the two modes that need it: predict_boxes at the
lower of the two thresholds, then each mode keeps the boxes above its own
(predict's own filter is the same strict `score > threshold`, so the
end-to-end boxes are predict()'s). Images are decoded in a background thread
a chunk ahead, and every person of a chunk goes through the keypoint model
in the pipeline's batches.

Keypoint results are scored as PaddleDetection's and mmpose's top-down COCO
evaluations score them: box score x the mean of the joint scores above 0.2.
No OKS-NMS is applied: the results are what the pipeline gives its users."""
from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Sequence, Tuple, Union

import numpy as np
from tqdm import tqdm

from ..errors import ModelError
from ..io import Frame, InputFailure, InputLimits, iter_frames
from ..stages import read_ahead
from .dataset import ImageEntry, KeypointDataset
from .settings import DETECTION, E2E, GT_BOXES, EvalSettings

log = logging.getLogger("posepipe")

# Images decoded and run per step: enough persons to fill the keypoint
# model's batches and to hide decoding behind the models, few enough images
# in memory at once. Batch sizes themselves stay the pipeline's.
CHUNK_IMAGES = 16
# PaddleDetection's `in_vis_thre` (and mmpose's): joints above it count in a person's score.
VISIBLE_JOINT_SCORE = 0.2


@dataclass
class Predictions:
    results: Dict[str, List[Dict[str, Any]]]  # mode -> COCO results
    image_ids: List[int] = field(default_factory=list)  # the images that were read and run
    failed: List[Tuple[ImageEntry, str]] = field(default_factory=list)
    e2e_threshold: float = 0.0
    seconds: float = 0.0


def run_modes(pipeline, dataset: KeypointDataset, settings: EvalSettings, progress: bool = False) -> Predictions:
    e2e_threshold = pipeline.det_threshold if settings.det_threshold is None else float(settings.det_threshold)
    thresholds = {E2E: e2e_threshold, DETECTION: settings.detection_min_score}
    detector_threshold = min((thresholds[m] for m in settings.modes if m in thresholds), default=None)
    predictions = Predictions({m: [] for m in settings.modes}, e2e_threshold=e2e_threshold)
    limits = pipeline.options.input_limits
    chunks = [dataset.images[i : i + CHUNK_IMAGES] for i in range(0, len(dataset.images), CHUNK_IMAGES)]
    start = time.perf_counter()
    reads = read_ahead(chunks, lambda chunk: _read(chunk, limits), "posepipe-eval-decode")
    with tqdm(total=len(dataset.images), unit="img", file=sys.stderr, disable=not progress, desc="posepipe eval") as bar:
        for read, chunk in zip(reads, chunks):  # reads first: it ends, and frees its thread, with the last chunk
            entries, frames = [], []
            for entry, frame in zip(chunk, read):
                if isinstance(frame, InputFailure):
                    log.warning("eval: image id %s left out: %s", entry.id, frame.error)
                    predictions.failed.append((entry, str(frame.error)))
                else:
                    entries.append(entry)
                    frames.append(frame)
            if frames:
                _run_chunk(pipeline, dataset, entries, frames, settings, thresholds, detector_threshold, predictions)
                predictions.image_ids += [e.id for e in entries]
            bar.update(len(chunk))
    predictions.seconds = time.perf_counter() - start
    return predictions


def _read(chunk: Sequence[ImageEntry], limits: InputLimits) -> List[Union[Frame, InputFailure]]:
    return [next(iter_frames(str(entry.path), limits)) for entry in chunk]


def _run_chunk(pipeline, dataset, entries, frames, settings, thresholds, detector_threshold, predictions) -> None:
    category = dataset.person_category
    out = predictions.results
    if detector_threshold is not None:
        boxes = pipeline.predict_boxes(frames, det_threshold=detector_threshold)
        if DETECTION in settings.modes:
            for entry, b in zip(entries, boxes):
                out[DETECTION] += box_results(entry.id, category, b[b[:, 4] > thresholds[DETECTION]])
        if E2E in settings.modes:
            kept = [b[b[:, 4] > thresholds[E2E]] for b in boxes]
            for entry, result in zip(entries, pipeline.predict_on_boxes(frames, kept)):
                out[E2E] += keypoint_results(entry.id, category, result, len(dataset.keypoint_names))
    if GT_BOXES in settings.modes:
        gt = [dataset.gt_boxes(entry.id) for entry in entries]
        for entry, result in zip(entries, pipeline.predict_on_boxes(frames, gt)):
            out[GT_BOXES] += keypoint_results(entry.id, category, result, len(dataset.keypoint_names))


def person_score(det_score: float, joint_scores: np.ndarray) -> float:
    """The box score times the mean score of the joints above VISIBLE_JOINT_SCORE (0 if none)."""
    visible = joint_scores[joint_scores > VISIBLE_JOINT_SCORE]
    return float(det_score) * (float(visible.mean()) if visible.size else 0.0)


def keypoint_results(image_id: int, category_id: int, result, num_joints: int) -> List[Dict[str, Any]]:
    """A pipeline result's persons in COCO's keypoint results format; the third
    value of each joint is its score (the evaluator reads only x and y)."""
    found = []
    for person in result["boxes"]:
        kpts = np.asarray(person["keypoints"], np.float32)
        if kpts.shape[0] != num_joints:
            raise ModelError(f"the keypoint model gives {kpts.shape[0]} joints per person; the dataset's persons have {num_joints}")
        found.append(
            {
                "image_id": image_id,
                "category_id": category_id,
                "keypoints": kpts.reshape(-1).tolist(),
                "score": person_score(person["det_score"], kpts[:, 2]),
            }
        )
    return found


def box_results(image_id: int, category_id: int, boxes: np.ndarray) -> List[Dict[str, Any]]:
    """[M,5] (x1, y1, x2, y2, score) boxes in COCO's bbox results format."""
    return [
        {"image_id": image_id, "category_id": category_id, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": s}
        for x1, y1, x2, y2, s in np.asarray(boxes, np.float64).tolist()
    ]
