"""multiclass_nms against Paddle's multiclass_nms3 semantics (a NumPy rewrite,
and Paddle's own operator when paddle is importable)."""
import numpy as np
import pytest

import kernel_reference as ref
from posepipe import _kernels as K


def random_problem(rng, n, m, c, grid=False):
    xy = rng.uniform(0, 100, (n, m, 2))
    wh = rng.uniform(0, 40, (n, m, 2))
    if grid:  # coincident boxes and tied scores
        xy, wh = np.round(xy / 10) * 10, np.round(wh / 10) * 10
    boxes = np.concatenate([xy, xy + wh], -1).astype(np.float32)
    scores = rng.uniform(0, 1, (n, c, m)).astype(np.float32)
    if grid:
        scores = (np.round(scores * 8) / 8).astype(np.float32)
    return boxes, scores


def configurations(seed, count):
    rng = np.random.default_rng(seed)
    for i in range(count):
        boxes, scores = random_problem(rng, int(rng.integers(1, 4)), int(rng.integers(1, 120)), int(rng.integers(1, 4)), i % 2 == 0)
        if i % 5 == 0:
            boxes[:, ::3, 2:] = boxes[:, ::3, :2]  # empty boxes
        settings = dict(
            score_threshold=float(rng.choice([0.01, 0.3, 0.8])),
            nms_top_k=int(rng.choice([-1, 5, 1000])),
            keep_top_k=int(rng.choice([-1, 3, 100])),
            iou_threshold=float(rng.choice([0.3, 0.6])),
            normalized=bool(i % 3),
            background_label=int(rng.choice([-1, 0])),
            nms_eta=float(rng.choice([1.0, 1.0, 0.8])),
        )
        yield boxes, scores, settings


def test_matches_reference():
    for boxes, scores, settings in configurations(0, 150):
        rows, counts = K.multiclass_nms(boxes, scores, **settings)
        exp_rows, exp_counts = ref.multiclass_nms3(boxes, scores, **settings)
        np.testing.assert_array_equal(counts, exp_counts, err_msg=str(settings))
        np.testing.assert_array_equal(rows, exp_rows, err_msg=str(settings))
        assert rows.dtype == np.float32 and counts.dtype == np.int32


def test_matches_paddle_operator():
    import paddle
    from paddle import _C_ops

    paddle.set_device("cpu")
    for boxes, scores, s in configurations(1, 80):
        out, _, num = _C_ops.multiclass_nms3(
            paddle.to_tensor(boxes), paddle.to_tensor(scores), None, s["score_threshold"], s["nms_top_k"],
            s["keep_top_k"], s["iou_threshold"], s["normalized"], s["nms_eta"], s["background_label"],
        )
        rows, counts = K.multiclass_nms(boxes, scores, **s)
        np.testing.assert_array_equal(counts, num.numpy(), err_msg=str(s))
        np.testing.assert_array_equal(rows, out.numpy().reshape(-1, 6), err_msg=str(s))


def test_output_is_grouped_by_class_then_score():
    boxes = np.array([[[0, 0, 10, 10], [50, 50, 60, 60], [100, 100, 110, 110]]], np.float32)
    scores = np.array([[[0.2, 0.9, 0.5], [0.95, 0.1, 0.6]]], np.float32)
    rows, counts = K.multiclass_nms(boxes, scores, 0.15, -1, 3, 0.5)
    # top 3 overall are 0.95 (c1), 0.9 (c0), 0.6 (c1); then class 0 first.
    np.testing.assert_array_equal(rows[:, :2], np.float32([[0, 0.9], [1, 0.95], [1, 0.6]]))
    assert counts.tolist() == [3]


def test_ties_keep_index_order_and_suppress_duplicates():
    boxes = np.array([[[0, 0, 10, 10]] * 3 + [[20, 20, 30, 30]]], np.float32)
    scores = np.full((1, 1, 4), 0.5, np.float32)
    rows, counts = K.multiclass_nms(boxes, scores, 0.1, -1, -1, 0.5)
    np.testing.assert_array_equal(rows[:, 2:], boxes[0, [0, 3]])
    assert counts.tolist() == [2]


