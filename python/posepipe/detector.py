"""Person detector: images -> boxes.

Works with PaddleDetection exports that run NMS in the graph (outputs [M,6] rows
plus a per-image count) and with exports without it (raw boxes [N,A,4] and
scores [N,C,A]), where our C++ NMS takes over with PP-YOLOE's export settings."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from . import _kernels
from .batching import chunk_sizes_to_warm, run_split
from .errors import ModelError
from .models.spec import ModelSpec
from .runtime.base import Backend


@dataclass(frozen=True)
class NmsSettings:
    """PP-YOLOE's exported `multiclass_nms3` settings."""

    score_threshold: float = 0.01
    nms_top_k: int = 1000
    keep_top_k: int = 100
    iou_threshold: float = 0.6
    normalized: bool = True


class Detector:
    def __init__(
        self,
        spec: ModelSpec,
        backend: Backend,
        img_size: Optional[Tuple[int, int]] = None,
        threshold: Optional[float] = None,
        nms: NmsSettings = NmsSettings(),
        num_threads: int = 0,
        max_batch: int = 1,
    ):
        if spec.detector is None:
            raise ModelError(f"{spec.model_dir}: not a detector model (its inference.yml has no Resize step)")
        self.spec = spec
        self.backend = backend
        self.preprocess_spec = spec.detector
        # img_size is (w, h), as in PaddleX; the resize target is (h, w).
        self.target_hw = (img_size[1], img_size[0]) if img_size else tuple(spec.detector.target_hw)
        if img_size and spec.input_hw is not None and self.target_hw != spec.input_hw:
            h, w = spec.input_hw
            raise ModelError(
                f"{spec.model_dir}: img_size {img_size[0]}x{img_size[1]} (w x h) from the pipeline config, but the model's "
                f"program ({spec.program_path.name}) takes {h}x{w} (h x w) images; set img_size to [{w}, {h}] or null"
            )
        self.keep_ratio = spec.detector.keep_ratio and img_size is None
        self.interp = spec.detector.interp if img_size is None else 2
        self.threshold = spec.draw_threshold if threshold is None else float(threshold)
        self.nms = nms
        self.num_threads = num_threads
        self.max_batch = max(1, int(max_batch))

    def preprocess(self, images: Sequence[np.ndarray]) -> Dict[str, np.ndarray]:
        p = self.preprocess_spec
        batch, scales = preprocess_images(
            images, self.target_hw, self.keep_ratio, self.interp, p.mean, p.std, p.is_scale, p.to_rgb, self.num_threads
        )
        feeds = {"image": batch, "scale_factor": scales}
        if "im_shape" in self.backend.input_names:
            hw = np.array([[batch.shape[2] / 1.0, batch.shape[3] / 1.0]], dtype=np.float32)
            feeds["im_shape"] = np.repeat(hw, len(images), axis=0)
        return {name: feeds[name] for name in self.backend.input_names}

    def infer(self, feeds: Dict[str, np.ndarray]) -> List[np.ndarray]:
        return run_split(self.backend, feeds, self.max_batch)

    def warmup(self) -> None:
        """Build the backend's kernels for every batch size infer() can use."""
        grey = np.full((self.target_hw[0], self.target_hw[1], 3), 114, np.uint8)
        for size in chunk_sizes_to_warm(self.backend, self.max_batch):
            self.infer(self.preprocess([grey] * size))

    def postprocess(
        self, outputs: List[np.ndarray], image_sizes: Sequence[Tuple[int, int]], threshold: Optional[float] = None
    ) -> List[np.ndarray]:
        """Per image: [M,6] float32 rows (class, score, x1, y1, x2, y2), kept
        above the threshold and clipped to the image, in the model's order."""
        rows, counts = self._rows_and_counts(outputs, len(image_sizes))
        threshold = self.threshold if threshold is None else float(threshold)
        per_image = np.split(rows, np.cumsum(counts)[:-1]) if len(counts) else []
        return [clip_and_filter(r, hw, threshold) for r, hw in zip(per_image, image_sizes)]

    def _rows_and_counts(self, outputs: List[np.ndarray], n_images: int) -> Tuple[np.ndarray, np.ndarray]:
        first = outputs[0]
        if first.ndim == 2 and first.shape[-1] == 6:
            counts = np.asarray(outputs[1]).reshape(-1).astype(np.int64) if len(outputs) > 1 else np.array([len(first)])
            if len(counts) != n_images or counts.sum() != len(first):
                raise ModelError(
                    f"{self.spec.model_dir}: detector returned {len(first)} boxes with counts {counts.tolist()} "
                    f"for {n_images} images"
                )
            return first.astype(np.float32, copy=False), counts
        if first.ndim == 3 and len(outputs) > 1 and outputs[1].ndim == 3:
            boxes, scores = outputs[0], outputs[1]
            s = self.nms
            rows, counts = _kernels.multiclass_nms(
                boxes=np.ascontiguousarray(boxes, dtype=np.float32),
                scores=np.ascontiguousarray(scores, dtype=np.float32),
                score_threshold=s.score_threshold,
                nms_top_k=s.nms_top_k,
                keep_top_k=s.keep_top_k,
                iou_threshold=s.iou_threshold,
                normalized=s.normalized,
                num_threads=self.num_threads,
            )
            return rows, counts.astype(np.int64)
        shapes = [tuple(o.shape) for o in outputs]
        raise ModelError(
            f"{self.spec.model_dir}: unrecognised detector outputs {shapes}; expected [M,6] + counts "
            "(NMS in the graph) or boxes [N,A,4] + scores [N,C,A]"
        )


