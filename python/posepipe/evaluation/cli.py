"""`posepipe eval` and `posepipe check-dataset`.

    posepipe eval --pipeline my.yaml --dataset DIR [--annotations FILE] [--save_path OUT] [...]
    posepipe check-dataset DIR [--annotations FILE] [--headers_only]

Exit codes: 0 done; 1 the dataset is unusable, a model or device fails, or
images could not be read (the others are still scored); 2 bad arguments."""
from __future__ import annotations

import argparse
import logging
from typing import Sequence

from ..cli import _fail, _Parser, _TqdmHandler, _UsageError
from ..errors import ConfigError, PosepipeError
from ..flags import add_flags, from_args, given
from ..options import PipelineOptions
from .settings import EvalSettings

def main(argv: Sequence[str]) -> int:
    """argv[0] is the subcommand."""
    command, rest = argv[0], list(argv[1:])
    prog = f"posepipe {command}"
    try:
        if command == "eval":
            return _eval(_eval_parser(prog).parse_args(rest))
        return _check(_check_parser(prog).parse_args(rest))
    except SystemExit as e:  # --help
        return int(e.code or 0)
    except _UsageError as e:
        return _fail(f"{command}: {e}", 2)
    except PosepipeError as e:
        return _fail(f"{command}: {e}", 1)
    except OSError as e:  # e.g. --save_path not writable
        return _fail(f"{command}: {e.filename + ': ' if e.filename else ''}{e.strerror or e}", 1)
    except KeyboardInterrupt:
        return _fail(f"{command}: interrupted", 130)


def _eval_parser(prog: str) -> argparse.ArgumentParser:
    p = _Parser(
        prog,
        description="COCO keypoint AP/AR of a pipeline on a COCO person-keypoints dataset: end to end, the keypoint "
        "model on ground-truth boxes, and the detector's person boxes, to tell which module to fine-tune.",
        allow_abbrev=False,
    )
    g = p.add_argument_group("what to evaluate")
    g.add_argument("--pipeline", default="human_keypoint_detection", help="pipeline name or PaddleX pipeline YAML (its model_dir: your models)")
    g.add_argument("--dataset", required=True, metavar="DIR", help="COCO (annotations/person_keypoints_*.json + images/) or PaddleX keypoint (annotations/instance_val.json + images/) dataset folder")
    g.add_argument("--annotations", metavar="FILE", help="the annotation file, when the folder has several or another layout")
    g.add_argument("--save_path", metavar="DIR", help="write eval.json, the COCO results of each mode and the worst images drawn here")
    g.add_argument("--device", help="cpu, gpu, gpu:N, ... (default: gpu:0 if available, else cpu)")
    g.add_argument(
        "--use_hpip",
        action="store_true",
        default=None,
        help="use the high-performance inference backends (default: the pipeline YAML's use_hpip, else off)",
    )
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_flags(p.add_argument_group("evaluation"), EvalSettings)
    add_flags(p.add_argument_group("how the pipeline runs"), PipelineOptions)
    return p


def _check_parser(prog: str) -> argparse.ArgumentParser:
    about = (
        "Check a COCO person-keypoints dataset before training or evaluating on it: prints its counts "
        "and every problem with its file and id; exit code 1 when it cannot be used."
    )
    p = _Parser(prog, description=about, allow_abbrev=False)
    p.add_argument("dataset", metavar="DIR", help="the dataset folder (COCO or PaddleX keypoint layout)")
    p.add_argument("--annotations", metavar="FILE", help="the annotation file, when the folder has several")
    p.add_argument("--headers_only", action="store_true", help="read only the image headers (faster; truncated files go unnoticed)")
    return p


def _eval(args: argparse.Namespace) -> int:
    from .. import create_pipeline
    from .evaluate import evaluate

    try:
        settings = from_args(EvalSettings, args)
        options = given(PipelineOptions, args)
        PipelineOptions(**options)
    except ConfigError as e:
        raise _UsageError(str(e)) from None
    logger, handler = logging.getLogger("posepipe"), _TqdmHandler()
    handler.setLevel(logging.WARNING)
    logger.addHandler(handler)
    try:
        report = evaluate(
            lambda: create_pipeline(pipeline=args.pipeline, device=args.device, use_hpip=args.use_hpip, **options),
            args.dataset,
            annotations=args.annotations,
            save_path=args.save_path,
            progress=not args.quiet,
            **given(EvalSettings, args),
        )
    finally:
        logger.removeHandler(handler)
    print("\n".join(report.lines(settings.worst)))
    if args.save_path:
        print(f"saved: {args.save_path}/eval.json, the COCO results of each mode and the worst images")
    if report.failed:
        return _fail(f"eval: {len(report.failed)} image(s) could not be read and were left out (listed above)", 1)
    return 0


def _check(args: argparse.Namespace) -> int:
    from .checks import check_dataset, format_report

    report = check_dataset(args.dataset, args.annotations, decode=not args.headers_only)
    print("\n".join(format_report(report)))
    if not report.usable:
        return _fail(f"check-dataset: {args.dataset}: not usable ({len(report.errors)} error(s) above)", 1)
    return 0
