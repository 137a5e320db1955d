"""The NumPy references in kernel_reference.py reproduce, bit for bit, what
OpenCV 4.10 (PaddleX 3.7.2's pinned version) computed for the calls PaddleX
makes, as recorded in data/opencv_4_10.npz (data/record_opencv_4_10.py). The
kernel tests compare the C++ kernels with these references, so they hold with
whatever OpenCV is installed."""
from pathlib import Path

import numpy as np
import pytest

import kernel_reference as ref

RECORD = Path(__file__).with_name("data") / "opencv_4_10.npz"


@pytest.fixture(scope="module")
def opencv_4_10():
    with np.load(RECORD) as data:
        record = {k: data[k] for k in data.files}
    assert str(record["opencv_version"]).startswith("4.10.")
    return record


def test_get_affine_transform(opencv_4_10):
    points, expected = opencv_4_10["affine_points"], opencv_4_10["affine"]
    got = np.stack([ref.get_affine_transform(src, dst) for src, dst in points])
    assert (~expected.any(axis=(1, 2))).sum() >= 10  # the singular systems are in the record
    np.testing.assert_array_equal(got, expected)


def test_invert_affine_transform(opencv_4_10):
    got = np.stack([ref.invert_affine_transform(m) for m in opencv_4_10["affine"]])
    np.testing.assert_array_equal(got, opencv_4_10["inverted"])


@pytest.mark.parametrize("kind, channels", [("gray", 1), ("bgr", 3), ("bgra", 4)])
def test_warp_affine(opencv_4_10, kind, channels):
    image = opencv_4_10[f"warp_images_{kind}"]
    out_w, out_h = (int(v) for v in opencv_4_10["warp_size"])
    expected = opencv_4_10["warped"][["gray", "bgr", "bgra"].index(kind)][..., :channels]
    for i, m in enumerate(opencv_4_10["warp_matrices"]):
        got = ref.warp_affine_410(image, m, out_w, out_h).reshape(out_h, out_w, channels)
        np.testing.assert_array_equal(got, expected[i], err_msg=f"matrix {i}: {m.tolist()}")
    assert expected.any() and not expected[:, :, :, :].all()  # inside and outside samples both recorded


def test_gaussian_blur(opencv_4_10):
    """Bit for bit with kernel 3, PaddleX's; with 5 and 7 OpenCV's fused
    multiply-adds move the last bit of some sums (see gaussian_blur)."""
    records = zip(opencv_4_10["blur_inputs"], opencv_4_10["blur_kernels"], opencv_4_10["blurred"])
    for m, k, expected in records:
        pad = k // 2
        padded = np.zeros((m.shape[0] + 2 * pad, m.shape[1] + 2 * pad))
        padded[pad:-pad, pad:-pad] = m
        got = ref.gaussian_blur(padded, int(k))[pad:-pad, pad:-pad]
        if k == 3:
            np.testing.assert_array_equal(got, expected)
        else:
            np.testing.assert_allclose(got, expected, rtol=0, atol=4 * np.finfo(np.float64).eps * np.abs(m).max())
