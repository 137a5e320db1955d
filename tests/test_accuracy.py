"""The accuracy gate a lower precision must pass (runtime/accuracy.py): its
OKS against pycocotools', and every way it must fail."""
from __future__ import annotations

import numpy as np
import pytest

from posepipe.oks import oks
from posepipe.runtime.accuracy import (
    MIN_CLOSE_SHARE,
    MIN_OKS,
    Persons,
    compare_persons,
    pair_persons,
)

RNG = np.random.default_rng(7)


def _person(x0: float, y0: float, w: float = 80.0, h: float = 200.0):
    box = np.array([x0, y0, x0 + w, y0 + h])
    kpts = np.zeros((17, 3))
    kpts[:, 0] = x0 + RNG.uniform(0, w, 17)
    kpts[:, 1] = y0 + RNG.uniform(0, h, 17)
    kpts[:, 2] = RNG.uniform(0.4, 0.9, 17)
    return box, kpts


def _image(n: int, x_step: float = 120.0) -> Persons:
    people = [_person(10 + i * x_step, 20) for i in range(n)]
    boxes = np.array([p[0] for p in people]).reshape(-1, 4)
    return Persons(boxes, np.array([p[1] for p in people]).reshape(-1, 17, 3), RNG.uniform(0.5, 0.9, len(boxes)))


def _copy(p: Persons) -> Persons:
    return Persons(p.boxes.copy(), p.keypoints.copy(), p.scores.copy())


def test_oks_is_pycocotools_oks():
    from pycocotools.cocoeval import COCOeval

    gt_box, gt = _person(50, 40)
    dt = gt.copy()
    dt[:, :2] += RNG.normal(0, 3, (17, 2))
    visible = gt[:, 2] > 0.3
    visible[[2, 5]] = False
    area = (gt_box[2] - gt_box[0]) * (gt_box[3] - gt_box[1])

    class _Eval(COCOeval):  # computeOks reads only these members
        def __init__(self):
            self.params = type("P", (), {"kpt_oks_sigmas": None, "maxDets": [20], "iouType": "keypoints"})()
            self.params.kpt_oks_sigmas = np.array(
                [.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89]) / 10.0
            g = np.concatenate([gt[:, :2], np.where(visible, 2, 0)[:, None]], axis=1).reshape(-1)
            self._gts = {(1, 1): [{"keypoints": g.tolist(), "bbox": [gt_box[0], gt_box[1], gt_box[2] - gt_box[0],
                                   gt_box[3] - gt_box[1]], "area": area}]}
            d = np.concatenate([dt[:, :2], np.ones((17, 1))], axis=1).reshape(-1)
            self._dts = {(1, 1): [{"keypoints": d.tolist(), "score": 1.0}]}

    expected = _Eval().computeOks(1, 1)[0, 0]
    d2 = ((gt[:, :2] - dt[:, :2]) ** 2).sum(axis=1)
    assert oks(d2, visible, area) == pytest.approx(expected, rel=1e-9)
    # Batched, as the tracker and the video benchmarks call it.
    both = oks(np.stack([d2, np.zeros(17)]), np.stack([visible, visible]), np.array([area, area]))
    assert both.tolist() == pytest.approx([expected, 1.0], rel=1e-9)


def test_identical_persons_pass():
    ref = [_image(5), _image(3), _image(0)]
    report = compare_persons(ref, [_copy(p) for p in ref])
    assert report.passed and report.persons == 8 and report.lost == report.added == 0
    s = report.summary()
    assert s["oks_min"] == 1.0 and s["deviation_px"]["max"] == 0.0 and s["passed"] is True


def test_a_lost_or_added_person_fails():
    ref = [_image(5)]
    lost = _copy(ref[0])
    lost.boxes, lost.keypoints, lost.scores = lost.boxes[:4], lost.keypoints[:4], lost.scores[:4]
    report = compare_persons(ref, [lost])
    assert not report.passed and report.lost == 1 and "1 person(s) lost and 0 added" in report.reason()
    added = compare_persons([lost], ref)
    assert not added.passed and added.added == 1


def test_a_moved_box_is_a_lost_and_an_added_person():
    ref = [_image(1)]
    moved = _copy(ref[0])
    moved.boxes[0, [0, 2]] += 60  # IoU 0.14 with the original
    report = compare_persons(ref, [moved])
    assert (report.lost, report.added) == (1, 1) and not report.passed


@pytest.mark.parametrize("far", [1, 2])
def test_the_share_of_close_persons_decides(far):
    """10 persons; `far` of them move their keypoints by 40 px: one far person
    (90 % close) passes, two (80 %) fail."""
    ref = [_image(10, x_step=90.0)]
    cand = _copy(ref[0])
    cand.keypoints[:far, :, :2] += 40.0
    report = compare_persons(ref, [cand])
    assert report.scored == 10 and report.close == 10 - far
    assert report.passed is (far == 1)
    assert report.summary()["oks_min"] < MIN_OKS
    if far == 2:
        assert f"8 of 10 persons (80%) keep OKS >= {MIN_OKS}" in report.reason()
        assert f"fewer than {MIN_CLOSE_SHARE:.0%}" in report.reason()


def test_deviation_is_measured_on_visible_keypoints_only():
    ref = [_image(1)]
    ref[0].keypoints[0, :5, 2] = 0.1  # invisible to the gate
    cand = _copy(ref[0])
    cand.keypoints[0, :5, :2] += 100.0  # moved where fp32 sees nothing
    cand.keypoints[0, 5, 0] += 3.0
    report = compare_persons(ref, [cand])
    assert report.passed
    assert report.summary()["deviation_px"]["max"] == pytest.approx(3.0)
    assert len(report.deviation_px) == 12


@pytest.mark.parametrize("drift, passes", [(0.015, True), (0.03, False)])
def test_drifting_detection_scores_fail_even_when_no_person_crosses_the_threshold(drift, passes):
    ref = [_image(4)]
    cand = _copy(ref[0])
    cand.scores[2] -= drift
    report = compare_persons(ref, [cand])
    assert report.score_drift == pytest.approx(drift) and report.passed is passes
    assert report.lost == report.added == 0
    if not passes:
        assert f"detection scores moved by up to {drift:.3f}" in report.reason()


def test_no_person_cannot_pass():
    report = compare_persons([_image(0)], [_image(0)])
    assert not report.passed and "finds no person" in report.reason()


def test_pairs_are_best_iou_first():
    a = np.array([[0, 0, 100, 100], [50, 0, 150, 100]], float)
    b = np.array([[52, 0, 152, 100], [2, 0, 102, 100], [400, 400, 500, 500]], float)
    pairs, lost, added = pair_persons(a, b)
    assert sorted(pairs) == [(0, 1), (1, 0)] and (lost, added) == (0, 1)
