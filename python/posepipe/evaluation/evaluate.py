"""`evaluate(pipeline, dataset)`: load and check the dataset, run the three
modes, score each with the COCO evaluator, report."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Union

from .checks import load_dataset
from .coco import ground_truth, score
from .dataset import PathLike
from .modes import run_modes
from .report import IOU_TYPES, EvalReport, ImageReport
from .settings import MODES, EvalSettings


def evaluate(
    pipeline: Union[Any, str, Dict[str, Any], Callable[[], Any]],
    dataset: PathLike,
    *,
    annotations: Optional[PathLike] = None,
    save_path: Optional[PathLike] = None,
    progress: bool = False,
    **settings: Any,
) -> EvalReport:
    """COCO keypoint AP/AR of `pipeline` on the COCO person-keypoints dataset
    in folder `dataset`, in the modes EvalSettings names (keywords: its
    fields). `pipeline`: a created pipeline, or what create_pipeline takes as
    `pipeline` (a name or YAML path) or `config` (a dict). With `save_path`,
    eval.json, the results and the worst images go there. The dataset is
    checked before a pipeline given by name, config or factory function (a
    callable returning one) is created, so a bad dataset fails fast."""
    options = EvalSettings(**settings)
    data, checked = load_dataset(dataset, annotations)
    if isinstance(pipeline, (str, Path, dict)):
        from .. import create_pipeline

        pipeline = create_pipeline(config=pipeline) if isinstance(pipeline, dict) else create_pipeline(pipeline=str(pipeline))
    elif callable(pipeline) and not hasattr(pipeline, "predict_on_boxes"):
        pipeline = pipeline()
    predictions = run_modes(pipeline, data, options, progress=progress)

    start = time.perf_counter()
    gt = ground_truth(data.coco)
    scores = {
        mode: score(gt, predictions.results[mode], IOU_TYPES[mode], data.person_category, predictions.image_ids)
        for mode in MODES
        if mode in options.modes
    }
    evaluator_seconds = time.perf_counter() - start
    ran = set(predictions.image_ids)
    report = EvalReport(
        files=data.files,
        counts=checked.counts(),
        stats={mode: s.stats for mode, s in scores.items()},
        results=predictions.results,
        images=[
            ImageReport(entry, {mode: s.per_image[entry.id] for mode, s in scores.items() if entry.id in s.per_image})
            for entry in data.images
            if entry.id in ran
        ],
        e2e_threshold=predictions.e2e_threshold,
        failed=[(str(entry.path), why) for entry, why in predictions.failed],
        dataset_warnings=len(checked.warnings),
        pipeline_seconds=predictions.seconds,
        evaluator_seconds=evaluator_seconds,
    )
    if save_path is not None:
        report.save(Path(save_path), data, options.worst)
    return report
