"""resize_normalize / resize_normalize_batch against PaddleX's detector
preprocessing (cv2.cvtColor + cv2.resize + Normalize + HWC->CHW)."""
import platform

import cv2
import numpy as np
import pytest

import kernel_reference as ref
from posepipe import _kernels as K

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


def paddlex_input(img, out_h, out_w, interp, to_rgb, is_scale=True, mean=MEAN, std=STD, resize=None):
    src = ref.paddlex_order(img, to_rgb)
    resized = (resize or (lambda s: cv2.resize(s, (out_w, out_h), interpolation=interp)))(src)
    return ref.paddlex_normalize(resized, mean, std, is_scale)


def random_image(rng, h, w, channels):
    shape = (h, w) if channels == 1 and rng.random() < 0.5 else (h, w, channels)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def random_cases(seed, count, max_side=70):
    rng = np.random.default_rng(seed)
    for i in range(count):
        h, w = (int(v) for v in rng.integers(1, max_side, 2))
        oh, ow = (int(v) for v in rng.integers(1, max_side + 30, 2))
        if i % 6 == 0:  # exact integer downscales take OpenCV's special paths
            oh, ow = max(1, h // 2), max(1, w // 2)
        elif i % 6 == 1:
            oh, ow = max(1, h // 3), max(1, w // 3)
        yield random_image(rng, h, w, [1, 3, 4][i % 3]), oh, ow, bool(i % 2)


@pytest.fixture
def no_ipp():
    """OpenCV's own algorithms (what cv2 runs where IPP is absent)."""
    cv2.ipp.setUseIPP(False)
    yield
    cv2.ipp.setUseIPP(True)


@pytest.mark.parametrize("interp", [0, 1, 3])
def test_matches_paddlex_preprocessing_exactly(interp):
    for img, oh, ow, to_rgb in random_cases(interp, 120):
        got, _, _ = K.resize_normalize(img, oh, ow, interp, MEAN, STD, True, to_rgb)
        np.testing.assert_array_equal(got, paddlex_input(img, oh, ow, interp, to_rgb), err_msg=f"{img.shape}->{oh}x{ow}")


def test_cubic_opencv_matches_cv2_without_ipp_exactly(no_ipp):
    for img, oh, ow, to_rgb in random_cases(7, 150):
        got, _, _ = K.resize_normalize(img, oh, ow, 2, MEAN, STD, True, to_rgb, cubic="opencv")
        np.testing.assert_array_equal(got, paddlex_input(img, oh, ow, 2, to_rgb), err_msg=f"{img.shape}->{oh}x{ow}")


def test_cubic_ipp_mode_is_the_documented_model():
    for img, oh, ow, to_rgb in random_cases(8, 80):
        got, _, _ = K.resize_normalize(img, oh, ow, 2, MEAN, STD, True, to_rgb, cubic="ipp")
        src = ref.paddlex_order(img, to_rgb)
        model = ref.resize_cubic_ipp_model if min(src.shape[:2]) >= 4 else ref.resize_cubic_opencv
        expected = paddlex_input(img, oh, ow, 2, to_rgb, resize=lambda s: model(s, oh, ow))
        np.testing.assert_array_equal(got, expected, err_msg=f"{img.shape}->{oh}x{ow}")


@pytest.mark.parametrize("shape,out", [((427, 640, 3), (416, 416)), ((480, 640, 3), (640, 640)), ((1080, 1920, 3), (640, 640))])
def test_cubic_default_against_default_cv2(shape, out):
    """The default cubic reproduces what cv2.resize gives PaddleX on this machine:
    IPP's resize on x86 wheels, matched to within one grey level on a tiny
    fraction of pixels (IPP is closed source and even changes between IPP
    releases); OpenCV's own algorithm elsewhere, matched exactly."""
    img = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    got, _, _ = K.resize_normalize(img, *out, 2, [0, 0, 0], [1, 1, 1], False, False)
    cv = cv2.resize(img, out[::-1], interpolation=cv2.INTER_CUBIC).transpose(2, 0, 1).astype(np.float32)
    diff = np.abs(got - cv)
    if X86 and cv2.ipp.useIPP():
        assert diff.max() <= 1
        assert (diff > 0).mean() < 1e-4
    else:
        assert diff.max() == 0


def test_numpy_references_agree_with_cv2(no_ipp):
    """The NumPy spell-outs of OpenCV's fixed-point resizers are themselves exact."""
    rng = np.random.default_rng(2)
    for _ in range(60):
        h, w, oh, ow = (int(v) for v in rng.integers(1, 50, 4))
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        np.testing.assert_array_equal(ref.resize_cubic_opencv(img, oh, ow), cv2.resize(img, (ow, oh), interpolation=2))
        np.testing.assert_array_equal(ref.resize_nearest(img, oh, ow), cv2.resize(img, (ow, oh), interpolation=0))
        if (h, w) != (2 * oh, 2 * ow):
            np.testing.assert_array_equal(ref.resize_linear(img, oh, ow), cv2.resize(img, (ow, oh), interpolation=1))


@pytest.mark.parametrize("interp", [0, 1, 2, 3])
@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 9, 3), (9, 1, 3), (1, 1), (2, 2, 4), (3, 5)])
def test_tiny_images(interp, shape, no_ipp):
    img = np.random.default_rng(3).integers(0, 256, shape, dtype=np.uint8)
    for oh, ow in [(1, 1), (1, 7), (7, 1), (4, 6), (13, 11)]:
        got, sy, sx = K.resize_normalize(img, oh, ow, interp, MEAN, STD, True, True, cubic="opencv")
        np.testing.assert_array_equal(got, paddlex_input(img, oh, ow, interp, True))
        assert (sy, sx) == (oh / shape[0], ow / shape[1])


