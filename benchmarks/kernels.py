"""Kernel micro-benchmarks: posepipe's C++ kernels against the NumPy/OpenCV code
PaddleX runs for the same step, on the shapes of each model set.

The references below are written to do what PaddleX 3.7.2 does, step for step
(the same OpenCV calls, the same per-person and per-joint Python loops), so
their time is what PaddleX pays for the step. Each comparison also reports the
largest difference between the two outputs, to show they compute the same thing."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import cv2
import numpy as np
import yaml

from measure import summary_ms
from suites import SUITES, GROWTH_PHOTO

COCO_FLIP_PAIRS = np.array([[1, 2], [3, 4], [5, 6], [7, 8], [9, 10], [11, 12], [13, 14], [15, 16]], np.int32)
NMS = {"score_threshold": 0.01, "nms_top_k": 1000, "keep_top_k": 100, "iou_threshold": 0.6}


def run_all(shared: Path, suites: List[str], quick: bool = False) -> Dict[str, Any]:
    """{suite: {kernel: result}} on the shapes of each model set."""
    try:
        from posepipe import _kernels
    except ImportError as e:
        raise SystemExit(f"benchmarks: posepipe's kernels are not importable ({e}); pip install -e . first")
    iterations = 5 if quick else 40
    image = cv2.imread(str(shared / "photos" / GROWTH_PHOTO), cv2.IMREAD_COLOR)
    reference = json.loads((shared / "reference" / "paddlex_real_models.json").read_text())
    boxes = np.array([p["coordinate"] for p in reference[GROWTH_PHOTO]], np.float32)
    out = {}
    for name in suites:
        shapes = Shapes(shared, name)
        cases = {
            "det_preprocess": det_preprocess_case(shapes, image),
            "crops": crops_case(_kernels, shapes, image, boxes),
            "heatmap_decode": decode_case(_kernels, shapes, boxes),
            "flip_average": flip_case(_kernels, shapes, len(boxes)),
            "nms": nms_case(_kernels, image, boxes),
        }
        out[name] = {key: race(*case, iterations) for key, case in cases.items()}
    return out


class Shapes:
    """Input sizes and normalisation of one model set, read from its inference.yml files."""

    def __init__(self, shared: Path, suite_name: str):
        suite = SUITES[suite_name]
        det = steps(shared / "models" / suite.detector_dir)
        kpt = steps(shared / "models" / suite.keypoints_dir)
        self.det_hw = tuple(det["Resize"]["target_size"])
        self.det_interp = int(det["Resize"].get("interp", 1))
        self.det_norm = det["NormalizeImage"]
        self.crop_wh = tuple(kpt["TopDownEvalAffine"]["trainsize"])
        self.kpt_norm = kpt["NormalizeImage"]
        self.heatmap_hw = (self.crop_wh[1] // 4, self.crop_wh[0] // 4)
        self.description = f"det {self.det_hw[1]}x{self.det_hw[0]}, crop {self.crop_wh[0]}x{self.crop_wh[1]}"


def steps(model_dir: Path) -> Dict[str, Dict[str, Any]]:
    config = yaml.safe_load((model_dir / "inference.yml").read_text())
    return {step["type"]: step for step in config["Preprocess"]}


def race(ours: Callable[[], Any], theirs: Callable[[], Any], compare: Callable[[Any, Any], float], what: str, iterations: int):
    """Alternate the two implementations; report min/median, speedup and agreement."""
    times: Dict[str, List[float]] = {"posepipe": [], "reference": []}
    outputs = {"posepipe": ours(), "reference": theirs()}  # warm-up, and the outputs to compare
    for _ in range(iterations):
        for key, fn in (("posepipe", ours), ("reference", theirs)):
            t0 = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t0)
    ours_ms, theirs_ms = summary_ms(times["posepipe"]), summary_ms(times["reference"])
    return {
        "what": what,
        "posepipe": ours_ms,
        "reference": theirs_ms,
        "speedup": theirs_ms["median_ms"] / ours_ms["median_ms"],
        "max_abs_diff": float(compare(outputs["posepipe"], outputs["reference"])),
    }


def max_diff(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max()) if a.shape == b.shape else float("inf")


# --- detector preprocessing ------------------------------------------------------------------


def det_preprocess_case(shapes: Shapes, image: np.ndarray):
    from posepipe.detector import preprocess_images  # importable once run_all has checked the kernels

    h, w = shapes.det_hw
    norm = shapes.det_norm

    def ours():
        # Detector.preprocess: cv2.cvtColor + cv2.resize, then the C++ normalize_batch.
        return preprocess_images(
            [image], (h, w), False, shapes.det_interp, norm["mean"], norm["std"], norm.get("is_scale", True), True
        )[0]

    def theirs():
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        resized = cv2.resize(rgb, (w, h), interpolation=shapes.det_interp)
        return np.stack([normalize_chw(resized, norm)])

    what = f"1 image {image.shape[1]}x{image.shape[0]} -> {w}x{h}: to RGB, cv2.resize (interp {shapes.det_interp}), normalize, CHW"
    return ours, theirs, max_diff, what


def normalize_chw(image: np.ndarray, norm: Dict[str, Any]) -> np.ndarray:
    """PaddleX's NormalizeImage (per channel: cast, scale, shift, then cv2.merge) and Permute."""
    scale = 1.0 / 255 if norm.get("is_scale", True) else 1.0
    channels = list(cv2.split(image))
    for c, (mean, std) in enumerate(zip(norm["mean"], norm["std"])):
        channels[c] = channels[c].astype(np.float32)
        channels[c] *= scale / std
        channels[c] += -mean / std
    return cv2.merge(channels).transpose(2, 0, 1)