def test_identical_empty_boxes_suppress_each_other():
    """Two empty boxes at the same point: 0/0 overlap, NaN, not <= threshold."""
    boxes = np.array([[[5, 5, 5, 5], [5, 5, 5, 5], [7, 7, 7, 7]]], np.float32)
    scores = np.array([[[0.9, 0.8, 0.7]]], np.float32)
    rows, _ = K.multiclass_nms(boxes, scores, 0.1, -1, -1, 0.5)
    np.testing.assert_array_equal(rows[:, 1], np.float32([0.9, 0.7]))


def test_pixel_convention_when_not_normalized():
    # IoU 45/117 = 0.385 without the +1 pixel, 60/140 = 0.429 with it.
    boxes = np.array([[[0, 0, 9, 9], [4, 0, 13, 9]]], np.float32)
    scores = np.array([[[0.9, 0.8]]], np.float32)
    assert len(K.multiclass_nms(boxes, scores, 0.1, -1, -1, 0.4, normalized=True)[0]) == 2
    assert len(K.multiclass_nms(boxes, scores, 0.1, -1, -1, 0.4, normalized=False)[0]) == 1


def test_empty_inputs_and_nothing_kept():
    for n, m, c in [(0, 5, 1), (2, 0, 1), (1, 4, 0)]:
        rows, counts = K.multiclass_nms(np.zeros((n, m, 4), np.float32), np.zeros((n, c, m), np.float32), 0.1, 10, 10, 0.5)
        assert rows.shape == (0, 6) and counts.tolist() == [0] * n
    rows, counts = K.multiclass_nms(np.ones((2, 3, 4), np.float32), np.full((2, 1, 3), 0.05, np.float32), 0.1, 10, 10, 0.5)
    assert rows.shape == (0, 6) and counts.tolist() == [0, 0]


def test_nan_scores_are_never_selected():
    boxes = np.array([[[0, 0, 1, 1], [2, 2, 3, 3]]], np.float32)
    scores = np.array([[[np.nan, 0.5]]], np.float32)
    rows, _ = K.multiclass_nms(boxes, scores, 0.1, -1, -1, 0.5)
    np.testing.assert_array_equal(rows[:, 1], np.float32([0.5]))


def test_threads_and_non_contiguous_inputs():
    boxes, scores = random_problem(np.random.default_rng(2), 6, 300, 2)
    one = K.multiclass_nms(boxes, scores, 0.2, 100, 50, 0.5, num_threads=1)
    many = K.multiclass_nms(np.asfortranarray(boxes), scores[:, ::-1][:, ::-1], 0.2, 100, 50, 0.5, num_threads=4)
    for a, b in zip(one, many):
        np.testing.assert_array_equal(a, b)


def test_bad_arguments_name_the_argument():
    boxes, scores = np.zeros((1, 3, 4), np.float32), np.zeros((1, 2, 3), np.float32)
    with pytest.raises(ValueError, match="boxes"):
        K.multiclass_nms(boxes.astype(np.float64), scores, 0.1, 10, 10, 0.5)
    with pytest.raises(ValueError, match="boxes"):
        K.multiclass_nms(np.zeros((1, 3, 5), np.float32), scores, 0.1, 10, 10, 0.5)
    with pytest.raises(ValueError, match="scores"):
        K.multiclass_nms(boxes, np.zeros((1, 2, 4), np.float32), 0.1, 10, 10, 0.5)
    with pytest.raises(ValueError, match="scores"):
        K.multiclass_nms(boxes, np.zeros((2, 2, 3), np.float32), 0.1, 10, 10, 0.5)


def test_releases_the_gil():
    boxes, scores = random_problem(np.random.default_rng(3), 1, 30000, 1)
    ref.assert_releases_gil(lambda: K.multiclass_nms(boxes, scores, 0.0, 3000, -1, 0.9, num_threads=1))


def test_gil_check_catches_a_call_that_holds_the_gil():
    """The GIL tests are only worth something if their check can fail."""
    values = list(np.random.default_rng(0).random(300_000))
    with pytest.raises(AssertionError, match="GIL was held"):
        ref.assert_releases_gil(lambda: sorted(values), attempts=3)