# cv2.cvtColor codes that turn an input (1, 3 or 4 channels, BGR order) into
# the 3-channel image PaddleX resizes: grey replicated, alpha dropped, and RGB
# when its reader converts (to_rgb). A 3-channel BGR image kept as BGR needs none.
_TO_THREE_CHANNELS = {
    (1, False): cv2.COLOR_GRAY2BGR,
    (1, True): cv2.COLOR_GRAY2RGB,
    (3, True): cv2.COLOR_BGR2RGB,
    (4, False): cv2.COLOR_BGRA2BGR,
    (4, True): cv2.COLOR_BGRA2RGB,
}


def keep_ratio_size(h: int, w: int, target_h: int, target_w: int) -> Tuple[int, int]:
    """PaddleX's Resize(keep_ratio=True) size: one scale that fits the image's
    long side to the target's long side and short side to short side, each side
    rounded half to even (Python's round), and at least 1 pixel."""
    scale = min(max(target_h, target_w) / max(h, w), min(target_h, target_w) / min(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def resize_for_detector(
    image: np.ndarray, target_hw: Tuple[int, int], keep_ratio: bool, interp: int, to_rgb: bool, name: str = "image"
) -> np.ndarray:
    """PaddleX's colour conversion and Resize of one uint8 image, by the same
    cv2 calls in the same order (convert, then resize): HxWx3, RGB when to_rgb."""
    if not (isinstance(image, np.ndarray) and image.dtype == np.uint8):
        raise ValueError(f"{name}: expected a uint8 image, got {getattr(image, 'dtype', type(image))}")
    channels = 1 if image.ndim == 2 else image.shape[2] if image.ndim == 3 else 0
    if channels not in (1, 3, 4) or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"{name}: expected an HxW or HxWxC image (C = 1, 3 or 4, H, W >= 1), got shape {image.shape}")
    code = _TO_THREE_CHANNELS.get((channels, bool(to_rgb)))
    if code is not None:
        image = cv2.cvtColor(image, code)
    h, w = image.shape[:2]
    rh, rw = target_hw
    if keep_ratio:
        rh, rw = keep_ratio_size(h, w, *target_hw)
        if rh > target_hw[0] or rw > target_hw[1]:
            raise ValueError(
                f"{name}: keep_ratio resizes {h}x{w} to {rh}x{rw}, larger than the {target_hw[0]}x{target_hw[1]} canvas"
            )
    # cv2.resize to the same size is a plain copy; skip it.
    return image if (rh, rw) == (h, w) else cv2.resize(image, (rw, rh), interpolation=interp)


def preprocess_images(
    images: Sequence[np.ndarray],
    target_hw: Tuple[int, int],
    keep_ratio: bool,
    interp: int,
    mean: Sequence[float],
    std: Sequence[float],
    is_scale: bool,
    to_rgb: bool,
    num_threads: int = 0,
) -> Tuple[np.ndarray, np.ndarray]:
    """PaddleX's detector preprocessing of uint8 BGR(A)/grey images: cv2
    conversion and resize per image, then one C++ call for Normalize + CHW onto
    zero canvases of target_hw (keep_ratio images sit top-left). Returns
    (float32[N, 3, h, w], float32[N, 2] scale factors (y, x) = resized/original,
    formed in float64 as PaddleX does and cast by its batching). num_threads
    is the normalize kernel's; cv2 runs its calls on its own thread pool."""
    resized = [
        resize_for_detector(im, target_hw, keep_ratio, interp, to_rgb, f"images[{i}]") for i, im in enumerate(images)
    ]
    scales = np.array(
        [[r.shape[0] / im.shape[0], r.shape[1] / im.shape[1]] for r, im in zip(resized, images)], dtype=np.float32
    ).reshape(-1, 2)
    batch = _kernels.normalize_batch(
        images=resized, out_h=target_hw[0], out_w=target_hw[1], mean=list(mean), std=list(std),
        is_scale=bool(is_scale), to_rgb=False, num_threads=num_threads,
    )
    return batch, scales


def clip_and_filter(rows: np.ndarray, image_hw: Tuple[int, int], threshold: float) -> np.ndarray:
    """PaddleX's detector post-processing: score strictly above the threshold,
    a valid class, coordinates clipped to the image, empty boxes dropped."""
    keep = (rows[:, 1] > threshold) & (rows[:, 0] > -1)
    rows = rows[keep].copy()
    h, w = image_hw
    # Only the low sides are clamped at 0 and only the high sides at the image
    # size, exactly as PaddleX does; an inverted box is then dropped.
    np.maximum(rows[:, 2:4], 0, out=rows[:, 2:4])
    np.minimum(rows[:, 4], w, out=rows[:, 4])
    np.minimum(rows[:, 5], h, out=rows[:, 5])
    valid = (rows[:, 4] > rows[:, 2]) & (rows[:, 5] > rows[:, 3])
    return rows[valid]
