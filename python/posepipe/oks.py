"""COCO's object keypoint similarity (OKS) and box IoU: the measures the
tracker matches persons by (tracking.py), the precision gate compares them by
(runtime/accuracy.py) and the video benchmarks score runs by."""
from __future__ import annotations

import numpy as np

# COCO-17's per-joint constants, as pycocotools' COCOeval writes them.
COCO_SIGMAS = np.array(
    [0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89]
) / 10.0
# Other joint sets than COCO-17 have no published constants; a middling one.
OTHER_SIGMA = 0.07


def oks(d2: np.ndarray, counted: np.ndarray, area) -> np.ndarray:
    """pycocotools' OKS (COCOeval.computeOks): the mean over the counted
    joints of exp(-d^2 / (2 area (2 sigma)^2)). `d2` [..., K] squared pixel
    distances, `counted` [..., K] which joints count, `area` (broadcast to
    [...]) the object's area. [...] OKS; 0 where no joint counts."""
    d2 = np.asarray(d2, np.float64)
    counted = np.asarray(counted, bool)
    joints = d2.shape[-1]
    sigmas = COCO_SIGMAS if joints == len(COCO_SIGMAS) else np.full(joints, OTHER_SIGMA)
    e = d2 / ((2 * sigmas) ** 2) / (np.asarray(area, np.float64)[..., None] + np.spacing(1)) / 2
    n = counted.sum(axis=-1)
    return np.where(n > 0, (np.exp(-e) * counted).sum(axis=-1) / np.maximum(n, 1), 0.0)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[N,4] x [M,4] (x1, y1, x2, y2) -> [N,M] intersection over union; 0 where the union is empty."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(axis=1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