def test_same_size_is_a_copy():
    img = np.random.default_rng(4).integers(0, 256, (37, 23, 3), dtype=np.uint8)
    for interp in range(4):
        got, sy, sx = K.resize_normalize(img, 37, 23, interp, MEAN, STD, True, False)
        np.testing.assert_array_equal(got, ref.paddlex_normalize(img, MEAN, STD, True))
        assert sy == sx == 1.0


def test_normalization_options():
    img = np.random.default_rng(5).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    mean, std = [10.0, 120.5, 3.0], [58.0, 1.0, 0.3]
    for is_scale in (True, False):
        got, _, _ = K.resize_normalize(img, 11, 17, 1, mean, std, is_scale, True)
        np.testing.assert_array_equal(got, paddlex_input(img, 11, 17, 1, True, is_scale, mean, std))


def test_keep_ratio_places_image_top_left_on_zero_canvas():
    rng = np.random.default_rng(6)
    for h, w in [(427, 640), (640, 427), (100, 100), (3, 500), (37, 41)]:
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        rh, rw = ref.keep_ratio_size(h, w, 320, 320)
        got, sy, sx = K.resize_normalize(img, 320, 320, 2, MEAN, STD, True, True, keep_ratio=True, cubic="ipp")
        expected = K.resize_normalize(img, rh, rw, 2, MEAN, STD, True, True, cubic="ipp")[0]
        np.testing.assert_array_equal(got[:, :rh, :rw], expected)
        assert not got[:, rh:, :].any() and not got[:, :, rw:].any()
        assert (sy, sx) == (rh / h, rw / w)


def test_keep_ratio_rounds_half_to_even():
    # 10x5 into 5x5: scale 0.5, width 2.5 -> 2 with Python's round (3 if rounded half up)
    assert ref.keep_ratio_size(10, 5, 5, 5) == (5, 2)
    got, sy, sx = K.resize_normalize(np.zeros((10, 5, 3), np.uint8), 5, 5, 1, MEAN, STD, True, True, keep_ratio=True)
    assert (sy, sx) == (0.5, 0.4)
    # a side that rounds to 0 is kept at 1 pixel (cv2 itself would refuse)
    _, sy, sx = K.resize_normalize(np.zeros((125, 50, 3), np.uint8), 1, 1, 1, MEAN, STD, True, True, keep_ratio=True)
    assert (sy, sx) == (1 / 125, 1 / 50)


def test_keep_ratio_canvas_too_small():
    img = np.zeros((100, 50, 3), np.uint8)  # keep_ratio to (80, 160) gives 160 x 80: taller than 80
    with pytest.raises(ValueError, match="canvas"):
        K.resize_normalize(img, 80, 160, 1, MEAN, STD, True, True, keep_ratio=True)