# --- person crops ----------------------------------------------------------------------------


def center_scale(boxes: np.ndarray, crop_wh: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray]:
    """A box to a centre and a scale with the crop's aspect ratio, padded by 1.25."""
    aspect = crop_wh[0] / crop_wh[1]
    centers, scales = [], []
    for x1, y1, x2, y2 in boxes:
        w, h = x2 - x1, y2 - y1
        if w > aspect * h:
            h = w / aspect
        elif w < aspect * h:
            w = h * aspect
        centers.append([(x1 + x2) / 2, (y1 + y2) / 2])
        scales.append([w * 1.25, h * 1.25])
    return np.array(centers, np.float64), np.array(scales, np.float64)


def affine(center, scale, out_wh, inverse=False) -> np.ndarray:
    """The top-down crop transform from three point pairs (centre, top middle, and
    the point 90 degrees from it), solved by cv2.getAffineTransform."""
    out_w, out_h = out_wh
    src = np.array([center, center + [0.0, -0.5 * scale[0]]], np.float64)
    dst = np.array([[out_w * 0.5, out_h * 0.5], [out_w * 0.5, out_h * 0.5 - 0.5 * out_w]], np.float64)
    src = np.vstack([src, third_point(src)]).astype(np.float32)
    dst = np.vstack([dst, third_point(dst)]).astype(np.float32)
    return cv2.getAffineTransform(dst, src) if inverse else cv2.getAffineTransform(src, dst)


def third_point(pts: np.ndarray) -> np.ndarray:
    d = pts[0] - pts[1]
    return pts[1] + np.array([-d[1], d[0]])


def crops_case(k, shapes: Shapes, image: np.ndarray, boxes: np.ndarray):
    w, h = shapes.crop_wh
    norm = shapes.kpt_norm
    centers, scales = center_scale(boxes, shapes.crop_wh)
    index = np.zeros(len(boxes), np.int32)
    rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)  # PaddleX crops from the RGB image it decoded

    def ours():
        matrices = k.topdown_matrices(centers, scales, w, h, False)
        return k.warp_crops([image], index, matrices, w, h, list(norm["mean"]), list(norm["std"]), True, True, 0)

    def theirs():
        crops = []
        for c, s in zip(centers, scales):
            crop = cv2.warpAffine(rgb, affine(c, s, (w, h)), (w, h), flags=cv2.INTER_LINEAR)
            crops.append(normalize_chw(crop, norm))
        return np.stack(crops)

    what = f"{len(boxes)} persons -> {w}x{h}: per person affine matrix, cv2.warpAffine, normalize, CHW"
    return ours, theirs, max_diff, what


