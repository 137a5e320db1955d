"""Batch inference on Ray Data: the pipeline on a pool of actors, each
holding one pipeline.

`run_batch` (what `posepipe --ray` runs) writes exactly the files the local
`posepipe` writes for the same input: the inputs are expanded and named here
as one local run names them (result.SaveNames: `{stem}_res.*`, `-2`, `-3` on
a clash, `{stem}_{page}_res.*` for pages), and the actors run the same
`predict` on the same detector batches, so the numbers match too. An input
whose files are already there is skipped, so a job that died can be run
again and does only what is missing; files are written whole (a temporary
name, then renamed; the JSON last), so a crash never leaves a half file that
would count as done. A failed input goes into the report's error list and
gets no files. A killed actor is replaced and its work re-run by Ray Data;
each result is written once, by this process.

`predict_dataset` takes a `ray.data.Dataset` of images or paths and returns
one of results, for pipelines of your own."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple

import cv2
import numpy as np
import ray

from ..config import PIPELINE_NAME, check_threshold, load_config
from ..errors import InputError
from ..io import Source, iter_sources
from ..result import KeypointResult, SaveNames
from .settings import RayBatchSettings, portable_config, threads_for

log = logging.getLogger("posepipe")


@dataclass(frozen=True)
class PipelineJob:
    """What every actor of a job builds and runs: the pipeline config (a
    portable dict), create_pipeline's other arguments, the threshold, and
    whether to draw the `_res` images."""

    config: Dict[str, Any]
    device: Optional[str] = None
    use_hpip: Optional[bool] = None
    pipeline_options: Dict[str, Any] = field(default_factory=dict)
    det_threshold: Optional[float] = None
    images: bool = False


@dataclass
class BatchReport:
    """What a run did. `errors`: (input, the problem) for each failed input."""

    total: int = 0  # images (pages) the input stands for
    skipped: int = 0  # their files were already there
    written: int = 0  # saved by this run
    errors: List[Tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0


# --- the actors ---------------------------------------------------------------------------------


class PipelineActor:
    """One pipeline per actor. A call takes rows of one of these shapes:
      {"sources": JSON list of io.Source fields}  one detector batch of a run_batch plan each
      {"path": str}                                a file, folder or URL
      {"bytes": encoded file, "path": optional}    as ray.data.read_binary_files(include_paths=True) gives
      {"image": HxWx3 RGB uint8, "path": optional} as ray.data.read_images(include_paths=True) gives
    and gives a row per image (page): its "index" in the run_batch plan (-1
    for other rows), "input_path", "page_index" (-1: none),
    "json" (the `_res.json` text; "" when it failed), "image" (the `_res.<ext>`
    file; empty when not asked for or failed) and "error" ("" when none)."""

    def __init__(self, job: PipelineJob):
        from .. import create_pipeline

        self.pipeline = create_pipeline(
            config=job.config, device=job.device, use_hpip=job.use_hpip, **job.pipeline_options
        )
        self.batch_size = self.pipeline.config.detector.batch_size
        self.det_threshold = job.det_threshold
        self.images = job.images

    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, List[Any]]:
        if "sources" in batch:
            groups = [[_source(fields) for fields in json.loads(text)] for text in batch["sources"]]
            indices = [json.loads(text) for text in batch["indices"]]
        else:
            groups = [list(_row_sources(row)) for row in _rows(batch)]
            indices = [[-1] * len(group) for group in groups]
        rows: Dict[str, List[Any]] = {
            "index": [], "input_path": [], "page_index": [], "json": [], "image": [], "error": []
        }
        for results, numbers in zip(self._predict(groups), indices):
            for result, number in zip(results, numbers):
                page = result.get("page_index")
                rows["index"].append(number)
                rows["input_path"].append(result["input_path"] or "")
                rows["page_index"].append(-1 if page is None else page)
                if result.error is not None:
                    rows["json"].append("")
                    rows["image"].append(b"")
                    rows["error"].append(result.error)
                    continue
                rows["json"].append(result.json_text())
                rows["image"].append(self._image(result))
                rows["error"].append("")
        return rows

    def _predict(self, groups: List[List[Source]]) -> Iterator[List[KeypointResult]]:
        """Results per group. Groups are the detector batches a local run makes;
        when every group but the last is full, one predict call makes the same
        batches and decodes the next while the models run."""
        if all(len(group) == self.batch_size for group in groups[:-1]):
            flat = list(self.pipeline.predict([s for group in groups for s in group], self.det_threshold))
            sizes = np.cumsum([0] + [len(group) for group in groups])
            # A multi-page file's pages are in the plan already; one source, one result.
            for start, end in zip(sizes[:-1], sizes[1:]):
                yield flat[start:end]
            return
        for group in groups:
            yield list(self.pipeline.predict(group, self.det_threshold))

    def _image(self, result: KeypointResult) -> bytes:
        if not self.images:
            return b""
        suffix = Path(result.saved_names(warn=False)[1]).suffix
        return result.encoded_image(suffix) or b""


def _source(fields: Mapping[str, Any]) -> Source:
    return Source(**fields)


def _rows(batch: Mapping[str, np.ndarray]) -> Iterator[Dict[str, Any]]:
    count = len(next(iter(batch.values()))) if batch else 0
    for i in range(count):
        yield {name: column[i] for name, column in batch.items()}


def _row_sources(row: Mapping[str, Any]) -> Iterator[Source]:
    """The sources one predict_dataset row stands for (a folder or a multi-page file: several)."""
    path = row.get("path")
    path = str(path) if path is not None and str(path) else None
    if "image" in row and row["image"] is not None:
        image = np.asarray(row["image"])
        if image.ndim == 3 and image.shape[2] == 3:
            image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)  # Ray's read_images gives RGB; the pipeline takes BGR
        yield Source(path or "array input", path, "array", image)
    elif "bytes" in row and row["bytes"] is not None:
        yield Source(path or "bytes input", path, "bytes", bytes(row["bytes"]))
    elif path is not None:
        yield from iter_sources(path)
    else:
        yield Source("row", None, "invalid", "a row needs a path, bytes or image column")


def _actor_pool(
    dataset: "ray.data.Dataset",
    job: PipelineJob,
    settings: RayBatchSettings,
    rows_per_call: int,
    rows: Optional[int] = None,
) -> "ray.data.Dataset":
    cpus, options = threads_for(settings.actor_cpus, job.pipeline_options)
    actors = settings.actors or max(1, int(ray.cluster_resources().get("CPU", 1) // cpus))
    if rows is not None:  # no actor without a call to take (each loads the models)
        pool = ray.data.ActorPoolStrategy(size=min(actors, -(-rows // rows_per_call)))
    else:
        # A dataset read by Ray tasks needs CPUs for them too: the pool starts
        # with one actor and grows while CPUs are free.
        pool = ray.data.ActorPoolStrategy(min_size=1, max_size=actors)
    return dataset.map_batches(
        PipelineActor,
        fn_constructor_kwargs={"job": dataclasses.replace(job, pipeline_options=options)},
        batch_size=rows_per_call,
        batch_format="numpy",
        compute=pool,
        num_cpus=cpus,
    )


def predict_dataset(
    dataset: "ray.data.Dataset",
    pipeline: Any = PIPELINE_NAME,
    *,
    det_threshold: Optional[float] = None,
    device: Optional[str] = None,
    use_hpip: Optional[bool] = None,
    pipeline_options: Optional[Dict[str, Any]] = None,
    settings: Optional[RayBatchSettings] = None,
    images: bool = False,
) -> "ray.data.Dataset":
    """The results of `dataset` (rows with a `path`, encoded `bytes` or an RGB
    `image`; see PipelineActor) as a Dataset of rows: input_path, page_index,
    json (the `_res.json` text), image (the drawn `_res` file when `images`),
    error. Lazy, as Ray Data is: iterate it or write it out to run it.
    Bytes are decoded as the local CLI decodes files, so `read_binary_files`
    gives the CLI's results; `read_images` decodes with Pillow, which may
    differ (EXIF rotation, colour conversion)."""
    settings = settings or RayBatchSettings()
    job = PipelineJob(
        portable_config(pipeline), device, use_hpip, dict(pipeline_options or {}),
        check_threshold(det_threshold, "det_threshold"), images,
    )
    return _actor_pool(dataset, job, settings, rows_per_call=settings.images_per_call)


# --- run_batch: the plan, the job, the files ------------------------------------------------------


@dataclass
class _Planned:
    source: Source
    json_name: str
    image_name: str
    placeholder: KeypointResult  # carries the run's name for the warning on a renamed result


def _plan(input: Any) -> List[_Planned]:
    """Every image of `input` named as one local run names it."""
    names = SaveNames()
    planned = []
    for source in iter_sources(input):
        placeholder = names.claim(KeypointResult(source.input_path, None, [], page_index=source.page_index))
        json_name, image_name = placeholder.saved_names(warn=False)
        planned.append(_Planned(source, json_name, image_name, placeholder))
    return planned


def _done(item: _Planned, save_path: Path, images: bool) -> bool:
    return (save_path / item.json_name).is_file() and (not images or (save_path / item.image_name).is_file())


def _write(path: Path, data: bytes) -> None:
    """Whole or not at all: a crash leaves a temporary file, never a short one under the real name."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def run_batch(
    pipeline: Any,
    input: Any,
    save_path: "os.PathLike[str] | str",
    *,
    det_threshold: Optional[float] = None,
    device: Optional[str] = None,
    use_hpip: Optional[bool] = None,
    pipeline_options: Optional[Dict[str, Any]] = None,
    settings: Optional[RayBatchSettings] = None,
    images: bool = True,
    progress: bool = True,
    on_error: Optional[Callable[[str], None]] = None,
) -> BatchReport:
    """Run `pipeline` (a name, YAML path or config dict) on `input` (a file,
    folder, URL or a list of these, as `posepipe --input` takes) on Ray
    actors, saving `{stem}_res.json` (and the drawn `{stem}_res.<ext>` when
    `images`) into `save_path` as the local CLI does. Ray must be initialized
    (ray.init), or Ray Data starts a local one. `on_error` gets each failed
    input's line as it comes."""
    started = time.perf_counter()
    settings = settings or RayBatchSettings()
    det_threshold = check_threshold(det_threshold, "det_threshold")
    config = portable_config(pipeline)
    planned = _plan(input)
    check_sources(item.source for item in planned)
    save_folder = Path(save_path)
    save_folder.mkdir(parents=True, exist_ok=True)
    report = BatchReport(total=len(planned))
    batch_size = load_config(None, config).detector.batch_size
    # The local run's detector batches; those with something missing run again whole.
    groups = [list(range(i, min(i + batch_size, len(planned)))) for i in range(0, len(planned), batch_size)]
    pending = {i for i, item in enumerate(planned) if not _done(item, save_folder, images)}
    report.skipped = len(planned) - len(pending)
    todo = [group for group in groups if any(i in pending for i in group)]
    if not todo:
        report.seconds = time.perf_counter() - started
        return report
    rows = [
        {"indices": json.dumps(group), "sources": json.dumps([_fields(planned[i].source) for i in group])}
        for group in todo
    ]
    context = ray.data.DataContext.get_current()
    progress_bars = context.enable_progress_bars
    context.enable_progress_bars = False  # ours counts results, Ray's would count blocks
    try:
        dataset = ray.data.from_items(rows, override_num_blocks=len(rows))
        job = PipelineJob(config, device, use_hpip, dict(pipeline_options or {}), det_threshold, images)
        results = _actor_pool(dataset, job, settings, max(1, settings.images_per_call // batch_size), rows=len(rows))
        written = set()
        from tqdm import tqdm

        with tqdm(total=len(pending), unit="img", file=sys.stderr, disable=not progress) as bar:
            for batch in results.iter_batches(batch_size=None, batch_format="numpy"):
                for row in _rows(batch):
                    i = int(row["index"])
                    if i in written:
                        continue  # a second copy (a retried task)
                    written.add(i)
                    if i not in pending:
                        continue  # its files were there; it ran for its detector batch
                    item = planned[i]
                    if row["error"]:
                        report.errors.append((item.source.name, str(row["error"])))
                        if on_error is not None:
                            on_error(str(row["error"]))
                    else:
                        item.placeholder.saved_names()  # the warning, when SaveNames renamed it
                        if images and len(row["image"]):
                            _write(save_folder / item.image_name, bytes(row["image"]))
                        _write(save_folder / item.json_name, str(row["json"]).encode("utf-8"))
                        report.written += 1
                    bar.update()
    finally:
        context.enable_progress_bars = progress_bars
    report.seconds = time.perf_counter() - started
    return report


def _fields(source: Source) -> Dict[str, Any]:
    fields = dataclasses.asdict(source)
    if source.kind == "file":
        # Actors may run in another working folder (a cluster's workers); the
        # result's input_path keeps the text as given, as the local CLI writes it.
        fields["data"] = os.path.abspath(source.input_path)
    return fields


def check_sources(sources: Iterable[Source]) -> None:
    """InputError for the first source run_batch's actors cannot take."""
    for source in sources:
        if source.kind == "video":
            raise InputError(source.name, "a video runs frame by frame in one process: run it without --ray")
        if source.kind not in ("file", "url", "invalid"):
            raise InputError(source.name, "run_batch takes files, folders and URLs; predict_dataset takes arrays and bytes")

