"""Detected boxes -> top-down keypoint crops.

PaddleX turns each box into a centre and a scale with the keypoint model's
aspect ratio and 1.25 padding, in float32 (its box coordinates are float32), and
the crop warp and the back-projection both start from those float32 values; we
keep the same arithmetic so crops land on the same pixels."""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

from . import _kernels

BOX_PADDING = 1.25


def boxes_to_center_scale(
    boxes: np.ndarray, input_wh: Tuple[int, int], padding: float = BOX_PADDING
) -> Tuple[np.ndarray, np.ndarray]:
    """[P,4] x1y1x2y2 -> centres [P,2] and scales [P,2] (w, h), float32."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    centers = np.stack([x1 + x2, y1 + y2], axis=1) * np.float32(0.5)
    aspect = input_wh[0] / input_wh[1]
    w = x2 - x1
    h = y2 - y1
    wider = w > aspect * h
    taller = w < aspect * h
    # float32 / python float stays float32, as in PaddleX under NumPy's promotion rules.
    h = np.where(wider, w / np.float32(aspect), h).astype(np.float32)
    w = np.where(taller, h * np.float32(aspect), w).astype(np.float32)
    scales = np.stack([w, h], axis=1) * np.float32(padding)
    return centers.astype(np.float32), scales.astype(np.float32)


def make_crops(
    images: Sequence[np.ndarray],
    image_index: np.ndarray,
    centers: np.ndarray,
    scales: np.ndarray,
    input_wh: Tuple[int, int],
    use_udp: bool,
    mean: Sequence[float],
    std: Sequence[float],
    is_scale: bool,
    num_threads: int = 0,
) -> np.ndarray:
    """All persons of several images in one batched warp: [P,3,h,w] float32, RGB."""
    w, h = input_wh
    # float32 as PaddleX holds them: the UDP matrix divides in that precision.
    matrices = _kernels.topdown_matrices(centers=centers, scales=scales, out_w=w, out_h=h, use_udp=use_udp)
    return _kernels.warp_crops(
        images=list(images),
        image_index=np.ascontiguousarray(image_index, dtype=np.int32),
        matrices=matrices,
        out_w=w,
        out_h=h,
        mean=list(mean),
        std=list(std),
        is_scale=bool(is_scale),
        to_rgb=True,
        num_threads=num_threads,
    )
