"""NumPy references for posepipe's C++ kernels, written from what PaddleX 3.7.2
and OpenCV compute, independently of the C++ code.

Where PaddleX calls OpenCV, the reference spells out what OpenCV 4.10 (the
version PaddleX pins) computes, in NumPy, instead of calling the installed cv2:
users run whatever OpenCV they have (warpAffine's arithmetic changed in 4.11),
and the kernels must match PaddleX's, not theirs. test_kernel_reference.py
checks these models against OpenCV 4.10's own outputs, recorded in
data/opencv_4_10.npz."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

F32 = np.float32


# --------------------------------------------------------------------------- colour, normalisation


def as_bgr(img: np.ndarray) -> np.ndarray:
    """Grey and BGRA inputs as the 3-channel BGR image the kernels work on
    (cv2.cvtColor's GRAY2BGR repeats the grey value; BGRA2BGR drops alpha)."""
    if img.ndim == 2 or img.shape[2] == 1:
        return np.repeat(img.reshape(img.shape[:2] + (1,)), 3, axis=2)
    return np.ascontiguousarray(img[:, :, :3])


def paddlex_normalize(img: np.ndarray, mean: Sequence[float], std: Sequence[float], is_scale: bool) -> np.ndarray:
    """PaddleX's Normalize (float32 channel * (scale/std) then + (-mean/std), in
    place, NumPy promotion rules) followed by HWC -> CHW."""
    scale = 1.0 / 255.0 if is_scale else 1
    planes = []
    for c in range(3):
        plane = img[:, :, c].astype(np.float32)
        plane *= scale / std[c]
        plane += -mean[c] / std[c]
        planes.append(plane)
    return np.stack(planes)


def paddlex_order(img: np.ndarray, to_rgb: bool) -> np.ndarray:
    """The image PaddleX resizes/warps: BGR converted to RGB by its reader when to_rgb."""
    bgr = as_bgr(img)
    return np.ascontiguousarray(bgr[:, :, ::-1]) if to_rgb else bgr


# --------------------------------------------------------------------------- top-down crop geometry


def _third_point(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = a - b
    return b + np.array([-d[1], d[0]], dtype=np.float32)


def get_affine_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """cv2.getAffineTransform(src, dst) as OpenCV 4.10 computes it: the 6x6
    system of the three point pairs solved by its LU (partial pivoting,
    elimination with -1/pivot, back substitution by division), in float64;
    all zeros when a pivot falls under 100 * DBL_EPSILON."""
    a, b = np.zeros((6, 6)), np.zeros(6)
    for i in range(3):
        a[2 * i, 0] = a[2 * i + 1, 3] = float(src[i][0])
        a[2 * i, 1] = a[2 * i + 1, 4] = float(src[i][1])
        a[2 * i, 2] = a[2 * i + 1, 5] = 1.0
        b[2 * i], b[2 * i + 1] = float(dst[i][0]), float(dst[i][1])
    eps = np.finfo(np.float64).eps * 100
    for i in range(6):
        p = i
        for j in range(i + 1, 6):
            if abs(a[j, i]) > abs(a[p, i]):
                p = j
        if not abs(a[p, i]) >= eps:
            return np.zeros((2, 3))
        if p != i:
            a[[i, p], i:] = a[[p, i], i:]
            b[[i, p]] = b[[p, i]]
        d = -1 / a[i, i]
        for j in range(i + 1, 6):
            alpha = a[j, i] * d
            for k in range(i + 1, 6):
                a[j, k] += alpha * a[i, k]
            b[j] += alpha * b[i]
    for i in range(5, -1, -1):
        s = b[i]
        for k in range(i + 1, 6):
            s -= a[i, k] * b[k]
        b[i] = s / a[i, i]
    return b.reshape(2, 3)


def invert_affine_transform(m: np.ndarray) -> np.ndarray:
    """cv2.invertAffineTransform for a 2x3 matrix, in float64 (a zero
    determinant gives a zero linear part, as OpenCV's does)."""
    m = np.asarray(m, np.float64).ravel()
    with np.errstate(all="ignore"):  # degenerate (inf / NaN) matrices are part of the contract
        d = m[0] * m[4] - m[1] * m[3]
        d = 1.0 / d if d != 0 else 0.0
        a11, a22, a12, a21 = m[4] * d, m[0] * d, m[1] * -d, m[3] * -d
        return np.array([[a11, a12, -a11 * m[2] - a12 * m[5]], [a21, a22, -a21 * m[2] - a22 * m[5]]])


def paddlex_affine(center, scale, output_size, inv: bool = False) -> np.ndarray:
    """PaddleX's get_affine_transform with rot = 0 and no shift, keeping its
    NumPy dtypes: float32 point pairs solved by cv2.getAffineTransform."""
    center, scale = np.asarray(center), np.asarray(scale)
    cos, sin = np.cos(0.0), np.sin(0.0)
    half = scale[0] * -0.5
    src_dir = [0.0 * cos - half * sin, 0.0 * sin + half * cos]
    dst_w, dst_h = output_size
    src = np.zeros((3, 2), np.float32)
    src[0, :] = center + scale * np.array((0.0, 0.0))
    src[1, :] = center + src_dir + scale * np.array((0.0, 0.0))
    src[2, :] = _third_point(src[0, :], src[1, :])
    dst = np.zeros((3, 2), np.float32)
    dst[0, :] = [dst_w * 0.5, dst_h * 0.5]
    dst[1, :] = np.array([dst_w * 0.5, dst_h * 0.5]) + np.array([0.0, dst_w * -0.5])
    dst[2, :] = _third_point(dst[0, :], dst[1, :])
    return get_affine_transform(dst, src) if inv else get_affine_transform(src, dst)


def paddlex_udp_matrix(center, scale, output_size) -> np.ndarray:
    """PaddleX's get_warp_matrix(0, center * 2, (w - 1, h - 1), scale), a float32
    matrix; the divisions happen in the dtype of `scale` (NumPy weak scalars)."""
    center, scale = np.asarray(center), np.asarray(scale)
    size_in = center * 2.0
    size_dst = [output_size[0] - 1.0, output_size[1] - 1.0]
    cos, sin = np.cos(np.deg2rad(0)), np.sin(np.deg2rad(0))
    with np.errstate(divide="ignore", invalid="ignore"):
        sx = size_dst[0] / scale[0]
        sy = size_dst[1] / scale[1]
        m = np.zeros((2, 3), np.float32)
        m[0, 0] = cos * sx
        m[0, 1] = -sin * sx
        m[0, 2] = sx * (-0.5 * size_in[0] * cos + 0.5 * size_in[1] * sin + 0.5 * scale[0])
        m[1, 0] = sin * sy
        m[1, 1] = cos * sy
        m[1, 2] = sy * (-0.5 * size_in[0] * sin - 0.5 * size_in[1] * cos + 0.5 * scale[1])
    return m


def _cv_round(v: np.ndarray) -> np.ndarray:
    """x86 cvRound(double): half to even; NaN / out of int32 range -> INT_MIN."""
    ok = (v > -2147483648.5) & (v < 2147483647.5)
    return np.where(ok, np.rint(np.where(ok, v, 0)), -(2**31)).astype(np.int64)


def _wrap32(v: np.ndarray) -> np.ndarray:
    return ((v + 2**31) % 2**32) - 2**31


def warp_affine_410(img: np.ndarray, m: np.ndarray, out_w: int, out_h: int) -> np.ndarray:
    """cv2.warpAffine(img, m, (out_w, out_h), flags=INTER_LINEAR) with a zero
    border as OpenCV 4.10 (PaddleX's pinned version) computes it: invert m,
    map pixels in 10-bit fixed point, sample at 1/32 pixel with 15-bit weights."""
    inv = invert_affine_transform(m).ravel()
    xs, ys = np.arange(out_w, dtype=np.float64), np.arange(out_h, dtype=np.float64)
    with np.errstate(all="ignore"):
        adelta = _cv_round(inv[0] * xs * 1024)
        bdelta = _cv_round(inv[3] * xs * 1024)
        x0 = _wrap32(_cv_round((inv[1] * ys + inv[2]) * 1024) + 16)
        y0 = _wrap32(_cv_round((inv[4] * ys + inv[5]) * 1024) + 16)
    X = _wrap32(x0[:, None] + adelta[None, :]) >> 5
    Y = _wrap32(y0[:, None] + bdelta[None, :]) >> 5
    sx, sy = np.clip(X >> 5, -32768, 32767), np.clip(Y >> 5, -32768, 32767)
    fx, fy = X & 31, Y & 31
    h, w = img.shape[:2]
    src = img.reshape(h, w, -1).astype(np.int64)
    total = np.zeros((out_h, out_w, src.shape[2]), np.int64)
    for dy, dx, weight in ((0, 0, (32 - fy) * (32 - fx)), (0, 1, (32 - fy) * fx), (1, 0, fy * (32 - fx)), (1, 1, fy * fx)):
        tx, ty = sx + dx, sy + dy
        inside = (tx >= 0) & (tx < w) & (ty >= 0) & (ty < h)
        px = src[np.clip(ty, 0, h - 1), np.clip(tx, 0, w - 1)]
        total += np.where(inside[..., None], px, 0) * (weight * 32)[..., None]
    return ((total + (1 << 14)) >> 15).astype(np.uint8).reshape((out_h, out_w) + img.shape[2:])


# --------------------------------------------------------------------------- multiclass_nms3


def _area(b, normalized):
    if b[2] < b[0] or b[3] < b[1]:
        return F32(0)
    w, h = b[2] - b[0], b[3] - b[1]
    return w * h if normalized else (w + F32(1)) * (h + F32(1))


def _overlap(a, b, normalized):
    if b[0] > a[2] or b[2] < a[0] or b[1] > a[3] or b[3] < a[1]:
        return F32(0)
    pad = F32(0) if normalized else F32(1)
    iw = min(a[2], b[2]) - max(a[0], b[0]) + pad
    ih = min(a[3], b[3]) - max(a[1], b[1]) + pad
    inter = iw * ih
    with np.errstate(invalid="ignore", divide="ignore"):
        return inter / (_area(a, normalized) + _area(b, normalized) - inter)


def multiclass_nms3(boxes, scores, score_threshold, nms_top_k, keep_top_k, iou_threshold, normalized=True,
                    background_label=-1, nms_eta=1.0):
    """Paddle's multiclass_nms3 CPU semantics for boxes [N,M,4], scores [N,C,M]:
    per class, scores above the threshold in stable descending order, the
    first nms_top_k, greedy suppression (IoU > threshold); the image's top
    keep_top_k overall; rows grouped by class (ascending), by score within."""
    rows, counts = [], []
    for bx, sc in zip(boxes, scores):
        kept = {}
        for c in range(sc.shape[0]):
            if c == background_label:
                continue
            order = sorted((i for i in range(sc.shape[1]) if sc[c, i] > F32(score_threshold)), key=lambda i: -sc[c, i])
            if nms_top_k > -1:
                order = order[:nms_top_k]
            threshold, sel = F32(iou_threshold), []
            for i in order:
                if all(_overlap(bx[i], bx[j], normalized) <= threshold for j in sel):
                    sel.append(i)
                    if nms_eta < 1 and threshold > 0.5:
                        threshold *= F32(nms_eta)
            kept[c] = sel
        total = sum(len(v) for v in kept.values())
        if keep_top_k > -1 and total > keep_top_k:
            flat = sorted(((c, i) for c in kept for i in kept[c]), key=lambda ci: -sc[ci[0], ci[1]])[:keep_top_k]
            kept = {c: [i for cc, i in flat if cc == c] for c in kept}
            total = keep_top_k
        for c in sorted(kept):
            rows += [[c, sc[c, i], *bx[i]] for i in kept[c]]
        counts.append(total)
    return np.array(rows, np.float32).reshape(-1, 6), np.array(counts, np.int32)


# --------------------------------------------------------------------------- heatmaps


def paddlex_final_preds(heatmaps, centers, scales, use_dark=True, kernel=3):
    """PaddleX's KptPostProcess.get_final_preds for float32 heatmaps [N,K,H,W]
    (on a copy: PaddleX blurs its input in place): (x, y, maxval) [N,K,3], float32."""
    hm = np.array(heatmaps, np.float32)
    n, k, h, w = hm.shape
    flat = hm.reshape(n, k, -1)
    idx = np.argmax(flat, 2)
    maxvals = np.amax(flat, 2)[..., None]
    coords = np.tile(idx[..., None], (1, 1, 2)).astype(np.float32)
    coords[..., 0] = coords[..., 0] % w
    coords[..., 1] = np.floor(coords[..., 1] / w)
    with np.errstate(invalid="ignore"):
        coords *= np.tile(np.greater(maxvals, 0.0), (1, 1, 2)).astype(np.float32)
    if use_dark:
        pad = (kernel - 1) // 2
        with np.errstate(invalid="ignore", divide="ignore"):
            for i in range(n):
                for j in range(k):
                    top = np.max(hm[i, j])
                    padded = np.zeros((h + 2 * pad, w + 2 * pad))
                    padded[pad:-pad, pad:-pad] = hm[i, j]
                    hm[i, j] = gaussian_blur(padded, kernel)[pad:-pad, pad:-pad]
                    hm[i, j] *= top / np.max(hm[i, j])
            logs = np.log(np.maximum(hm, 1e-10))
        for i in range(n):
            for j in range(k):
                coords[i, j] = _dark_step(logs[i, j], coords[i, j])
    else:
        for i in range(n):
            for j in range(k):
                m = hm[i, j]
                px, py = int(math.floor(coords[i, j, 0] + 0.5)), int(math.floor(coords[i, j, 1] + 0.5))
                if 1 < px < w - 1 and 1 < py < h - 1:
                    diff = np.array([m[py][px + 1] - m[py][px - 1], m[py + 1][px] - m[py - 1][px]])
                    coords[i, j] += np.sign(diff) * 0.25
    out = np.zeros((n, k, 3), np.float32)  # PaddleX writes the projections into float32 coords
    for i in range(n):
        back = paddlex_affine(centers[i], scales[i], [w, h], inv=True)
        for j in range(k):
            out[i, j, :2] = np.dot(back, np.array([coords[i, j, 0], coords[i, j, 1], 1.0]))
    out[..., 2] = maxvals[..., 0]
    return out


def gaussian_kernel(ksize: int) -> np.ndarray:
    """cv2.getGaussianKernel(ksize, 0) for ksize 3, 5, 7: OpenCV's fixed
    binomial kernels (PaddleX's DARK step uses 3)."""
    fixed = {3: [0.25, 0.5, 0.25], 5: [0.0625, 0.25, 0.375, 0.25, 0.0625],
             7: [0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125]}
    return np.array(fixed[ksize])


def gaussian_blur(img: np.ndarray, ksize: int) -> np.ndarray:
    """cv2.GaussianBlur(img, (ksize, ksize), 0) of a float64 map, inside the
    region that never reaches the border (PaddleX pads by ksize // 2 first, so
    the border mode never matters): OpenCV's separable filter, the row pass
    summed tap by tap from the left, the symmetric column pass from the centre
    tap outwards with mirrored pairs added first.

    For ksize 3 (PaddleX's) every weight is a power of two, so each product is
    exact and this is OpenCV 4.10's result bit for bit on any CPU. For 5 and 7
    OpenCV fuses the multiply-adds where the CPU has FMA, which moves the last
    bit of some float64 sums; this model does not fuse (nor do the kernels)."""
    g, b = gaussian_kernel(ksize), ksize // 2
    h, w = img.shape
    rows = np.zeros((h, w))
    rows[:, b : w - b] = g[0] * img[:, 0 : w - 2 * b]
    for t in range(1, ksize):
        rows[:, b : w - b] += g[t] * img[:, t : w - 2 * b + t]
    out = np.zeros((h, w))
    out[b : h - b] = g[b] * rows[b : h - b] + 0.0
    for t in range(1, b + 1):
        out[b : h - b] += g[b + t] * (rows[b + t : h - b + t] + rows[b - t : h - b - t])
    return out


def _dark_step(m, coord):
    h, w = m.shape
    px, py = int(coord[0]), int(coord[1])
    if not (1 < px < w - 2 and 1 < py < h - 2):
        return coord
    dx = 0.5 * (m[py][px + 1] - m[py][px - 1])
    dy = 0.5 * (m[py + 1][px] - m[py - 1][px])
    dxx = 0.25 * (m[py][px + 2] - 2 * m[py][px] + m[py][px - 2])
    dxy = 0.25 * (m[py + 1][px + 1] - m[py - 1][px + 1] - m[py + 1][px - 1] + m[py - 1][px - 1])
    dyy = 0.25 * (m[py + 2][px] - 2 * m[py][px] + m[py - 2][px])
    with np.errstate(invalid="ignore", over="ignore"):
        if dxx * dyy - dxy**2 != 0:
            hessian = np.array([[dxx, dxy], [dxy, dyy]])
            step = np.dot(-np.linalg.inv(hessian), np.array([[dx], [dy]]))
            coord = coord + step[:, 0]
    return coord


def flip_back(flipped, pairs, shift):
    """PaddleX's flip_back (mirror W, swap each pair in order) and PP-TinyPose's shift."""
    out = np.array(flipped, np.float32)[:, :, :, ::-1].copy()
    for a, b in pairs:
        tmp = out[:, a].copy()
        out[:, a] = out[:, b]
        out[:, b] = tmp
    if shift:
        out[:, :, :, 1:] = out.copy()[:, :, :, :-1]
    return out


# --------------------------------------------------------------------------- test helpers


def assert_releases_gil(run, total_seconds: float = 0.2, min_call: float = 0.004, attempts: int = 10) -> None:
    """Calls `run` (one kernel call) repeatedly in a thread for about
    `total_seconds` and checks that this thread kept executing Python code in
    the middle half of the calls. Around each call's entry and exit the GIL
    changes hands (a switch lets the other thread run for one switch interval,
    cut here to 0.1 ms for the measurement), so only the middle of calls longer
    than `min_call` counts. With the GIL held no tick
    lands there; released, this loop ticks thousands of times unless the
    machine is starved of CPU, hence a few attempts."""
    import threading
    import time

    def measure():
        windows, ticks = [], []

        def worker():
            begin = time.perf_counter()
            while time.perf_counter() - begin < total_seconds:
                start = time.perf_counter()
                run()
                windows.append((start, time.perf_counter()))

        thread = threading.Thread(target=worker)
        thread.start()
        while thread.is_alive():
            ticks.append(time.perf_counter())
            time.sleep(0)
        thread.join()
        middles = [(s + (e - s) / 4, e - (e - s) / 4) for s, e in windows if e - s > min_call]
        assert middles, f"each call took under {min_call}s: give the kernel more work"
        t = np.array(ticks)
        return sum(int(((t > a) & (t < b)).sum()) for a, b in middles)

    import sys

    counts = []
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    try:
        for _ in range(attempts):
            counts.append(measure())
            if counts[-1] >= 3:
                return
    finally:
        sys.setswitchinterval(interval)
    raise AssertionError(f"Python ticks while the kernel ran: {counts}; the GIL was held")
