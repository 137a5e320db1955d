"""Skeleton drawing that looks like PaddleX's and costs far less.

PaddleX draws every limb by copying the whole image, filling the limb's ellipse
into the copy and alpha-blending the two whole images (0.4 old + 0.6 new): two
full-image passes per limb per person. Outside the ellipse the blend returns
the old pixel unchanged, so blending only the limb's bounding box gives the same
pixels. Limbs are still blended one at a time, in PaddleX's order, so where
limbs overlap the result is identical too."""
from __future__ import annotations

import math

import cv2
import numpy as np

# COCO-17 limbs (joint pairs), in PaddleX's drawing order.
COCO_EDGES = (
    (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7), (6, 8), (7, 9), (8, 10),
    (5, 11), (6, 12), (11, 13), (12, 14), (13, 15), (14, 16), (11, 12),
)
# MPII-16 limbs, which PaddleX draws for models with 16 joints.
MPII_EDGES = (
    (0, 1), (1, 2), (3, 4), (4, 5), (2, 6), (3, 6), (6, 7), (7, 8), (8, 9),
    (10, 11), (11, 12), (13, 14), (14, 15), (8, 12), (8, 13),
)
# Joint i and limb i share colour i. PaddleX lists them as RGB but draws them
# on the BGR image unchanged; kept as is so the pictures match.
PALETTE = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)
JOINT_RADIUS = 2
LIMB_HALF_WIDTH = 1
LIMB_OPACITY = 0.6


def draw_keypoints(image_bgr: np.ndarray, keypoints: np.ndarray, score_threshold: float = 0.1) -> np.ndarray:
    """A copy of `image_bgr` with every person's skeleton drawn on it.

    keypoints: [P, K, 3] (x, y, score) in image pixels; joints scoring below
    `score_threshold` (and limbs touching them) are left out."""
    canvas = image_bgr.copy()
    # float32 as the pipeline's keypoints; the limb geometry below is computed in
    # float32 like PaddleX's, so integer roundings (and pixels) agree.
    kpts = np.asarray(keypoints, dtype=np.float32).reshape(-1, *np.shape(keypoints)[-2:])
    if kpts.shape[0] == 0:
        return canvas
    # Non-finite points cannot be drawn; treat them as below threshold.
    visible = np.isfinite(kpts).all(axis=2) & (kpts[:, :, 2] >= score_threshold)
    num_joints = kpts.shape[1]
    edges = COCO_EDGES if num_joints == 17 else MPII_EDGES

    for joint in range(num_joints):
        for person in np.flatnonzero(visible[:, joint]):
            x, y = kpts[person, joint, :2].astype(np.int32)
            cv2.circle(canvas, (int(x), int(y)), JOINT_RADIUS, PALETTE[joint], thickness=-1)

    height, width = canvas.shape[:2]
    for edge_index, (a, b) in enumerate(edges):
        for person in np.flatnonzero(visible[:, a] & visible[:, b]):
            polygon = _limb_polygon(kpts[person, a], kpts[person, b])
            x, y, w, h = cv2.boundingRect(polygon)
            x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
            if x0 >= x1 or y0 >= y1:
                continue  # entirely outside the image
            roi = canvas[y0:y1, x0:x1]
            filled = roi.copy()
            cv2.fillConvexPoly(filled, polygon - np.array([x0, y0], np.int32), PALETTE[edge_index])
            cv2.addWeighted(roi, 1.0 - LIMB_OPACITY, filled, LIMB_OPACITY, 0, dst=roi)
    return canvas


def _limb_polygon(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """The limb's thin ellipse as a polygon, with PaddleX's float32 arithmetic
    and integer truncations. p, q: float32 (x, y, score)."""
    cx, cy = (p[0] + q[0]) / 2, (p[1] + q[1]) / 2
    dx, dy = p[0] - q[0], p[1] - q[1]
    length = (dx**2 + dy**2) ** 0.5
    angle = math.degrees(math.atan2(dy, dx))
    return cv2.ellipse2Poly((int(cx), int(cy)), (int(length / 2), LIMB_HALF_WIDTH), int(angle), 0, 360, 1)
