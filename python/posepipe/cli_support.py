"""What posepipe's commands share: the pipeline flags (`--pipeline`,
`--device`, `--use_hpip`), one-line usage errors, `posepipe: error: ...`
messages and the logging setup that keeps stderr to posepipe's own lines."""
from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from dataclasses import dataclass
from typing import Iterator, NoReturn, Optional

from tqdm import tqdm

from .config import PIPELINE_NAME
from .flags import setting

PROG = "posepipe"


@dataclass(frozen=True)
class PipelineChoice:
    """Which pipeline a command runs, where, and whether through the
    high-performance backends: create_pipeline's own arguments, as PaddleX's
    CLI spells them."""

    pipeline: str = setting(
        PIPELINE_NAME, help="pipeline name or a PaddleX pipeline YAML file (its model_dir: your models)"
    )
    device: Optional[str] = setting(None, help="cpu, gpu, gpu:N, ...; none: gpu:0 if available, else cpu")
    # None, not False: an absent flag leaves the choice to the pipeline YAML's use_hpip.
    use_hpip: Optional[bool] = setting(
        None, help="use the high-performance inference backends (bare: true); none: the pipeline YAML's use_hpip, else false"
    )


class UsageError(Exception):
    """Bad command-line arguments (exit code 2)."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line instead of argparse's usage block.
        raise UsageError(message)


def fail(message: str, code: int, prog: str = PROG) -> int:
    """Print `prog: error: message` on stderr; return the exit code."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    return code


class TqdmHandler(logging.Handler):
    """posepipe's log lines on stderr, without breaking the progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        # A captured warning's text is "file:line: Category: message" and the source line below it.
        message = record.getMessage().strip().splitlines()[0]
        tqdm.write(f"{PROG}: {record.levelname.lower()}: {message}", file=sys.stderr)


@contextlib.contextmanager
def cli_logging(quiet: bool) -> Iterator[None]:
    """posepipe's log lines and the libraries' Python warnings as one
    `posepipe: warning: ...` line each on stderr; errors only with -q. Not
    passed on to the root logger, where Paddle installs its own INFO handler.
    Failed inputs are left out: the CLI prints each once itself."""
    handler = TqdmHandler()
    handler.setLevel(logging.ERROR if quiet else logging.WARNING)
    handler.addFilter(lambda record: not getattr(record, "input_failure", False))
    loggers = [logging.getLogger("posepipe"), logging.getLogger("py.warnings")]
    propagate = [logger.propagate for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.propagate = False
    logging.captureWarnings(True)
    try:
        yield
    finally:
        logging.captureWarnings(False)
        for logger, before in zip(loggers, propagate):
            logger.removeHandler(handler)
            logger.propagate = before