def test_batch_matches_single_images_and_any_thread_count():
    rng = np.random.default_rng(7)
    images = [random_image(rng, int(h), int(w), c) for (h, w), c in zip(rng.integers(1, 90, (6, 2)), [3, 1, 4, 3, 3, 1])]
    for keep_ratio in (False, True):
        expected = [K.resize_normalize(im, 96, 96, 2, MEAN, STD, True, True, keep_ratio, num_threads=1) for im in images]
        for threads in (0, 1, 2, 5):
            batch, scales = K.resize_normalize_batch(images, 96, 96, 2, MEAN, STD, True, True, keep_ratio, threads)
            assert batch.shape == (6, 3, 96, 96) and scales.dtype == np.float32
            for i, (img, sy, sx) in enumerate(expected):
                np.testing.assert_array_equal(batch[i], img)
                np.testing.assert_array_equal(scales[i], np.float32([sy, sx]))


def test_single_image_threads_split_rows_identically():
    img = np.random.default_rng(8).integers(0, 256, (300, 200, 3), dtype=np.uint8)
    for interp in range(4):
        one = K.resize_normalize(img, 257, 131, interp, MEAN, STD, True, True, num_threads=1)[0]
        for threads in (2, 3, 7):
            np.testing.assert_array_equal(K.resize_normalize(img, 257, 131, interp, MEAN, STD, True, True, num_threads=threads)[0], one)


def test_empty_batch():
    batch, scales = K.resize_normalize_batch([], 64, 32, 2, MEAN, STD, True, True)
    assert batch.shape == (0, 3, 64, 32) and scales.shape == (0, 2)


def test_out_buffer_is_filled_in_place():
    img = np.random.default_rng(9).integers(0, 256, (50, 60, 3), dtype=np.uint8)
    buf = np.full((3, 40, 30), np.nan, np.float32)
    got, _, _ = K.resize_normalize(img, 40, 30, 1, MEAN, STD, True, True, out=buf)
    assert got is buf or np.shares_memory(got, buf)
    np.testing.assert_array_equal(buf, paddlex_input(img, 40, 30, 1, True))
    with pytest.raises(ValueError, match="out"):
        K.resize_normalize(img, 40, 30, 1, MEAN, STD, True, True, out=np.zeros((3, 40, 31), np.float32))
    with pytest.raises(ValueError, match="out"):
        K.resize_normalize(img, 40, 30, 1, MEAN, STD, True, True, out=np.zeros((3, 40, 30), np.float64))
    with pytest.raises(ValueError, match="out"):
        K.resize_normalize(img, 40, 30, 1, MEAN, STD, True, True, out=np.zeros((3, 40, 60), np.float32)[:, :, ::2])


def test_non_contiguous_images():
    base = np.random.default_rng(10).integers(0, 256, (80, 120, 4), dtype=np.uint8)
    view = base[::2, 10:100:3, 1:]
    assert not view.flags.c_contiguous
    got = K.resize_normalize(view, 33, 21, 2, MEAN, STD, True, True)[0]
    np.testing.assert_array_equal(got, K.resize_normalize(np.ascontiguousarray(view), 33, 21, 2, MEAN, STD, True, True)[0])


def test_bad_arguments_name_the_argument():
    img = np.zeros((10, 10, 3), np.uint8)
    cases = [
        (dict(image=img.astype(np.float32)), "image"),
        (dict(image=np.zeros((10, 10, 2), np.uint8)), "image"),
        (dict(image=np.zeros((10,), np.uint8)), "image"),
        (dict(image=np.zeros((0, 10, 3), np.uint8)), "image"),
        (dict(image="not an image"), "image"),
        (dict(interp=5), "interp"),
        (dict(mean=[0.5, 0.5]), "mean"),
        (dict(std=[1, 1, 1, 1]), "std"),
        (dict(out_h=0), "out_h"),
        (dict(out_w=-3), "out_w"),
        (dict(cubic="lanczos"), "cubic"),
    ]
    for override, name in cases:
        args = dict(image=img, out_h=8, out_w=8, interp=1, mean=MEAN, std=STD, is_scale=True, to_rgb=True)
        args.update(override)
        with pytest.raises(ValueError, match=name):
            K.resize_normalize(**args)
    with pytest.raises(ValueError, match=r"images\[1\]"):
        K.resize_normalize_batch([img, img.astype(np.int16)], 8, 8, 1, MEAN, STD, True, True)
    with pytest.raises(ValueError, match="images"):
        K.resize_normalize_batch(np.stack([img, img]), 8, 8, 1, MEAN, STD, True, True)


def test_releases_the_gil():
    img = np.random.default_rng(11).integers(0, 256, (1500, 1500, 3), dtype=np.uint8)
    ref.assert_releases_gil(lambda: K.resize_normalize(img, 1400, 1400, 2, MEAN, STD, True, True, num_threads=1))
