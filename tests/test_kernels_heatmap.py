"""decode_heatmaps / flip_back / average_flip against PaddleX's
KptPostProcess.get_final_preds and flip_back (rewritten in kernel_reference,
with the cv2 / NumPy calls PaddleX makes)."""
import numpy as np
import pytest

import kernel_reference as ref
from posepipe import _kernels as K

PAIRS = np.array([[1, 2], [3, 4], [5, 6], [7, 8], [9, 10], [11, 12], [13, 14], [15, 16]], np.int32)


def gaussian_maps(rng, n, k, h, w, noise=0.01):
    """Heatmaps like a pose model's: one blob per joint (some off the map), plus noise."""
    ys, xs = np.mgrid[0:h, 0:w]
    cx = rng.uniform(-2, w + 2, (n, k, 1, 1))
    cy = rng.uniform(-2, h + 2, (n, k, 1, 1))
    sigma = rng.uniform(0.7, 3, (n, k, 1, 1))
    peak = rng.uniform(0.05, 1, (n, k, 1, 1))
    maps = peak * np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2))
    return (maps + rng.normal(0, noise, maps.shape)).astype(np.float32)


def boxes(rng, n):
    centers = np.stack([rng.uniform(0, 1000, n), rng.uniform(0, 700, n)], 1).astype(np.float32)
    scales = np.stack([rng.uniform(5, 400, n), rng.uniform(5, 500, n)], 1).astype(np.float32)
    return centers, scales


def assert_same(got, expected):
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)  # NaN == NaN here


@pytest.mark.parametrize("use_dark", [True, False])
@pytest.mark.parametrize("hw", [(64, 48), (32, 24), (17, 9)])
def test_decode_matches_paddlex(use_dark, hw):
    rng = np.random.default_rng(hw[0] + use_dark)
    maps = gaussian_maps(rng, 12, 17, *hw)
    centers, scales = boxes(rng, 12)
    got = K.decode_heatmaps(maps, centers, scales, use_dark, 3)
    assert_same(got, ref.paddlex_final_preds(maps, centers, scales, use_dark))


@pytest.mark.parametrize("kernel", [5, 7])
def test_larger_blur_kernels(kernel):
    rng = np.random.default_rng(kernel)
    maps = gaussian_maps(rng, 4, 17, 64, 48)
    centers, scales = boxes(rng, 4)
    assert_same(K.decode_heatmaps(maps, centers, scales, True, kernel), ref.paddlex_final_preds(maps, centers, scales, True, kernel))


