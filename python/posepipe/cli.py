"""The `posepipe` command: PaddleX's pipeline flags, plus a few a fast engine's
users need, one-line errors and meaningful exit codes.

    posepipe --pipeline human_keypoint_detection|my.yaml --input PATH|URL|FOLDER [...]
    posepipe --get_pipeline_config human_keypoint_detection [--save_path DIR]
    posepipe serve ...                      (the HTTP server, posepipe.serving.cli)

Exit codes: 0 all inputs done; 1 a runtime failure (bad model dir, device,
config, or some inputs failed: the good ones are still saved); 2 bad arguments."""
from __future__ import annotations

import argparse
import importlib
import logging
import math
import sys
from pathlib import Path
from typing import Any, Dict, List, NoReturn, Optional, Sequence

from tqdm import tqdm

from . import __version__, create_pipeline
from .config import PIPELINE_NAME, PipelineConfig, load_config
from .errors import ConfigError, PosepipeError
from .flags import add_flags, given, parse_bool
from .io import iter_sources
from .options import PipelineOptions
from .result import colour

PROG = "posepipe"


class _UsageError(Exception):
    """Bad command-line arguments (exit code 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line instead of argparse's usage block.
        raise _UsageError(message)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "serve":
        return _serve(argv[1:])
    if "--serve" in argv:  # PaddleX spells it as a flag
        return _serve([a for a in argv if a != "--serve"])
    parser = _build_parser()
    if not argv:  # as PaddleX: show the help, exit 2
        parser.print_help()
        return 2
    try:
        args = parser.parse_args(argv)
        if args.get_pipeline_config is not None:
            return _get_pipeline_config(args.get_pipeline_config, args.save_path)
        return _predict(args)
    except SystemExit as e:  # --help, --version
        return int(e.code or 0)
    except _UsageError as e:
        return _fail(str(e), 2)
    except PosepipeError as e:
        return _fail(str(e), 1)
    except OSError as e:  # e.g. --save_path not writable
        return _fail(f"{e.filename + ': ' if e.filename else ''}{e.strerror or e}", 1)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Fast human keypoint detection, a drop-in for PaddleX's human_keypoint_detection pipeline.",
        epilog="`posepipe serve --help` for the HTTP server.",
        allow_abbrev=False,
    )
    pdx = parser.add_argument_group("PaddleX options")
    pdx.add_argument(
        "--pipeline",
        default=PIPELINE_NAME,
        help=f"pipeline name ({PIPELINE_NAME}, the default) or a PaddleX pipeline YAML file",
    )
    pdx.add_argument(
        "--input",
        nargs="+",
        metavar="PATH",
        help="image file, folder (its images, subfolders too), http(s) URL; several allowed",
    )
    pdx.add_argument(
        "--det_threshold", type=_threshold, help="person detection score threshold, 0..1 (default: the model's)"
    )
    pdx.add_argument("--save_path", help="folder to save {name}_res.json and {name}_res.<ext> into")
    pdx.add_argument("--device", help="cpu, gpu, gpu:N, ... (default: gpu:0 if available, else cpu)")
    pdx.add_argument("--use_hpip", action="store_true", help="use the high-performance inference backends")
    pdx.add_argument(
        "--get_pipeline_config",
        metavar="NAME",
        help="write the pipeline's YAML to --save_path (a folder or a .yaml file), or print it",
    )

    own = parser.add_argument_group("posepipe options")
    own.add_argument("--det_model_dir", help="person detector model folder (overrides the pipeline config)")
    own.add_argument("--kpt_model_dir", help="keypoint model folder (overrides the pipeline config)")
    own.add_argument(
        "--flip", nargs="?", const=True, type=parse_bool, metavar="BOOL", help="average with the mirrored crop (slower, steadier)"
    )
    own.add_argument(
        "--use_udp", nargs="?", const=True, type=parse_bool, metavar="BOOL", help="unbiased data processing (default: the model's)"
    )
    own.add_argument("--det_batch_size", type=_positive_int, metavar="N", help="images per detector call")
    own.add_argument(
        "--kpt_batch_size",
        type=_positive_int,
        metavar="N",
        help="most person crops per keypoint-model call (KeypointDetection.batch_size; 1, the default: measured)",
    )
    add_flags(own, PipelineOptions)
    own.add_argument("--no_img", action="store_true", help="save only the JSON results, no drawn images")
    own.add_argument("-q", "--quiet", action="store_true", help="print no results and no progress bar, only errors")
    own.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    return parser


def _predict(args: argparse.Namespace) -> int:
    if not args.input:
        raise _UsageError("--input is required: an image file, a folder, or an http(s) URL")
    try:
        options = given(PipelineOptions, args)
        PipelineOptions(**options)  # refuses bad values before anything loads
    except ConfigError as e:
        raise _UsageError(str(e)) from None
    pipeline = create_pipeline(config=_config(args).to_dict(), device=args.device, use_hpip=args.use_hpip, **options)
    save_path = Path(args.save_path) if args.save_path else None
    if save_path is not None:
        save_path.mkdir(parents=True, exist_ok=True)
    # Expanded here to know the count for the progress bar; the pipeline takes the sources as they are.
    sources = list(iter_sources(args.input))

    logger, handler = logging.getLogger("posepipe"), _TqdmHandler()
    handler.setLevel(logging.ERROR if args.quiet else logging.WARNING)
    logger.addHandler(handler)
    failed = []
    try:
        with tqdm(total=len(sources), unit="img", file=sys.stderr, disable=args.quiet or len(sources) < 2) as bar:
            for result in pipeline.predict(sources, det_threshold=args.det_threshold):
                if not args.quiet:
                    tqdm.write(colour(result.to_text(), sys.stderr), file=sys.stderr)
                if result.error is not None:
                    failed.append(result.error)
                elif save_path is not None:
                    result.save_to_json(save_path)
                    if not args.no_img:
                        result.save_to_img(save_path)
                bar.update()
    finally:
        logger.removeHandler(handler)

    if not failed:
        return 0
    if len(sources) == 1:
        return _fail(failed[0], 1)
    return _fail(f"{len(failed)} of {len(sources)} inputs failed (first: {failed[0]})", 1)


def _config(args: argparse.Namespace) -> PipelineConfig:
    """The pipeline config with the command line's overrides applied."""
    config = load_config(args.pipeline, None)
    det, kpt = config.detector, config.keypoints
    if args.det_model_dir is not None:
        det.model_dir = args.det_model_dir
    if args.det_batch_size is not None:
        det.batch_size = args.det_batch_size
    if args.kpt_model_dir is not None:
        kpt.model_dir = args.kpt_model_dir
    if args.kpt_batch_size is not None:
        kpt.batch_size = args.kpt_batch_size
    if args.flip is not None:
        kpt.flip = args.flip
    if args.use_udp is not None:
        kpt.use_udp = args.use_udp
    return config


