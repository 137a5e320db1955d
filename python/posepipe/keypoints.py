"""Top-down keypoint model: person boxes -> COCO-17 keypoints in image pixels.

Unlike PaddleX, which runs the model once per person, every person of a batch of
images goes through one warp call and as few model calls as the batch limit
allows."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from . import _kernels
from .batching import chunk_sizes_to_warm, run_split
from .crops import boxes_to_center_scale, make_crops
from .errors import ModelError
from .models.spec import ModelSpec
from .runtime.base import Backend

# Left/right joint pairs of COCO-17, swapped when a flipped crop's heatmaps are mirrored back.
COCO_FLIP_PAIRS = np.array(
    [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10], [11, 12], [13, 14], [15, 16]], dtype=np.int32
)


class KeypointModel:
    def __init__(
        self,
        spec: ModelSpec,
        backend: Backend,
        flip: bool = False,
        use_udp: Optional[bool] = None,
        max_batch: int = 1,
        num_threads: int = 0,
    ):
        """max_batch: most crops per model call (the pipeline measures it:
        runtime/tuning.py); the backend's own max_batch caps it further."""
        if spec.keypoint is None:
            raise ModelError(f"{spec.model_dir}: not a top-down keypoint model (no TopDownEvalAffine in inference.yml)")
        self.spec = spec
        self.backend = backend
        self.preprocess_spec = spec.keypoint
        self.input_wh: Tuple[int, int] = tuple(spec.keypoint.input_wh)
        self.flip = bool(flip)
        self.use_udp = spec.keypoint.use_udp if use_udp is None else bool(use_udp)
        # PaddleX shifts flipped heatmaps by one pixel for PP-TinyPose models only, chosen by name.
        self.shift_flipped = "PP-TinyPose" in spec.model_name
        self.max_batch = max(1, int(max_batch))
        self.num_threads = num_threads
        self.input_name = backend.input_names[0]

    def crops(
        self, images: Sequence[np.ndarray], image_index: np.ndarray, boxes: np.ndarray
    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        centers, scales = boxes_to_center_scale(boxes, self.input_wh)
        p = self.preprocess_spec
        crops = make_crops(
            images, image_index, centers, scales, self.input_wh, self.use_udp,
            p.mean, p.std, p.is_scale, self.num_threads,
        )
        return crops, centers, scales

    def heatmaps(self, crops: np.ndarray) -> np.ndarray:
        heatmaps = self._run_batched(crops)
        if self.flip:
            flipped = self._run_batched(np.ascontiguousarray(crops[..., ::-1]))
            heatmaps = _kernels.average_flip(
                heatmaps=heatmaps, heatmaps_flipped=flipped, flip_pairs=COCO_FLIP_PAIRS, shift=self.shift_flipped,
                num_threads=self.num_threads,
            )
        return heatmaps

    def decode(self, heatmaps: np.ndarray, centers: np.ndarray, scales: np.ndarray) -> np.ndarray:
        return _kernels.decode_heatmaps(
            heatmaps=heatmaps, centers=centers, scales=scales, use_dark=True, blur_kernel=3, num_threads=self.num_threads
        )

    def _run_batched(self, crops: np.ndarray) -> np.ndarray:
        outputs = run_split(self.backend, {self.input_name: crops}, self.max_batch)
        return np.asarray(outputs[0], dtype=np.float32)

    def warmup(self) -> None:
        """Build the backend's kernels for every batch size heatmaps() can use."""
        w, h = self.input_wh
        for size in chunk_sizes_to_warm(self.backend, self.max_batch):
            self.backend.run({self.input_name: np.zeros((size, 3, h, w), np.float32)})
