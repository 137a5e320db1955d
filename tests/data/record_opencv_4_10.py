"""Records what OpenCV 4.10 (the version PaddleX 3.7.2 pins) computes for the
calls PaddleX makes that posepipe's kernels reproduce: getAffineTransform,
invertAffineTransform, warpAffine (INTER_LINEAR, zero border) and GaussianBlur on float64 maps.
kernel_reference.py models them in NumPy, and test_kernel_reference.py checks
the models against this record, so the kernel tests hold whatever OpenCV is
installed. Rerun only to extend the record, with that OpenCV:

    pip install --target /tmp/cv410 --no-deps opencv-python-headless==4.10.0.84
    PYTHONPATH=/tmp/cv410 python tests/data/record_opencv_4_10.py
"""
from pathlib import Path

import cv2
import numpy as np

assert cv2.__version__.startswith("4.10."), f"record with OpenCV 4.10, found {cv2.__version__}"
OUT = Path(__file__).with_name("opencv_4_10.npz")
rng = np.random.default_rng(2024)

# getAffineTransform: float32 point triples, as PaddleX passes them; some
# collinear or repeated (singular: OpenCV answers all zeros).
points = rng.uniform(-800, 800, (300, 2, 3, 2)).astype(np.float32)
points[:20] = np.round(points[:20])
points[20:30, :, 2] = points[20:30, :, 1]  # repeated point
points[30:40, :, 1] = points[30:40, :, 0] * 2 - points[30:40, :, 2]  # roughly collinear
affine = np.stack([cv2.getAffineTransform(src, dst) for src, dst in points])
inverted = np.stack([cv2.invertAffineTransform(m) for m in affine])

# warpAffine: 1, 3 and 4 channel images; matrices that land inside, across the
# border and outside, tiny and huge scales, plus degenerate ones.
images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(37, 53), (41, 29, 3), (23, 31, 4)]]
matrices = []
for _ in range(40):
    angle, zoom = rng.uniform(-np.pi, np.pi), np.exp(rng.uniform(-3, 3))
    c, s = np.cos(angle) * zoom, np.sin(angle) * zoom
    matrices.append([[c, -s, rng.uniform(-60, 60)], [s * rng.uniform(0.5, 2), c, rng.uniform(-60, 60)]])
matrices += [np.zeros((2, 3)), [[np.inf, 0, 0], [0, np.inf, 0]], [[1, 0, 0.49], [0, 1, -0.51]], [[1e-3, 0, 5], [0, 1e3, 7]]]
matrices = np.array(matrices, np.float64)
warp_size = (19, 27)  # (w, h)


def _as4(img):
    """HxW or HxWxC as HxWx4 (zeros beyond C), so one array holds all channel counts."""
    img = img.reshape(img.shape[0], img.shape[1], -1)
    out = np.zeros(img.shape[:2] + (4,), np.uint8)
    out[..., : img.shape[2]] = img
    return out


warped = np.stack([np.stack([_as4(cv2.warpAffine(im, m, warp_size, flags=cv2.INTER_LINEAR)) for m in matrices]) for im in images])

# GaussianBlur as PaddleX's DARK step calls it: a float64 map zero-padded by
# k // 2, kernel k, sigma 0, default border; the padding cropped off again.
blur_inputs, blurred = [], []
for k in (3, 5, 7):
    maps = rng.normal(size=(4, 13, 11)) * rng.uniform(0.01, 100)
    maps[0] = np.exp(-((np.arange(11) - 5.3) ** 2)[None] / 3 - ((np.arange(13) - 6.1) ** 2)[:, None] / 5)
    for m in maps:
        pad = k // 2
        padded = np.zeros((m.shape[0] + 2 * pad, m.shape[1] + 2 * pad))
        padded[pad:-pad, pad:-pad] = m
        blur_inputs.append(m)
        blurred.append(cv2.GaussianBlur(padded, (k, k), 0)[pad:-pad, pad:-pad])
blur_kernels = np.repeat([3, 5, 7], 4)

np.savez_compressed(
    OUT,
    opencv_version=np.array(cv2.__version__),
    affine_points=points,
    affine=affine,
    inverted=inverted,
    warp_images_gray=images[0],
    warp_images_bgr=images[1],
    warp_images_bgra=images[2],
    warp_matrices=matrices,
    warp_size=np.array(warp_size),
    warped=warped,
    blur_inputs=np.stack(blur_inputs),
    blur_kernels=blur_kernels,
    blurred=np.stack(blurred),
)
print(f"wrote {OUT} ({OUT.stat().st_size} bytes) with OpenCV {cv2.__version__}")
