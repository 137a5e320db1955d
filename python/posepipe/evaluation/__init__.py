"""Accuracy of a pipeline on a COCO person-keypoints dataset, per module, with
the COCO evaluator; and the checks a dataset must pass first.

    from posepipe.evaluation import evaluate, check_dataset
    report = evaluate("my.yaml", "datasets/coco_val", save_path="eval_out")
    report.stats["keypoints"]["AP"], report.stats["keypoints_gt_boxes"]["AP"], report.stats["detection"]["AP"]

`posepipe eval` and `posepipe check-dataset` are the same from the command
line (evaluation/cli.py). The files: dataset.py (layouts, the checked
dataset), checks.py (what check-dataset reports), modes.py (the pipeline over
the images, three ways), coco.py (the evaluator), report.py (table, advice,
worst images, eval.json), evaluate.py (the whole run)."""
from .checks import DatasetReport, Problem, check_dataset
from .evaluate import evaluate
from .report import EvalReport
from .settings import MODES, EvalSettings

__all__ = ["MODES", "DatasetReport", "EvalReport", "EvalSettings", "Problem", "check_dataset", "evaluate"]