# --- heatmap decoding ------------------------------------------------------------------------


def synthetic_heatmaps(persons: int, hw: Tuple[int, int], seed: int = 0) -> np.ndarray:
    """One Gaussian peak per joint (sigma 2 cells) on a faint noise floor, like a trained model's."""
    rng = np.random.default_rng(seed)
    h, w = hw
    ys, xs = np.mgrid[0:h, 0:w]
    peaks = rng.uniform([3, 3], [w - 4, h - 4], size=(persons, 17, 2))
    heights = rng.uniform(0.3, 0.9, size=(persons, 17, 1, 1))
    dx = xs[None, None] - peaks[..., 0, None, None]
    dy = ys[None, None] - peaks[..., 1, None, None]
    maps = heights * np.exp(-(dx**2 + dy**2) / (2 * 2.0**2))
    return (maps + rng.uniform(0, 0.01, size=maps.shape)).astype(np.float32)


def decode_case(k, shapes: Shapes, boxes: np.ndarray):
    heatmaps = synthetic_heatmaps(len(boxes), shapes.heatmap_hw)
    centers, scales = center_scale(boxes, shapes.crop_wh)

    def ours():
        return k.decode_heatmaps(heatmaps, centers, scales, True, 3, 0)

    def theirs():
        return dark_decode_reference(heatmaps, centers, scales)

    def compare(a, b):
        return max_diff(np.asarray(a)[..., :2], b[..., :2])

    h, w = shapes.heatmap_hw
    what = f"{len(boxes)} persons x 17 joints, {w}x{h} heatmaps: argmax, blur, DARK, back-projection (Python loops)"
    return ours, theirs, compare, what


