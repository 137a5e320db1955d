"""The pipeline's three stage calls as the servers make them, with the person
caps and failure isolation both servers apply.

`Stages` is what a server needs of a pipeline (posepipe's KeypointPipeline
and serving.testing.FakePipeline have it). The local server's scheduler
(batching.py) interleaves these calls across requests; a Ray Serve replica
runs a whole `@serve.batch` through `run_frames`. Both keep an image's
`max_persons` best-scoring persons, run keypoints in steps of at most
`max_batch_persons`, and re-run a failed call item by item so that one bad
image cannot fail the others it was batched with."""
from __future__ import annotations

import logging
from typing import Any, Callable, List, Optional, Protocol, Sequence

import numpy as np

log = logging.getLogger("posepipe.serving")

STAGE_METHODS = ("predict_boxes", "estimate_keypoints", "build_result")


class Stages(Protocol):
    """Boxes are [M,5] arrays: x1, y1, x2, y2, score."""

    def predict_boxes(self, frames: Sequence[Any], det_threshold: Optional[float]) -> List[np.ndarray]: ...

    def estimate_keypoints(self, frames: Sequence[Any], boxes: Sequence[np.ndarray]) -> List[np.ndarray]: ...

    def build_result(self, frame: Any, boxes: np.ndarray, keypoints: np.ndarray) -> Any: ...


def has_stages(pipeline: Any) -> bool:
    return all(callable(getattr(pipeline, name, None)) for name in STAGE_METHODS)


def checked(call: Callable[[list], Sequence[Any]], items: list) -> List[Any]:
    """call(items), which must give one output per item."""
    outputs = list(call(items))
    if len(outputs) != len(items):
        raise RuntimeError(f"the pipeline returned {len(outputs)} outputs for {len(items)} inputs")
    return outputs


def best(boxes: np.ndarray, limit: Optional[int]) -> np.ndarray:
    """The `limit` best-scoring boxes (score in column 4), in their original order."""
    if limit is None or len(boxes) <= limit:
        return boxes
    keep = np.sort(np.argsort(-boxes[:, 4], kind="stable")[:limit])
    return boxes[keep]


def isolated(call: Callable[[list], Sequence[Any]], items: list) -> List[Any]:
    """call(items), one output per item; if it fails, each item alone, so a
    failure (returned as the exception) stays with the items that cause it."""
    try:
        return checked(call, items)
    except Exception as error:  # noqa: BLE001 - isolated below
        if len(items) == 1:
            return [error]
        log.warning("a batch of %d failed (%s); re-running its images one by one", len(items), error)
    outcomes: List[Any] = []
    for item in items:
        try:
            outcomes.append(checked(call, [item])[0])
        except Exception as e:  # noqa: BLE001
            outcomes.append(e)
    return outcomes


def run_frames(
    stages: Stages,
    frames: Sequence[Any],
    threshold: Optional[float],
    *,
    max_persons: Optional[int],
    max_batch_persons: int,
) -> List[Any]:
    """Both stages for one batch of frames with one threshold, on the calling
    thread: per frame its result, or the exception that failed it."""
    detected = isolated(lambda part: stages.predict_boxes(part, threshold), list(frames))
    outcomes: List[Any] = list(detected)
    keypoints: List[List[np.ndarray]] = [[] for _ in frames]
    persons = []  # (frame index, first person, end) per slice of at most max_batch_persons
    for i, boxes in enumerate(detected):
        if isinstance(boxes, BaseException):
            continue
        outcomes[i] = best(np.asarray(boxes), max_persons)
        for start in range(0, len(outcomes[i]), max_batch_persons):
            persons.append((i, start, min(start + max_batch_persons, len(outcomes[i]))))
    step: List[Any] = []
    taken = 0
    steps = []
    for piece in persons:  # consecutive slices packed into steps of at most max_batch_persons
        size = piece[2] - piece[1]
        if step and taken + size > max_batch_persons:
            steps.append(step)
            step, taken = [], 0
        step.append(piece)
        taken += size
    if step:
        steps.append(step)
    for step in steps:
        estimated = isolated(
            lambda part: stages.estimate_keypoints([frames[i] for i, _, _ in part], [outcomes[i][a:b] for i, a, b in part]),
            step,
        )
        for (i, _, _), found in zip(step, estimated):
            if isinstance(outcomes[i], BaseException):
                continue
            if isinstance(found, BaseException):
                outcomes[i] = found
            else:
                keypoints[i].append(np.asarray(found))
    return [
        boxes if isinstance(boxes, BaseException) else finish(stages, frame, boxes, parts)
        for frame, boxes, parts in zip(frames, outcomes, keypoints)
    ]


def finish(stages: Stages, frame: Any, boxes: np.ndarray, keypoint_parts: List[np.ndarray]) -> Any:
    """A frame's result from its boxes and its keypoint steps' parts, or the
    exception that failed it."""
    found = np.concatenate(keypoint_parts, axis=0) if keypoint_parts else np.zeros((0, 17, 3), np.float32)
    try:
        return stages.build_result(frame, boxes, found)
    except Exception as e:  # noqa: BLE001 - this frame's failure
        return e
