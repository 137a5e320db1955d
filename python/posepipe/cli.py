"""The `posepipe` command: PaddleX's pipeline flags, plus a few a fast engine's
users need, one-line errors and meaningful exit codes.

    posepipe --pipeline human_keypoint_detection|my.yaml --input PATH|URL|FOLDER [...]
    posepipe --get_pipeline_config human_keypoint_detection [--save_path DIR]
    posepipe serve ...                      (the HTTP server, posepipe.serving.cli)
    posepipe eval / check-dataset ...       (accuracy on a COCO dataset, posepipe.evaluation.cli)

Exit codes: 0 all inputs done; 1 a runtime failure (a model that cannot be
loaded or run, or some inputs failed: the good ones are still saved); 2 bad
arguments (flags, --pipeline name or YAML, --device, --save_path)."""
from __future__ import annotations

import argparse
import contextlib
import importlib
import mimetypes
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from tqdm import tqdm

from . import __version__, create_pipeline
from .cli_support import PROG, Parser, PipelineChoice, UsageError, cli_logging, fail
from .config import PIPELINE_NAME, PipelineConfig, check_threshold, load_config
from .errors import ConfigError, DeviceError, InputError, PosepipeError
from .flags import add_flags, from_args, given, parse_bool
from .io import iter_sources
from .models.spec import read_model_name
from .options import PipelineOptions
from .ray.settings import RayBatchSettings, RayCluster
from .result import colour
from .smoothing import OneEuroSettings
from .stages import run_stages
from .streaming import ResultCount, StreamOptions, stream_arguments
from .writers import ResultSaver


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "serve":
        return _serve(argv[1:])
    if argv and argv[0] in ("eval", "check-dataset"):
        from .evaluation.cli import main as evaluation_main

        return evaluation_main(argv)
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
    except UsageError as e:
        return fail(str(e), 2)
    except PosepipeError as e:
        return fail(str(e), 1)
    except OSError as e:  # e.g. --save_path not writable
        return fail(f"{e.filename + ': ' if e.filename else ''}{e.strerror or e}", 1)
    except KeyboardInterrupt:
        return fail("interrupted", 130)


def _build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROG,
        description="Fast human keypoint detection, a drop-in for PaddleX's human_keypoint_detection pipeline.",
        epilog="`posepipe serve --help` for the HTTP server; `posepipe eval --help` and `posepipe check-dataset --help` "
        "to measure accuracy on a COCO keypoint dataset.",
        allow_abbrev=False,
    )
    pdx = parser.add_argument_group("PaddleX options")
    add_flags(pdx, PipelineChoice)
    pdx.add_argument(
        "--input",
        nargs="+",
        metavar="PATH",
        help="image file, folder (its images, subfolders too), http(s) URL, video file, camera index (0), "
        "rtsp:// or http(s) video stream; several allowed",
    )
    pdx.add_argument(
        "--det_threshold", type=_threshold, help="person detection score threshold, 0..1 (default: the model's)"
    )
    pdx.add_argument("--save_path", help="folder to save {name}_res.json and {name}_res.<ext> into")
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
    video = parser.add_argument_group("video options (video files, camera indices, rtsp:// and http(s) streams)")
    add_flags(video, StreamOptions)
    add_flags(video, OneEuroSettings)
    own.add_argument("-q", "--quiet", action="store_true", help="print no results and no progress bar, only errors")
    own.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    ray_group = parser.add_argument_group("Ray Data (with --ray: a pool of pipeline actors; needs --save_path)")
    add_flags(ray_group, RayCluster)
    add_flags(ray_group, RayBatchSettings)
    return parser


