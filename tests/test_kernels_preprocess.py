"""Detector preprocessing: the normalize_batch kernel against PaddleX's
NormalizeImage + Permute, and Detector.preprocess (cv2.cvtColor + cv2.resize +
normalize_batch) against PaddleX's whole chain."""
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

import kernel_reference as ref
from posepipe import _kernels as K
from posepipe.detector import Detector, keep_ratio_size
from posepipe.models.spec import DetectorPreprocess, ModelSpec

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def random_image(rng, h, w, channels=3):
    shape = (h, w) if channels == 1 and rng.random() < 0.5 else (h, w, channels)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def on_canvas(planes, out_h, out_w):
    canvas = np.zeros((3, out_h, out_w), np.float32)
    canvas[:, : planes.shape[1], : planes.shape[2]] = planes
    return canvas


# --------------------------------------------------------------------------- normalize_batch


def test_normalize_batch_matches_paddlex_normalize_exactly():
    rng = np.random.default_rng(0)
    for i in range(60):
        h, w = (int(v) for v in rng.integers(1, 70, 2))
        out_h, out_w = h + int(rng.integers(0, 20)), w + int(rng.integers(0, 20))
        img = random_image(rng, h, w)
        is_scale, to_rgb = bool(i % 2), bool(i // 2 % 2)
        mean, std = (MEAN, STD) if is_scale else ([10.0, 120.5, 3.0], [58.0, 1.0, 0.3])
        got = K.normalize_batch([img], out_h, out_w, mean, std, is_scale, to_rgb)
        source = img[:, :, ::-1] if to_rgb else img  # to_rgb: BGR input, plane 0 is R
        expected = on_canvas(ref.paddlex_normalize(source, mean, std, is_scale), out_h, out_w)
        assert got.shape == (1, 3, out_h, out_w) and got.dtype == np.float32
        np.testing.assert_array_equal(got[0], expected, err_msg=f"{img.shape} on {out_h}x{out_w}")


def test_padding_is_zero_whatever_the_normalization():
    img = np.full((5, 7, 3), 200, np.uint8)
    got = K.normalize_batch([img], 9, 12, [100.0, 100.0, 100.0], [2.0, 2.0, 2.0], False)[0]
    assert (got[:, :5, :7] == 50).all()
    assert not got[:, 5:, :].any() and not got[:, :, 7:].any()


def test_batch_equals_single_images_for_any_thread_count():
    rng = np.random.default_rng(1)
    images = [random_image(rng, int(h), int(w)) for h, w in rng.integers(1, 96, (6, 2))]
    expected = [K.normalize_batch([im], 96, 96, MEAN, STD, True, True, num_threads=1)[0] for im in images]
    for threads in (0, 1, 2, 5):
        batch = K.normalize_batch(images, 96, 96, MEAN, STD, True, True, threads)
        assert batch.shape == (6, 3, 96, 96)
        for i, one in enumerate(expected):
            np.testing.assert_array_equal(batch[i], one)


def test_single_image_row_bands_are_seamless():
    img = np.random.default_rng(2).integers(0, 256, (257, 131, 3), dtype=np.uint8)
    one = K.normalize_batch([img], 300, 140, MEAN, STD, True, True, num_threads=1)
    for threads in (2, 3, 7):
        np.testing.assert_array_equal(K.normalize_batch([img], 300, 140, MEAN, STD, True, True, threads), one)


def test_empty_batch_and_non_contiguous_images():
    assert K.normalize_batch([], 64, 32, MEAN, STD, True).shape == (0, 3, 64, 32)
    view = np.random.default_rng(3).integers(0, 256, (80, 120, 4), dtype=np.uint8)[::2, 10:100:3, 1:]
    assert not view.flags.c_contiguous
    contiguous = np.ascontiguousarray(view)
    np.testing.assert_array_equal(
        K.normalize_batch([view], 40, 40, MEAN, STD, True), K.normalize_batch([contiguous], 40, 40, MEAN, STD, True)
    )


def test_normalize_batch_bad_arguments_name_the_argument():
    img = np.zeros((10, 10, 3), np.uint8)
    cases = [
        (dict(images=[img.astype(np.float32)]), r"images\[0\].*uint8"),
        (dict(images=[img, np.zeros((10, 10), np.uint8)]), r"images\[1\].*HxWx3"),
        (dict(images=[np.zeros((10, 10, 4), np.uint8)]), r"images\[0\].*HxWx3"),
        (dict(images=[np.zeros((0, 10, 3), np.uint8)]), r"images\[0\]"),
        (dict(images=["not an image"]), r"images\[0\]"),
        (dict(images=[img, np.zeros((13, 10, 3), np.uint8)]), r"images\[1\].*13x10.*canvas"),
        (dict(images=[np.zeros((10, 13, 3), np.uint8)]), r"images\[0\].*canvas"),
        (dict(images=np.stack([img, img])), "images"),
        (dict(mean=[0.5, 0.5]), "mean"),
        (dict(std=[1, 1, 1, 1]), "std"),
        (dict(out_h=0), "out_h"),
        (dict(out_w=-3), "out_w"),
    ]
    for override, match in cases:
        args = dict(images=[img], out_h=12, out_w=12, mean=MEAN, std=STD, is_scale=True)
        args.update(override)
        with pytest.raises(ValueError, match=match):
            K.normalize_batch(**args)


def test_releases_the_gil():
    images = [np.random.default_rng(4).integers(0, 256, (1500, 1500, 3), dtype=np.uint8)] * 2
    ref.assert_releases_gil(lambda: K.normalize_batch(images, 1500, 1500, MEAN, STD, True, num_threads=1))


# --------------------------------------------------------------------------- keep_ratio size


def paddlex_keep_ratio_size(h, w, target_h, target_w):
    """PaddleX's Resize(keep_ratio=True), written from its code."""
    im_size_min, im_size_max = min(h, w), max(h, w)
    target_size_min, target_size_max = min(target_h, target_w), max(target_h, target_w)
    im_scale = min(target_size_min / im_size_min, target_size_max / im_size_max)
    return round(im_scale * h), round(im_scale * w)


def test_keep_ratio_size_matches_paddlex():
    rng = np.random.default_rng(5)
    for i in range(20000):
        h, w = (int(v) for v in rng.integers(1, 3000 if i % 2 else 60, 2))
        th, tw = (int(v) for v in rng.integers(1, 1200 if i % 3 else 40, 2))
        expected = paddlex_keep_ratio_size(h, w, th, tw)
        assert keep_ratio_size(h, w, th, tw) == (max(1, expected[0]), max(1, expected[1])), (h, w, th, tw)


def test_keep_ratio_size_rounds_half_to_even_and_keeps_a_pixel():
    # 10x5 into 5x5: scale 0.5, width 2.5 -> 2 with Python's round (3 if rounded half up)
    assert keep_ratio_size(10, 5, 5, 5) == (5, 2)
    # a side that rounds to 0 is kept at 1 pixel (cv2.resize would refuse 0)
    assert keep_ratio_size(125, 50, 1, 1) == (1, 1)


# --------------------------------------------------------------------------- Detector.preprocess


def detector(target_hw=(96, 128), keep_ratio=False, interp=2, to_rgb=True):
    pre = DetectorPreprocess(tuple(target_hw), keep_ratio, interp, tuple(MEAN), tuple(STD), True, to_rgb)
    spec = ModelSpec(
        model_dir=Path("det"), model_name="PP-YOLOE-S_human", arch="YOLO", draw_threshold=0.5, label_list=("person",),
        program_path=Path("det/inference.json"), params_path=Path("det/inference.pdiparams"), detector=pre,
        keypoint=None, has_leaky_relu=False,
    )
    backend = SimpleNamespace(input_names=["im_shape", "image", "scale_factor"])
    return Detector(spec, backend)


def paddlex_detector_input(img, det):
    """PaddleX's chain for one image: read as RGB (cv2.cvtColor), Resize
    (cv2.resize, keep_ratio size), NormalizeImage, Permute; then our canvas."""
    p = det.preprocess_spec
    src = ref.paddlex_order(img, p.to_rgb)
    h, w = src.shape[:2]
    rh, rw = paddlex_keep_ratio_size(h, w, *p.target_hw) if p.keep_ratio else p.target_hw
    resized = cv2.resize(src, (rw, rh), interpolation=p.interp)
    planes = ref.paddlex_normalize(resized, p.mean, p.std, p.is_scale)
    return on_canvas(planes, *p.target_hw), np.float32([rh / h, rw / w])


@pytest.mark.parametrize("interp", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("keep_ratio", [False, True])
def test_detector_preprocess_matches_paddlex_chain_exactly(interp, keep_ratio):
    rng = np.random.default_rng(interp)
    for to_rgb in (True, False):
        det = detector((96, 128), keep_ratio, interp, to_rgb)
        sizes = [(int(h), int(w)) for h, w in rng.integers(1, 200, (9, 2))] + [(192, 256), (48, 64), (96, 128)]
        images = [random_image(rng, h, w, [1, 3, 4][i % 3]) for i, (h, w) in enumerate(sizes)]
        if keep_ratio:  # the 96x128 canvas cannot hold a tall image at 128 rows
            images = [im for im in images if keep_ratio_size(*im.shape[:2], 96, 128)[0] <= 96]
        feeds = det.preprocess(images)
        assert list(feeds) == ["im_shape", "image", "scale_factor"]
        assert feeds["image"].shape == (len(images), 3, 96, 128) and feeds["image"].dtype == np.float32
        np.testing.assert_array_equal(feeds["im_shape"], np.float32([[96, 128]] * len(images)))
        for i, img in enumerate(images):
            expected, scale = paddlex_detector_input(img, det)
            np.testing.assert_array_equal(feeds["image"][i], expected, err_msg=f"{img.shape} to_rgb={to_rgb}")
            np.testing.assert_array_equal(feeds["scale_factor"][i], scale)
        assert feeds["scale_factor"].dtype == np.float32


def test_detector_preprocess_on_a_photo(shared_dir):
    img = cv2.imread(str(shared_dir / "photos" / "000000087038.jpg"))
    for interp in range(4):
        det = detector((416, 416), False, interp)
        for threads in (1, 2):
            det.num_threads = threads
            got = det.preprocess([img])
            expected, scale = paddlex_detector_input(img, det)
            np.testing.assert_array_equal(got["image"][0], expected)
            np.testing.assert_array_equal(got["scale_factor"][0], scale)


def test_detector_preprocess_grey_and_bgra_are_converted_like_bgr():
    rng = np.random.default_rng(6)
    grey = rng.integers(0, 256, (50, 70), dtype=np.uint8)
    bgra = rng.integers(0, 256, (50, 70, 4), dtype=np.uint8)
    det = detector((64, 64), True, 2)
    grey_bgr = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    view = bgra[::-1, ::2, :]  # not contiguous
    same = [(grey, grey_bgr), (grey[:, :, None], grey_bgr), (bgra, np.ascontiguousarray(bgra[:, :, :3])),
            (view, np.ascontiguousarray(view[:, :, :3]))]
    for img, bgr in same:
        got, want = det.preprocess([img]), det.preprocess([bgr])
        np.testing.assert_array_equal(got["image"], want["image"])
        np.testing.assert_array_equal(got["scale_factor"], want["scale_factor"])


def test_detector_preprocess_empty_batch():
    feeds = detector().preprocess([])
    assert feeds["image"].shape == (0, 3, 96, 128) and feeds["scale_factor"].shape == (0, 2)


def test_detector_preprocess_bad_images_name_the_image():
    det = detector((80, 160), True)
    ok = np.zeros((20, 20, 3), np.uint8)
    cases = [
        (np.zeros((20, 20, 3), np.float32), r"images\[1\].*uint8"),
        (np.zeros((20, 20, 2), np.uint8), r"images\[1\].*shape"),
        (np.zeros((20,), np.uint8), r"images\[1\].*shape"),
        (np.zeros((0, 20, 3), np.uint8), r"images\[1\].*shape"),
        # keep_ratio to (80, 160) gives 100x50 -> 160x80: taller than the 80-row canvas
        (np.zeros((100, 50, 3), np.uint8), r"images\[1\].*canvas"),
    ]
    for bad, match in cases:
        with pytest.raises(ValueError, match=match):
            det.preprocess([ok, bad])