def edge_case_maps(h=16, w=12):
    maps = np.zeros((14, h, w), np.float32)
    maps[0, 0, 0] = 1  # corner peak
    maps[1, h - 1, w - 1] = 1
    maps[2, h // 2, 0] = 1  # edge peaks: DARK's interior test is strict (1 < x < W-2)
    maps[3, 2, 2] = 1  # first position DARK refines
    maps[4, h - 3, w - 3] = 1  # last position DARK refines
    maps[5, h - 2, w - 2] = 1  # just outside it
    maps[6] = 0.5  # flat: argmax 0
    maps[7] = -1  # all negative: masked to (0, 0)
    # maps[8] stays all zero: PaddleX's blur rescale is 0/0 there
    maps[9, 5, 5] = np.nan  # any NaN: maxval NaN, coordinates (0, 0)
    maps[10, 7, 6], maps[10, 9, 3] = 1, 1  # tied maxima: the first wins
    maps[11] = -5
    maps[11, 7, 6] = 1  # a peak whose blur is negative everywhere
    maps[12, 6:9, 5:8] = 1  # a plateau: zero gradient, singular Hessian
    maps[13, 7, 6], maps[13, 7, 7] = 1, 1  # two-pixel ridge
    return maps


@pytest.mark.parametrize("use_dark", [True, False])
def test_edge_cases(use_dark):
    maps = edge_case_maps()[None]
    centers, scales = np.array([[50, 60]], np.float32), np.array([[40, 80]], np.float32)
    got = K.decode_heatmaps(maps, centers, scales, use_dark)
    expected = ref.paddlex_final_preds(maps, centers, scales, use_dark)
    assert_same(got, expected)
    corner = ref.paddlex_affine(centers[0], scales[0], [12, 16], inv=True)[:, 2].astype(np.float32)
    for j in (6, 7, 8, 9):  # decoded at heatmap (0, 0)
        np.testing.assert_array_equal(got[0, j, :2], corner)
    assert np.isnan(got[0, 9, 2]) and got[0, 8, 2] == 0 and got[0, 7, 2] == -1


def test_tiny_maps():
    rng = np.random.default_rng(3)
    for h, w in [(1, 1), (1, 7), (5, 1), (4, 4), (5, 5), (6, 6)]:
        maps = rng.normal(size=(3, 5, h, w)).astype(np.float32)
        centers, scales = boxes(rng, 3)
        for use_dark in (True, False):
            assert_same(K.decode_heatmaps(maps, centers, scales, use_dark), ref.paddlex_final_preds(maps, centers, scales, use_dark))


def test_input_is_not_modified():
    maps = gaussian_maps(np.random.default_rng(4), 2, 17, 64, 48)
    before = maps.copy()
    K.decode_heatmaps(maps, np.ones((2, 2)), np.ones((2, 2)) * 100)
    np.testing.assert_array_equal(maps, before)


def test_threads_dtypes_and_layouts_do_not_change_results():
    rng = np.random.default_rng(5)
    maps = gaussian_maps(rng, 7, 17, 32, 24)
    centers, scales = boxes(rng, 7)
    one = K.decode_heatmaps(maps, centers, scales, True, 3, 1)
    for threads in (0, 2, 3):
        assert_same(K.decode_heatmaps(maps, centers, scales, True, 3, threads), one)
    padded = np.zeros((7, 17, 32, 48), np.float32)
    padded[..., ::2] = maps
    assert_same(K.decode_heatmaps(padded[..., ::2], centers.astype(np.float64), scales.tolist()), one)


def test_empty_inputs():
    assert K.decode_heatmaps(np.zeros((0, 17, 64, 48), np.float32), np.zeros((0, 2)), np.zeros((0, 2))).shape == (0, 17, 3)
    assert K.decode_heatmaps(np.zeros((2, 0, 64, 48), np.float32), np.zeros((2, 2)), np.ones((2, 2))).shape == (2, 0, 3)
    assert K.flip_back(np.zeros((0, 17, 8, 6), np.float32), PAIRS, True).shape == (0, 17, 8, 6)


def test_decode_bad_arguments_name_the_argument():
    maps = np.zeros((2, 17, 8, 6), np.float32)
    with pytest.raises(ValueError, match="heatmaps"):
        K.decode_heatmaps(maps.astype(np.float64), np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="heatmaps"):
        K.decode_heatmaps(maps[0], np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="heatmaps"):
        K.decode_heatmaps(np.zeros((2, 17, 0, 6), np.float32), np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="centers"):
        K.decode_heatmaps(maps, np.zeros((3, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="scales"):
        K.decode_heatmaps(maps, np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="blur_kernel"):
        K.decode_heatmaps(maps, np.zeros((2, 2)), np.zeros((2, 2)), True, 4)


@pytest.mark.parametrize("shift", [False, True])
def test_flip_back_and_average(shift):
    rng = np.random.default_rng(6)
    maps = rng.normal(size=(3, 17, 8, 6)).astype(np.float32)
    flipped = rng.normal(size=(3, 17, 8, 6)).astype(np.float32)
    expected = ref.flip_back(flipped, PAIRS, shift)
    np.testing.assert_array_equal(K.flip_back(flipped, PAIRS, shift), expected)
    np.testing.assert_array_equal(K.average_flip(maps, flipped, PAIRS, shift), (maps + expected) * 0.5)
    before = flipped.copy()
    K.average_flip(maps, flipped, PAIRS, shift, 2)
    np.testing.assert_array_equal(flipped, before)


def test_flip_pairs_apply_in_order_and_width_one():
    rng = np.random.default_rng(7)
    flipped = rng.normal(size=(2, 4, 5, 1)).astype(np.float32)
    pairs = np.array([[0, 1], [1, 2], [3, 3]], np.int64)  # chained swaps, a self-pair
    for shift in (False, True):
        np.testing.assert_array_equal(K.flip_back(flipped, pairs, shift), ref.flip_back(flipped, pairs, shift))
    np.testing.assert_array_equal(K.flip_back(flipped, np.zeros((0, 2), np.int32), False), flipped)


def test_flip_bad_arguments_name_the_argument():
    maps = np.zeros((2, 17, 8, 6), np.float32)
    with pytest.raises(ValueError, match="flip_pairs"):
        K.flip_back(maps, np.array([[1, 17]]), False)
    with pytest.raises(ValueError, match="flip_pairs"):
        K.flip_back(maps, np.array([1, 2]), False)
    with pytest.raises(ValueError, match="heatmaps_flipped"):
        K.average_flip(maps, maps[:, :, :, :5], PAIRS, True)
    with pytest.raises(ValueError, match="heatmaps"):
        K.average_flip(maps.astype(np.float16), maps, PAIRS, True)


def test_releases_the_gil():
    rng = np.random.default_rng(8)
    maps = gaussian_maps(rng, 500, 17, 64, 48)
    centers, scales = boxes(rng, 500)
    ref.assert_releases_gil(lambda: K.decode_heatmaps(maps, centers, scales, True, 3, 1))