def _predict(args: argparse.Namespace) -> int:
    if not args.input:
        raise UsageError("--input is required: an image file, a folder, an http(s) URL, a video, a camera index or a stream")
    # Every argument is checked before anything loads or is created.
    try:
        threshold = check_threshold(args.det_threshold, "--det_threshold")
        options = given(PipelineOptions, args)
        PipelineOptions(**options)
        video_args = stream_arguments(args)
        choice = from_args(PipelineChoice, args)
        config = _config(args, choice.pipeline)
        cluster = from_args(RayCluster, args)
        ray_settings = from_args(RayBatchSettings, args)
    except ConfigError as e:
        raise UsageError(str(e)) from None
    misplaced = cluster.flag_needing_ray(given(RayBatchSettings, args))
    if misplaced:
        raise UsageError(f"--{misplaced} needs --ray")
    if cluster.ray and args.save_path is None:
        raise UsageError("--ray needs --save_path: the results are saved there, not printed")
    save_path = _save_folder(args.save_path)
    if cluster.ray:
        if video_args:
            raise UsageError(f"--{sorted(video_args)[0]} is for videos, which run without --ray")
        return _predict_on_ray(args, choice, config, options, threshold, cluster, ray_settings)
    with cli_logging(args.quiet):
        try:
            pipeline = create_pipeline(config=config.to_dict(), device=choice.device, use_hpip=choice.use_hpip, **options)
        except DeviceError as e:
            raise UsageError(str(e)) from None
        if save_path is not None:
            save_path.mkdir(parents=True, exist_ok=True)
        # Expanded here to know the count for the progress bar; the pipeline takes the sources as they are.
        sources = list(iter_sources(args.input))
        # Videos: the bar counts frames (an open count for live sources), their
        # results are saved on a thread of their own while the next frames run,
        # and they are not printed (one .jsonl line each instead).
        videos = any(s.kind == "video" for s in sources)
        count = ResultCount(sources, video_args.get("stride", 1))
        saver = ResultSaver(save_path, images=not args.no_img) if save_path is not None else None
        failed = 0
        try:
            with tqdm(
                total=count.total, unit="frame" if videos else "img", file=sys.stderr,
                disable=args.quiet or (not videos and len(sources) < 2),
            ) as bar:
                results = pipeline.predict(sources, det_threshold=threshold, **video_args)
                if videos and saver is not None:
                    results = run_stages(results, [saver.save_and_pass], name="posepipe-save")
                with contextlib.closing(results):  # before the saver closes: its thread may still be writing
                    for result in results:
                        if result.error is not None:
                            failed += 1
                            tqdm.write(f"{PROG}: error: {result.error}", file=sys.stderr)  # the one line for this input
                        else:
                            if not args.quiet and result.metadata.get("video") is None:
                                tqdm.write(colour(result.to_text(), sys.stderr), file=sys.stderr)
                            if saver is not None and not videos:
                                saver.save(result)
                        if count.update(result):
                            bar.total = count.total
                        bar.update()
        finally:
            if saver is not None:
                saver.close()
        if saver is not None and not args.quiet:
            for saved in saver.videos:
                print(saved.describe(), file=sys.stderr)
    if not failed:
        return 0
    if len(sources) == 1:
        return 1  # its line is printed
    return fail(f"{failed} of {len(sources)} inputs failed", 1)


def _predict_on_ray(
    args: argparse.Namespace,
    choice: PipelineChoice,
    config: PipelineConfig,
    options: dict,
    threshold: Optional[float],
    cluster: RayCluster,
    settings: RayBatchSettings,
) -> int:
    """The same files as a local run, from a Ray Data actor pool (posepipe.ray.batch)."""
    from .ray import RayMissing, require_ray

    try:
        require_ray()
    except RayMissing as e:
        return fail(str(e), 1)
    from .ray.batch import check_sources
    from .ray.cli import batch_main

    sources = list(iter_sources(args.input))  # expanded once: checked here, planned by run_batch
    try:
        check_sources(sources)
    except InputError as e:
        raise UsageError(str(e)) from None
    with cli_logging(args.quiet):
        failed, total = batch_main(
            config.to_dict(),
            sources,
            args.save_path,
            cluster,
            settings,
            det_threshold=threshold,
            device=choice.device,
            use_hpip=choice.use_hpip,
            pipeline_options=options,
            images=not args.no_img,
            quiet=args.quiet,
            on_error=lambda line: tqdm.write(f"{PROG}: error: {line}", file=sys.stderr),
        )
    if not failed:
        return 0
    if total == 1:
        return 1
    return fail(f"{failed} of {total} inputs failed", 1)


def _save_folder(text: Optional[str]) -> Optional[Path]:
    """--save_path as a folder. PaddleX's CLI saves each result into it by name,
    so a file name there (out.json) would hold one result at most: refused."""
    if text is None:
        return None
    path = Path(text)
    if path.exists() and not path.is_dir():
        problem = "is a file"
    elif not path.exists() and mimetypes.guess_type(path.name)[0] is not None:
        problem = "looks like a file name"
    else:
        return path
    raise UsageError(
        f"--save_path {text!r} {problem}; give a folder: results are saved in it as {{name}}_res.json and {{name}}_res.<ext>"
    )


def _config(args: argparse.Namespace, pipeline: str) -> PipelineConfig:
    """The pipeline config with the command line's overrides applied. A model
    directory given on the command line brings its own model name (from its
    inference.yml), so the config's name for another model is not kept."""
    config = load_config(pipeline, None)
    det, kpt = config.detector, config.keypoints
    if args.det_model_dir is not None:
        det.model_dir = args.det_model_dir
        det.model_name = read_model_name(args.det_model_dir) or det.model_name
    if args.det_batch_size is not None:
        det.batch_size = args.det_batch_size
    if args.kpt_model_dir is not None:
        kpt.model_dir = args.kpt_model_dir
        kpt.model_name = read_model_name(args.kpt_model_dir) or kpt.model_name
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
        raise UsageError(f"{target} already exists: remove it or give another --save_path")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    print(f"The pipeline config has been saved to: {target}", file=sys.stderr)
    return 0


def _serve(argv: List[str]) -> int:
    try:
        serving_cli = importlib.import_module("posepipe.serving.cli")
    except ModuleNotFoundError as e:
        if e.name in ("posepipe.serving", "posepipe.serving.cli"):
            return fail("the HTTP server is not part of this installation (posepipe.serving.cli is missing)", 1)
        return fail(f"`{PROG} serve` needs the serve extra: pip install 'posepipe[serve]' (missing module {e.name!r})", 1)
    return int(serving_cli.main(argv) or 0)


def _threshold(text: str) -> Optional[float]:
    """The number; its range is config.check_threshold's (one rule for CLI, API and YAML)."""
    if text in ("None", "none", "NONE"):  # PaddleX accepts None: the model's threshold
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value