def dark_decode_reference(heatmaps: np.ndarray, centers: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """PaddleX's KptPostProcess(use_dark=True), one person at a time as PaddleX calls it."""
    out = []
    for hm, c, s in zip(heatmaps, centers, scales):
        hm = hm[None].copy()
        flat = hm.reshape(1, 17, -1)
        idx, maxvals = flat.argmax(2), flat.max(2)
        coords = np.stack([idx % hm.shape[3], idx // hm.shape[3]], -1).astype(np.float32)
        coords *= (maxvals > 0)[..., None]
        logs = np.log(np.maximum(blur_joints(hm), 1e-10))
        for j in range(17):
            coords[0, j] = taylor_step(logs[0, j], coords[0, j])
        inv = affine(c, s, (hm.shape[3], hm.shape[2]), inverse=True)
        pts = np.array([inv @ np.array([x, y, 1.0]) for x, y in coords[0]])
        out.append(np.concatenate([pts, maxvals[0][:, None]], axis=1))
    return np.array(out)


def blur_joints(hm: np.ndarray, kernel: int = 3) -> np.ndarray:
    """Per joint: pad, cv2.GaussianBlur, unpad, rescale to the original maximum."""
    border = (kernel - 1) // 2
    for j in range(hm.shape[1]):
        peak = hm[0, j].max()
        padded = np.zeros((hm.shape[2] + 2 * border, hm.shape[3] + 2 * border))
        padded[border:-border, border:-border] = hm[0, j]
        hm[0, j] = cv2.GaussianBlur(padded, (kernel, kernel), 0)[border:-border, border:-border]
        hm[0, j] *= peak / hm[0, j].max()
    return hm


def taylor_step(hm: np.ndarray, coord: np.ndarray) -> np.ndarray:
    """DARK's second-order refinement at the integer maximum."""
    h, w = hm.shape
    px, py = int(coord[0]), int(coord[1])
    if not (1 < px < w - 2 and 1 < py < h - 2):
        return coord
    dx = 0.5 * (hm[py, px + 1] - hm[py, px - 1])
    dy = 0.5 * (hm[py + 1, px] - hm[py - 1, px])
    dxx = 0.25 * (hm[py, px + 2] - 2 * hm[py, px] + hm[py, px - 2])
    dyy = 0.25 * (hm[py + 2, px] - 2 * hm[py, px] + hm[py - 2, px])
    dxy = 0.25 * (hm[py + 1, px + 1] - hm[py - 1, px + 1] - hm[py + 1, px - 1] + hm[py - 1, px - 1])
    hessian = np.array([[dxx, dxy], [dxy, dyy]])
    if dxx * dyy - dxy**2 == 0:
        return coord
    return coord - np.linalg.inv(hessian) @ np.array([dx, dy])


# --- flip test -------------------------------------------------------------------------------


def flip_case(k, shapes: Shapes, persons: int):
    heatmaps = synthetic_heatmaps(persons, shapes.heatmap_hw, seed=1)
    flipped = synthetic_heatmaps(persons, shapes.heatmap_hw, seed=2)

    def ours():
        return k.average_flip(heatmaps, flipped, COCO_FLIP_PAIRS, True)

    def theirs():
        back = flipped[..., ::-1].copy()
        for a, b in COCO_FLIP_PAIRS:
            back[:, [a, b]] = back[:, [b, a]]
        back[..., 1:] = back[..., :-1].copy()  # PP-TinyPose's one-pixel shift
        return (heatmaps + back) * 0.5

    what = f"{persons} persons: mirror flipped heatmaps back, swap left/right, shift, average"
    return ours, theirs, max_diff, what


# --- NMS -------------------------------------------------------------------------------------


def synthetic_candidates(image: np.ndarray, boxes: np.ndarray, anchors: int = 8400, seed: int = 0):
    """PP-YOLOE-shaped raw output [1,A,4] / [1,1,A]: a third of the anchors jitter
    around the persons with fair scores, the rest are background with scores near 0.01."""
    rng = np.random.default_rng(seed)
    h, w = image.shape[:2]
    near = rng.random(anchors) < 0.33
    base = boxes[rng.integers(0, len(boxes), anchors)]
    size = np.maximum(base[:, 2:] - base[:, :2], 1.0)
    jitter = rng.normal(0, 0.08, (anchors, 4)) * np.concatenate([size, size], 1)
    random_xy = rng.uniform(0, [w, h], (anchors, 2))
    random_boxes = np.concatenate([random_xy, random_xy + rng.uniform(10, 120, (anchors, 2))], 1)
    cand = np.where(near[:, None], base + jitter, random_boxes).astype(np.float32)
    cand[:, 2:] = np.maximum(cand[:, 2:], cand[:, :2] + 1.0)  # keep every box valid
    scores = np.where(near, rng.uniform(0.05, 0.9, anchors), rng.uniform(0, 0.02, anchors)).astype(np.float32)
    return cand[None], scores[None, None]


def nms_case(k, image: np.ndarray, boxes: np.ndarray):
    cand, scores = synthetic_candidates(image, boxes)
    s = NMS

    def ours():
        rows, _ = k.multiclass_nms(
            cand, scores, s["score_threshold"], s["nms_top_k"], s["keep_top_k"], s["iou_threshold"], True
        )
        return rows

    def theirs():
        return nms_reference(cand[0], scores[0, 0])

    kept = int((scores > s["score_threshold"]).sum())
    what = f"8400 candidates ({kept} above {s['score_threshold']}): top {s['nms_top_k']}, IoU {s['iou_threshold']}, keep {s['keep_top_k']}"
    return ours, theirs, max_diff, what


def nms_reference(boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Greedy NMS in NumPy, one class: multiclass_nms3's settings, rows (class, score, box)."""
    s = NMS
    order = np.flatnonzero(scores > s["score_threshold"])
    order = order[np.argsort(-scores[order], kind="stable")][: s["nms_top_k"]]
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = []
    while order.size and len(keep) < s["keep_top_k"]:
        i, rest = order[0], order[1:]
        keep.append(i)
        x1 = np.maximum(boxes[i, 0], boxes[rest, 0])
        y1 = np.maximum(boxes[i, 1], boxes[rest, 1])
        x2 = np.minimum(boxes[i, 2], boxes[rest, 2])
        y2 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
        iou = inter / (areas[i] + areas[rest] - inter)
        order = rest[iou <= s["iou_threshold"]]
    keep = np.array(keep, np.int64)
    return np.column_stack([np.zeros(len(keep)), scores[keep], boxes[keep]]).astype(np.float32)
