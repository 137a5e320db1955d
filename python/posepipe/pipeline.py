"""The pipeline: wires inputs -> detector -> crops -> keypoint model -> results.

One image flows: `io` decodes it into a Frame, the `Detector` finds persons,
`KeypointModel` warps every person of the batch into crops, runs them in batched
calls and decodes the heatmaps, and `KeypointResult` holds PaddleX's fields."""
from __future__ import annotations

import dataclasses
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

import numpy as np

from .config import PipelineConfig, check_threshold, load_config
from .detector import Detector
from .errors import ConfigError
from .io import Frame, InputFailure, iter_sources, try_read_frame
from .keypoints import KeypointModel
from .models.official import resolve_model_dir
from .models.spec import load_model_spec
from .options import PipelineOptions
from .result import KeypointResult, SaveNames
from .runtime import RuntimeOptions, create_backend, parse_device
from .runtime.memory import tune_glibc_malloc

log = logging.getLogger("posepipe")


class KeypointPipeline:
    def __init__(
        self,
        config: PipelineConfig,
        device: Optional[str] = None,
        use_hpip: bool = False,
        options: PipelineOptions = PipelineOptions(),
    ):
        self.config = config
        self.options = options
        self.device = parse_device(device)
        runtime = RuntimeOptions(
            device=self.device,
            cpu_threads=options.cpu_threads,
            use_onednn=options.use_onednn,
            use_hpip=use_hpip,
        )
        malloc_tuned = tune_glibc_malloc() if options.tune_malloc else False
        det_cfg, kpt_cfg = config.detector, config.keypoints
        det_spec = load_model_spec(resolve_model_dir(det_cfg.model_name, det_cfg.model_dir), kind="detector")
        kpt_spec = load_model_spec(resolve_model_dir(kpt_cfg.model_name, kpt_cfg.model_dir), kind="keypoint")
        for cfg, spec in ((det_cfg, det_spec), (kpt_cfg, kpt_spec)):
            # PaddleX refuses such a directory; we run it, since what a model
            # computes comes from its own inference.yml, but say so.
            if cfg.model_name != spec.model_name:
                log.warning(
                    "%s: inference.yml names model %r but the config says %r; using the directory's",
                    spec.model_dir, spec.model_name, cfg.model_name,
                )
        threads = options.cpu_threads or 0
        self.detector = Detector(
            det_spec,
            create_backend(det_spec, runtime, backend=options.backend),
            img_size=det_cfg.img_size,
            threshold=det_cfg.threshold,
            num_threads=threads,
            max_batch=det_cfg.batch_size,
        )
        self.keypoints = KeypointModel(
            kpt_spec,
            create_backend(kpt_spec, runtime, backend=options.backend),
            flip=kpt_cfg.flip,
            use_udp=kpt_cfg.use_udp,
            max_batch=options.kpt_batch_size,
            device_kind=self.device.kind,
            num_threads=threads,
        )
        self.metadata: Dict[str, Any] = {
            "device": str(device or self.device),
            "detector": self.detector.backend.describe(),
            "keypoints": self.keypoints.backend.describe(),
            "kpt_batch_size": self.keypoints.max_batch,
            "malloc_tuned": malloc_tuned,
        }
        log.info("posepipe backends: %s", self.metadata)

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
        use_hpip: bool = False,
        **options: Any,
    ) -> "KeypointPipeline":
        known = {f.name for f in dataclasses.fields(PipelineOptions)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(f"unknown option(s) {', '.join(unknown)}; posepipe's options are: {', '.join(sorted(known))}")
        return cls(load_config(pipeline, config), device=device, use_hpip=use_hpip, options=PipelineOptions(**options))

    def predict(self, input: Any, det_threshold: Optional[float] = None) -> Iterator[KeypointResult]:
        """One result per image (per page of a multi-page TIFF), in input
        order. A single bad input raises InputError; in a list or folder, a bad
        input yields a result carrying `error` and the others still run. The
        results of one call never share a file name when saved (SaveNames)."""
        det_threshold = check_threshold(det_threshold, "det_threshold")
        names = SaveNames()
        for result in self._predict(input, det_threshold):
            yield names.claim(result)

    def _predict(self, input: Any, det_threshold: Optional[float]) -> Iterator[KeypointResult]:
        sources = list(iter_sources(input))
        single = len(sources) == 1 and not isinstance(input, (list, tuple)) and not sources[0].is_from_folder
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
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="posepipe-decode") as pool:
            pending = pool.submit(read, batches[0])
            for i in range(len(batches)):
                items = pending.result()
                if i + 1 < len(batches):
                    pending = pool.submit(read, batches[i + 1])
                yield from self._run_batch(items, det_threshold, raise_errors=single)

    __call__ = predict

    def predict_frames(
        self, frames: Sequence[Frame], det_threshold: Optional[float] = None
    ) -> List[KeypointResult]:
        """Already-decoded frames in, results out (the HTTP server's batching path)."""
        return list(self._run_batch(list(frames), det_threshold, raise_errors=False))

    def _run_batch(
        self, items: List[Union[Frame, InputFailure]], det_threshold: Optional[float], raise_errors: bool
    ) -> Iterator[KeypointResult]:
        frames = [it for it in items if isinstance(it, Frame)]
        timings: Dict[str, float] = {}
        per_frame_boxes: List[np.ndarray] = []
        keypoints = np.zeros((0, 17, 3), np.float32)
        if frames:
            images = [f.image for f in frames]
            t0 = time.perf_counter()
            feeds = self.detector.preprocess(images)
            t1 = time.perf_counter()
            outputs = self.detector.infer(feeds)
            t2 = time.perf_counter()
            per_frame_boxes = self.detector.postprocess(outputs, [im.shape[:2] for im in images], det_threshold)
            counts = [len(b) for b in per_frame_boxes]
            boxes = np.concatenate(per_frame_boxes, axis=0) if per_frame_boxes else np.zeros((0, 6), np.float32)
            image_index = np.repeat(np.arange(len(frames), dtype=np.int32), counts)
            t3 = time.perf_counter()
            if len(boxes):
                crops, centers, scales = self.keypoints.crops(images, image_index, boxes[:, 2:6])
                t4 = time.perf_counter()
                heatmaps = self.keypoints.heatmaps(crops)
                t5 = time.perf_counter()
                keypoints = self.keypoints.decode(heatmaps, centers, scales)
                t6 = time.perf_counter()
            else:
                t4 = t5 = t6 = t3
            timings = {
                "det_preprocess": t1 - t0,
                "det_infer": t2 - t1,
                "det_postprocess": t3 - t2,
                "crops": t4 - t3,
                "kpt_infer": t5 - t4,
                "kpt_decode": t6 - t5,
            }
        kpt_iter = iter(np.split(keypoints, np.cumsum([len(b) for b in per_frame_boxes])[:-1]) if frames else [])
        box_iter = iter(per_frame_boxes)
        for item in items:
            if isinstance(item, InputFailure):
                if raise_errors:
                    raise item.error
                # Marked, so that a front end that reports failures itself (the CLI) can drop it.
                log.warning("skipping input: %s", item.error, extra={"input_failure": True})
                yield KeypointResult.failed(item.input_path, str(item.error), item.page_index)
                continue
            rows, kpts = next(box_iter), next(kpt_iter)
            result = KeypointResult.from_arrays(item.input_path, item.image, rows, kpts, item.page_index)
            result.metadata.update(self.metadata, timings_s=timings, batch_images=len(frames))
            yield result
