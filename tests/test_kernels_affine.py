"""topdown_matrices / warp_crops against PaddleX's TopDownAffine: its matrix
helpers and the cv2.getAffineTransform / warpAffine calls it makes, as OpenCV
4.10 (the version PaddleX 3.7.2 pins) computes them, modelled in NumPy in
kernel_reference (checked against OpenCV 4.10's recorded outputs in
test_kernel_reference.py), whatever OpenCV is installed."""

import numpy as np
import pytest

import kernel_reference as ref
from posepipe import _kernels as K

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def random_boxes(rng, count, w, h, dtype=np.float32):
    """Centres and scales, some far outside the image and some tiny."""
    centers = np.stack([rng.uniform(-0.5 * w, 1.5 * w, count), rng.uniform(-0.5 * h, 1.5 * h, count)], 1)
    scales = np.stack([rng.uniform(0.3, 2 * w, count), rng.uniform(0.3, 2 * h, count)], 1)
    return centers.astype(dtype), scales.astype(dtype)


def expected_crop(img, m, out_w, out_h, to_rgb=True):
    return ref.paddlex_normalize(
        ref.warp_affine_410(ref.paddlex_order(img, to_rgb), m, out_w, out_h), MEAN, STD, True
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", [(192, 256), (96, 128), (48, 64)])
def test_matrices_match_paddlex(dtype, size):
    centers, scales = random_boxes(np.random.default_rng(0), 200, 640, 480, dtype)
    fwd = K.topdown_matrices(centers, scales, *size, False)
    inv = K.topdown_matrices(centers, scales, *size, False, inverse=True)
    udp = K.topdown_matrices(centers, scales, *size, True)
    udp_inv = K.topdown_matrices(centers, scales, *size, True, inverse=True)
    assert fwd.dtype == np.float64 and fwd.shape == (200, 2, 3)
    for i, (c, s) in enumerate(zip(centers, scales)):
        np.testing.assert_array_equal(fwd[i], ref.paddlex_affine(c, s, size))
        np.testing.assert_array_equal(inv[i], ref.paddlex_affine(c, s, size, inv=True))
        m = ref.paddlex_udp_matrix(c, s, size)
        np.testing.assert_array_equal(udp[i], m)
        np.testing.assert_array_equal(udp_inv[i], ref.invert_affine_transform(m))


def test_udp_division_follows_the_input_dtype():
    """PaddleX divides in float32 when its centre/scale arrays are float32."""
    c, s = np.array([[100.3, 50.7]]), np.array([[77.1, 99.9]])
    m32 = K.topdown_matrices(c.astype(np.float32), s.astype(np.float32), 192, 256, True)[0]
    m64 = K.topdown_matrices(c, s, 192, 256, True)[0]
    np.testing.assert_array_equal(m32, ref.paddlex_udp_matrix(c[0].astype(np.float32), s[0].astype(np.float32), (192, 256)))
    np.testing.assert_array_equal(m64, ref.paddlex_udp_matrix(c[0], s[0], (192, 256)))


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("use_udp", [False, True])
def test_warp_matches_opencv_410(channels, use_udp):
    rng = np.random.default_rng(channels + 10 * use_udp)
    images = [rng.integers(0, 256, (int(h), int(w), channels)[: 2 if channels == 1 else 3], dtype=np.uint8)
              for h, w in rng.integers(1, 160, (3, 2))]
    index = rng.integers(0, 3, 12).astype(np.int32)
    centers, scales = random_boxes(rng, 12, 100, 100)
    matrices = K.topdown_matrices(centers, scales, 48, 64, use_udp)
    for to_rgb in (True, False):
        crops = K.warp_crops(images, index, matrices, 48, 64, MEAN, STD, True, to_rgb)
        assert crops.shape == (12, 3, 64, 48) and crops.dtype == np.float32
        for i in range(12):
            np.testing.assert_array_equal(crops[i], expected_crop(images[index[i]], matrices[i], 48, 64, to_rgb))


def test_boxes_outside_and_straddling_the_image():
    img = np.random.default_rng(3).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    centers = np.array([[-500, -500], [40, 30], [0, 0], [80, 60], [79.5, 10], [40, 300]], np.float32)
    scales = np.array([[50, 50], [200, 200], [30, 40], [30, 40], [5, 5], [60, 80]], np.float32)
    matrices = K.topdown_matrices(centers, scales, 48, 64, False)
    crops = K.warp_crops([img], np.zeros(6, np.int32), matrices, 48, 64, MEAN, STD, True, True)
    for i in range(6):
        np.testing.assert_array_equal(crops[i], expected_crop(img, matrices[i], 48, 64))
    border = ref.paddlex_normalize(np.zeros((1, 1, 3), np.uint8), MEAN, STD, True)
    np.testing.assert_array_equal(crops[0], np.broadcast_to(border, crops[0].shape))  # fully outside


def test_zero_size_box():
    """As in PaddleX: a zero-width box makes cv2.getAffineTransform's system
    singular, which it answers with an all-zero matrix, and warpAffine then maps
    every crop pixel to source pixel (0, 0). With UDP the scale is divided by 0
    and the infinite matrix samples only the zero border."""
    img = np.random.default_rng(4).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    centers, scales = np.array([[20, 15]], np.float32), np.zeros((1, 2), np.float32)
    plain = K.topdown_matrices(centers, scales, 48, 64, False)
    assert not plain.any()
    crop = K.warp_crops([img], np.zeros(1, np.int32), plain, 48, 64, MEAN, STD, True, True)[0]
    np.testing.assert_array_equal(crop, expected_crop(img, plain[0], 48, 64))
    np.testing.assert_array_equal(crop, np.broadcast_to(ref.paddlex_normalize(img[:1, :1, ::-1], MEAN, STD, True), crop.shape))
    udp = K.topdown_matrices(centers, scales, 48, 64, True)
    assert np.isinf(udp[0, 0, 0])
    crop = K.warp_crops([img], np.zeros(1, np.int32), udp, 48, 64, MEAN, STD, True, True)[0]
    np.testing.assert_array_equal(crop, expected_crop(img, udp[0], 48, 64))


def test_one_pixel_images():
    rng = np.random.default_rng(5)
    images = [rng.integers(0, 256, s, dtype=np.uint8) for s in [(1, 1, 3), (1, 1), (1, 5, 4), (6, 1, 3)]]
    centers, scales = random_boxes(rng, 8, 3, 3)
    matrices = K.topdown_matrices(centers, scales, 16, 24, False)
    index = np.arange(8, dtype=np.int32) % 4
    crops = K.warp_crops(images, index, matrices, 16, 24, MEAN, STD, True, True)
    for i in range(8):
        np.testing.assert_array_equal(crops[i], expected_crop(images[index[i]], matrices[i], 16, 24))


def test_threads_and_input_layouts_do_not_change_results():
    rng = np.random.default_rng(6)
    img = rng.integers(0, 256, (120, 90, 3), dtype=np.uint8)
    centers, scales = random_boxes(rng, 9, 90, 120)
    matrices = K.topdown_matrices(centers, scales, 48, 64, False)
    one = K.warp_crops([img], np.zeros(9, np.int32), matrices, 48, 64, MEAN, STD, True, True, 1)
    for threads in (0, 2, 4):
        np.testing.assert_array_equal(K.warp_crops([img], np.zeros(9, np.int32), matrices, 48, 64, MEAN, STD, True, True, threads), one)
    wide = np.zeros((120, 180, 3), np.uint8)
    wide[:, ::2] = img
    view = wide[:, ::2]
    np.testing.assert_array_equal(
        K.warp_crops([view], [0] * 9, matrices.astype(np.float32).astype(np.float64)[:, :, :], 48, 64, MEAN, STD, True, True),
        K.warp_crops([img], np.zeros(9, np.int64), matrices.astype(np.float32), 48, 64, MEAN, STD, True, True),
    )


def test_empty_inputs():
    assert K.warp_crops([], np.zeros(0, np.int32), np.zeros((0, 2, 3)), 48, 64, MEAN, STD, True, True).shape == (0, 3, 64, 48)
    assert K.topdown_matrices(np.zeros((0, 2)), np.zeros((0, 2)), 48, 64, False).shape == (0, 2, 3)


def test_bad_arguments_name_the_argument():
    img = np.zeros((10, 10, 3), np.uint8)
    m = np.zeros((1, 2, 3))
    with pytest.raises(ValueError, match="image_index"):
        K.warp_crops([img], np.array([1], np.int32), m, 8, 8, MEAN, STD, True, True)
    with pytest.raises(ValueError, match="image_index"):
        K.warp_crops([img], np.array([0.0]), m, 8, 8, MEAN, STD, True, True)
    with pytest.raises(ValueError, match="matrices"):
        K.warp_crops([img], np.array([0], np.int32), np.zeros((1, 3, 3)), 8, 8, MEAN, STD, True, True)
    with pytest.raises(ValueError, match=r"images\[0\]"):
        K.warp_crops([img.astype(np.float64)], np.array([0], np.int32), m, 8, 8, MEAN, STD, True, True)
    with pytest.raises(ValueError, match="out_h"):
        K.warp_crops([img], np.array([0], np.int32), m, 8, 0, MEAN, STD, True, True)
    with pytest.raises(ValueError, match="centers"):
        K.topdown_matrices(np.zeros((3, 3)), np.zeros((3, 2)), 8, 8, False)
    with pytest.raises(ValueError, match="scales"):
        K.topdown_matrices(np.zeros((3, 2)), np.zeros((4, 2)), 8, 8, False)


def test_releases_the_gil():
    img = np.random.default_rng(7).integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    matrices = K.topdown_matrices([[640, 360]] * 60, [[300, 400]] * 60, 192, 256, False)
    index = np.zeros(60, np.int32)
    ref.assert_releases_gil(lambda: K.warp_crops([img], index, matrices, 192, 256, MEAN, STD, True, True, 1))
