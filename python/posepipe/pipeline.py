"""The pipeline: wires inputs -> detector -> crops -> keypoint model -> results.

One image flows: `io` decodes it into a Frame, the `Detector` finds persons,
`KeypointModel` warps every person of the batch into crops, runs them in batched
calls and decodes the heatmaps, and `KeypointResult` holds PaddleX's fields."""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .config import PipelineConfig, check_threshold, load_config
from .detector import Detector
from .errors import ConfigError
from .io import Frame, InputFailure, iter_sources, try_read_frame
from .keypoints import KeypointModel
from .models.official import resolve_model_dir
from .models.spec import load_model_spec
from .options import PipelineOptions
from .precision import PrecisionChooser
from .result import KeypointResult, SaveNames
from .runtime import RuntimeOptions, parse_device
from .runtime.base import Backend
from .runtime.candidates import CANDIDATES
from .runtime.cpu import cpu_info
from .runtime.hpi_config import merge_hpi_configs, parse_hpi_config
from .runtime.memory import tune_glibc_malloc
from .runtime.plan import ModelPlan, plan_backend
from .runtime.tuning import tuned_keypoint_batch
from .stages import read_ahead
from .streaming import StreamOptions, predict_sources

log = logging.getLogger("posepipe")


class KeypointPipeline:
    def __init__(
        self,
        config: PipelineConfig,
        device: Optional[str] = None,
        use_hpip: Optional[bool] = None,
        options: PipelineOptions = PipelineOptions(),
        hpi_config: Optional[Dict[str, Any]] = None,
    ):
        self.config = config
        self.options = options
        self.device = parse_device(device)
        runtime = RuntimeOptions(device=self.device, cpu_threads=options.cpu_threads, use_onednn=options.use_onednn)
        malloc_tuned = tune_glibc_malloc() if options.tune_malloc else False
        det_cfg, kpt_cfg = config.detector, config.keypoints
        det_spec = load_model_spec(
            resolve_model_dir(det_cfg.model_name, det_cfg.model_dir), kind="detector", model_name=det_cfg.model_name
        )
        kpt_spec = load_model_spec(
            resolve_model_dir(kpt_cfg.model_name, kpt_cfg.model_dir), kind="keypoint", model_name=kpt_cfg.model_name
        )
        for cfg, spec in ((det_cfg, det_spec), (kpt_cfg, kpt_spec)):
            # PaddleX refuses such a directory; we run it, since what a model
            # computes comes from its own inference.yml, but say so.
            if cfg.model_name != spec.model_name:
                log.warning(
                    "%s: inference.yml names model %r but the config says %r; using the directory's",
                    spec.model_dir, spec.model_name, cfg.model_name,
                )
        self._threads = options.cpu_threads or 0
        tune = options.cpu_threads is None  # threads measured per model unless the user set them
        # precision="fp32": use_hpip keeps to its fp32 candidates (on GPUs it also has fp16 ones).
        hpip_pool = None
        if options.precision == "fp32":
            hpip_pool = tuple(c for c in CANDIDATES.get(self.device.kind, ()) if c.precision == "fp32")
        # As PaddleX's create_pipeline: an argument given replaces the config's
        # top-level value; a SubModule's own use_hpip wins over both, its own
        # hpi_config is merged key by key over the pipeline's.
        pipeline_hpip = config.use_hpip if use_hpip is None else use_hpip
        pipeline_hpi = config.hpi_config if hpi_config is None else hpi_config
        plans = []
        for role, spec, cfg in (("detector", det_spec, det_cfg), ("keypoints", kpt_spec, kpt_cfg)):
            role_hpip = bool(pipeline_hpip if cfg.use_hpip is None else cfg.use_hpip)
            hpi = parse_hpi_config(merge_hpi_configs(pipeline_hpi, cfg.hpi_config), f"{role} hpi_config")
            if hpi is not None and not role_hpip:
                log.warning("posepipe: hpi_config applies with use_hpip=True (as in PaddleX); ignored for the %s", role)
                hpi = None
            plans.append(
                plan_backend(spec, runtime, options.backend, use_hpip=role_hpip, hpi=hpi, candidates=hpip_pool, tune_threads=tune)
            )
        self._specs = (det_spec, kpt_spec)
        self._kpt_batch_info: Dict[str, Dict[str, Any]] = {}
        chooser = PrecisionChooser(
            self._specs, runtime, self._stages, self._keypoint_batch, det_cfg.threshold, tune_threads=tune
        )
        choice = chooser.choose(options.precision, options.calibration, (plans[0], plans[1]))
        kpt_batch = self._keypoint_batch(choice.keypoints)
        self.detector, self.keypoints = self._stages(choice.detector.backend, choice.keypoints.backend, kpt_batch)
        self.metadata: Dict[str, Any] = {
            "device": str(device or self.device),
            "detector": self.detector.backend.describe(),
            "keypoints": self.keypoints.backend.describe(),
            "kpt_batch_size": self.keypoints.max_batch,
            "precision": {**choice.precisions, **choice.info},
            "tuning": {
                "cpu": cpu_info().summary(),
                "detector_threads": choice.detector.threads,
                "keypoint_threads": choice.keypoints.threads,
                "kpt_batch_size": self._kpt_batch_info.get(choice.keypoints.label),
            },
            "malloc_tuned": malloc_tuned,
        }
        log.info("posepipe backends: %s", self.metadata)

    def _stages(self, det_backend: Backend, kpt_backend: Backend, kpt_batch: int) -> Tuple[Detector, KeypointModel]:
        """The detector and keypoint stages around two backends, as this pipeline's config says."""
        det_cfg, kpt_cfg = self.config.detector, self.config.keypoints
        detector = Detector(
            self._specs[0],
            det_backend,
            img_size=det_cfg.img_size,
            threshold=det_cfg.threshold,
            num_threads=self._threads,
            max_batch=det_cfg.batch_size,
        )
        keypoints = KeypointModel(
            self._specs[1],
            kpt_backend,
            flip=kpt_cfg.flip,
            use_udp=kpt_cfg.use_udp,
            max_batch=kpt_batch,
            num_threads=self._threads,
        )
        return detector, keypoints

    def _keypoint_batch(self, plan: ModelPlan) -> int:
        """Crops per keypoint call: KeypointDetection.batch_size when above 1
        (a cap set by the user), else measured for this backend (runtime/tuning.py)."""
        cap = self.config.keypoints.batch_size
        if cap > 1:
            self._kpt_batch_info[plan.label] = {"batch": cap, "decision": "KeypointDetection.batch_size"}
        elif plan.label not in self._kpt_batch_info:
            self._kpt_batch_info[plan.label] = tuned_keypoint_batch(plan.spec, plan.backend, plan.label, plan.options)[1]
        return int(self._kpt_batch_info[plan.label]["batch"])

    def warmup(self) -> None:
        """Run every batch shape once so that the first real requests do not pay
        for kernel creation (oneDNN builds its primitives per shape). Batches
        reach the models in power-of-two chunks, so these are all the shapes."""
        self.detector.warmup()
        self.keypoints.warmup()

    @classmethod
    def from_config(
        cls,
        pipeline: Optional[str],
        config: Optional[Dict[str, Any]],
        device: Optional[str] = None,
        use_hpip: Optional[bool] = None,
        hpi_config: Optional[Dict[str, Any]] = None,
        **options: Any,
    ) -> "KeypointPipeline":
        known = {f.name for f in dataclasses.fields(PipelineOptions)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(f"unknown option(s) {', '.join(unknown)}; posepipe's options are: {', '.join(sorted(known))}")
        return cls(
            load_config(pipeline, config), device=device, use_hpip=use_hpip, options=PipelineOptions(**options),
            hpi_config=hpi_config,
        )

    def predict(
        self,
        input: Any,
        det_threshold: Optional[float] = None,
        det_frequency: int = 1,
        track: Optional[bool] = None,
        smooth: Any = False,
        stride: int = 1,
    ) -> Iterator[KeypointResult]:
        """One result per image (per page of a multi-page TIFF), in input
        order. A single bad input raises InputError; in a list or folder, a bad
        input yields a result carrying `error` and the others still run. The
        results of one call never share a file name when saved (SaveNames).
        A video (file, camera index, stream) gives one result per frame; the
        other arguments apply to videos only (streaming.StreamOptions, README
        "Video and streams")."""
        det_threshold = check_threshold(det_threshold, "det_threshold")
        stream_options = StreamOptions.from_arguments(det_frequency, track, smooth, stride)
        names = SaveNames()
        for result in self._predict(input, det_threshold, stream_options):
            yield names.claim(result)

    def _predict(
        self, input: Any, det_threshold: Optional[float], stream_options: StreamOptions = StreamOptions()
    ) -> Iterator[KeypointResult]:
        sources = list(iter_sources(input))
        single = len(sources) == 1 and not isinstance(input, (list, tuple)) and not sources[0].is_from_folder
        if any(s.kind == "video" for s in sources):
            yield from predict_sources(self, sources, det_threshold, stream_options, single)
            return
        batch_size = self.config.detector.batch_size
        batches = [sources[i : i + batch_size] for i in range(0, len(sources), batch_size)]
        if not batches:
            return
        limits = self.options.input_limits
        read = lambda batch: [try_read_frame(s, limits) for s in batch]  # noqa: E731
        if not self.options.prefetch or len(batches) == 1:
            for batch in batches:
                yield from self._run_batch(read(batch), det_threshold, raise_errors=single)
            return
        for items in read_ahead(batches, read, "posepipe-decode"):
            yield from self._run_batch(items, det_threshold, raise_errors=single)

    __call__ = predict

    # For a scheduler that interleaves the stages of many requests (the HTTP
    # server): predict_boxes, then estimate_keypoints on any subsets of a
    # frame's boxes, then build_result with all of them.

    def estimate_keypoints(self, frames: Sequence[Frame], boxes: Sequence[np.ndarray]) -> List[np.ndarray]:
        """The keypoint stage's arrays: per frame [M,17,3] for its [M,5] boxes
        (as predict_boxes gives them). A person's keypoints depend on its own
        crop only, so a frame's boxes may be split across calls."""
        per_frame_rows = [_rows_from_boxes(b, i) for i, b in enumerate(boxes)]
        return self._estimate([f.image for f in frames], per_frame_rows)[0]

    def build_result(self, frame: Frame, boxes: np.ndarray, keypoints: np.ndarray) -> KeypointResult:
        """predict's result for one frame, from its [M,5] boxes and their keypoints."""
        return self._result(frame, _rows_from_boxes(boxes, 0), keypoints, {}, 1)

    def predict_on_boxes(self, frames: Sequence[Frame], boxes: Sequence[np.ndarray]) -> List[KeypointResult]:
        """The keypoint stage alone, on given person boxes instead of the
        detector's: per frame an [M,4] (x1, y1, x2, y2) or [M,5] (with a score,
        else 1.0) array in image pixels. Results as predict's, in box order."""
        if len(frames) != len(boxes):
            raise ValueError(f"predict_on_boxes: {len(frames)} frames but {len(boxes)} box arrays")
        per_frame_rows = [_rows_from_boxes(b, i) for i, b in enumerate(boxes)]
        images = [f.image for f in frames]
        keypoints, timings = self._estimate(images, per_frame_rows)
        return [self._result(f, rows, kpts, timings, len(frames)) for f, rows, kpts in zip(frames, per_frame_rows, keypoints)]

    def predict_boxes(self, frames: Sequence[Frame], det_threshold: Optional[float] = None) -> List[np.ndarray]:
        """The detector stage alone: per frame a float32 [M,5] array (x1, y1,
        x2, y2, score) of the persons scoring above det_threshold (None: the
        pipeline's, `det_threshold` below), clipped to the image, in the
        detector's order. predict() == predict_on_boxes(frames, predict_boxes(frames))."""
        det_threshold = check_threshold(det_threshold, "det_threshold")
        if not frames:
            return []
        per_frame_rows, _ = self._detect([f.image for f in frames], det_threshold)
        return [rows[:, [2, 3, 4, 5, 1]] for rows in per_frame_rows]

    @property
    def det_threshold(self) -> float:
        """The detector score threshold predict() uses when it is given none:
        the config's `threshold`, else the model's `draw_threshold`."""
        return self.detector.threshold

    def _run_batch(
        self, items: List[Union[Frame, InputFailure]], det_threshold: Optional[float], raise_errors: bool
    ) -> Iterator[KeypointResult]:
        frames = [it for it in items if isinstance(it, Frame)]
        timings: Dict[str, float] = {}
        per_frame_rows: List[np.ndarray] = []
        per_frame_kpts: List[np.ndarray] = []
        if frames:
            images = [f.image for f in frames]
            per_frame_rows, timings = self._detect(images, det_threshold)
            per_frame_kpts, kpt_timings = self._estimate(images, per_frame_rows)
            timings.update(kpt_timings)
        found = iter(zip(per_frame_rows, per_frame_kpts))
        for item in items:
            if isinstance(item, InputFailure):
                if raise_errors:
                    raise item.error
                # Marked, so that a front end that reports failures itself (the CLI) can drop it.
                log.warning("skipping input: %s", item.error, extra={"input_failure": True})
                yield KeypointResult.failed(item.input_path, str(item.error), item.page_index)
                continue
            rows, kpts = next(found)
            yield self._result(item, rows, kpts, timings, len(frames))

    def _detect(self, images: List[np.ndarray], det_threshold: Optional[float]) -> Tuple[List[np.ndarray], Dict[str, float]]:
        return detect_persons(self.detector, images, det_threshold)

    def _estimate(
        self, images: List[np.ndarray], per_frame_rows: List[np.ndarray]
    ) -> Tuple[List[np.ndarray], Dict[str, float]]:
        keypoints, timings, _ = estimate_keypoints(self.keypoints, images, per_frame_rows)
        return keypoints, timings

    def _result(
        self, frame: Frame, rows: np.ndarray, kpts: np.ndarray, timings: Dict[str, float], batch_images: int
    ) -> KeypointResult:
        result = KeypointResult.from_arrays(frame.input_path, frame.image, rows, kpts, frame.page_index)
        result.metadata.update(self.metadata, timings_s=timings, batch_images=batch_images)
        return result


def detect_persons(
    detector: Detector, images: List[np.ndarray], det_threshold: Optional[float]
) -> Tuple[List[np.ndarray], Dict[str, float]]:
    """Per image: the detector's [M,6] rows (class, score, x1, y1, x2, y2); and the stage times."""
    t0 = time.perf_counter()
    feeds = detector.preprocess(images)
    t1 = time.perf_counter()
    outputs = detector.infer(feeds)
    t2 = time.perf_counter()
    per_frame_rows = detector.postprocess(outputs, [im.shape[:2] for im in images], det_threshold)
    t3 = time.perf_counter()
    return per_frame_rows, {"det_preprocess": t1 - t0, "det_infer": t2 - t1, "det_postprocess": t3 - t2}


def estimate_keypoints(
    keypoints: KeypointModel, images: List[np.ndarray], per_frame_rows: List[np.ndarray]
) -> Tuple[List[np.ndarray], Dict[str, float], np.ndarray]:
    """Per image: [M,17,3] keypoints for its rows, all persons of all images in
    one batched pass; the stage times; and the crops [P,3,h,w] the model saw."""
    counts = [len(r) for r in per_frame_rows]
    keypoints_out = np.zeros((0, 17, 3), np.float32)
    crops = np.zeros((0, 3, keypoints.input_wh[1], keypoints.input_wh[0]), np.float32)
    t3 = t4 = t5 = t6 = time.perf_counter()
    if sum(counts):
        boxes = np.concatenate(per_frame_rows, axis=0)
        image_index = np.repeat(np.arange(len(images), dtype=np.int32), counts)
        crops, centers, scales = keypoints.crops(images, image_index, boxes[:, 2:6])
        t4 = time.perf_counter()
        heatmaps = keypoints.heatmaps(crops)
        t5 = time.perf_counter()
        keypoints_out = keypoints.decode(heatmaps, centers, scales)
        t6 = time.perf_counter()
    per_frame = np.split(keypoints_out, np.cumsum(counts)[:-1]) if counts else []
    return per_frame, {"crops": t4 - t3, "kpt_infer": t5 - t4, "kpt_decode": t6 - t5}, crops


def _rows_from_boxes(boxes: np.ndarray, index: int) -> np.ndarray:
    """[M,4] or [M,5] boxes -> the detector's [M,6] row layout (class 0)."""
    boxes = np.asarray(boxes, dtype=np.float32)
    if boxes.size == 0:
        return np.zeros((0, 6), np.float32)
    if boxes.ndim != 2 or boxes.shape[1] not in (4, 5) or not np.isfinite(boxes).all():
        raise ValueError(f"boxes[{index}]: expected a finite [M,4] or [M,5] array, got shape {boxes.shape}")
    scores = boxes[:, 4] if boxes.shape[1] == 5 else np.ones(len(boxes), np.float32)
    return np.concatenate([np.zeros((len(boxes), 1), np.float32), scores[:, None], boxes[:, :4]], axis=1)