def _get_pipeline_config(name: str, save_path: Optional[str]) -> int:
    if name != PIPELINE_NAME:
        raise ConfigError(f"unknown pipeline {name!r}: posepipe has only {PIPELINE_NAME!r}")
    text = PipelineConfig.default().to_yaml()
    if save_path is None:
        # PaddleX asks for a folder interactively here; printing keeps scripts working
        # (`posepipe --get_pipeline_config ... > my.yaml`).
        sys.stdout.write(text)
        return 0
    target = Path(save_path)
    if target.suffix not in (".yaml", ".yml"):  # a folder, as PaddleX
        target = target / f"{name}.yaml"
    if target.exists():
        # PaddleX asks before overwriting; a command line cannot, so it refuses.
        raise _UsageError(f"{target} already exists: remove it or give another --save_path")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    print(f"The pipeline config has been saved to: {target}", file=sys.stderr)
    return 0


def _serve(argv: List[str]) -> int:
    try:
        serving_cli = importlib.import_module("posepipe.serving.cli")
    except ModuleNotFoundError as e:
        if e.name in ("posepipe.serving", "posepipe.serving.cli"):
            return _fail("the HTTP server is not part of this installation (posepipe.serving.cli is missing)", 1)
        return _fail(f"`{PROG} serve` needs the serve extra: pip install 'posepipe[serve]' (missing module {e.name!r})", 1)
    return int(serving_cli.main(argv) or 0)


class _TqdmHandler(logging.Handler):
    """posepipe's log lines on stderr, without breaking the progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(f"{PROG}: {record.levelname.lower()}: {record.getMessage()}", file=sys.stderr)


def _fail(message: str, code: int) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


def _threshold(text: str) -> Optional[float]:
    if text in ("None", "none", "NONE"):  # PaddleX accepts None: the model's threshold
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value
