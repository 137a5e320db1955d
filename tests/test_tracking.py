"""posepipe.tracking: similarity measures against their textbook formulas, an
optimal (not greedy) assignment, IDs across occlusions, and following persons
between detector frames."""
from __future__ import annotations

import numpy as np
import pytest

from posepipe.errors import ConfigError
from posepipe.oks import COCO_SIGMAS, box_iou
from posepipe.tracking import Tracker, TrackerSettings, oks


def person(cx: float, cy: float, height: float = 100.0, score: float = 0.9, seed: int = 0) -> np.ndarray:
    """17 joints spread over a person-shaped area around (cx, cy)."""
    rng = np.random.default_rng(seed)
    xy = np.stack([cx + rng.uniform(-0.2, 0.2, 17) * height, cy + np.linspace(-0.45, 0.45, 17) * height], 1)
    return np.concatenate([xy, np.full((17, 1), score)], 1)


def box_of(cx: float, cy: float, height: float = 100.0) -> np.ndarray:
    return np.array([cx - 0.25 * height, cy - 0.5 * height, cx + 0.25 * height, cy + 0.5 * height])


def test_box_iou_against_a_direct_computation():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 50, (6, 2))
    a = np.concatenate([a, a + rng.uniform(1, 40, (6, 2))], 1)
    b = rng.uniform(0, 50, (4, 2))
    b = np.concatenate([b, b + rng.uniform(1, 40, (4, 2))], 1)
    got = box_iou(a, b)
    for i in range(6):
        for j in range(4):
            w = max(0.0, min(a[i, 2], b[j, 2]) - max(a[i, 0], b[j, 0]))
            h = max(0.0, min(a[i, 3], b[j, 3]) - max(a[i, 1], b[j, 1]))
            inter = w * h
            union = (a[i, 2] - a[i, 0]) * (a[i, 3] - a[i, 1]) + (b[j, 2] - b[j, 0]) * (b[j, 3] - b[j, 1]) - inter
            assert got[i, j] == pytest.approx(inter / union)


def test_oks_is_cocos_formula():
    # COCOeval.computeOks: e = d^2 / (2 * area * (2 sigma)^2), OKS = mean exp(-e) over the counted joints.
    rng = np.random.default_rng(1)
    a = np.concatenate([rng.uniform(0, 100, (3, 17, 2)), rng.uniform(0, 1, (3, 17, 1))], 2)
    b = np.concatenate([rng.uniform(0, 100, (2, 17, 2)), rng.uniform(0, 1, (2, 17, 1))], 2)
    boxes = np.array([[0, 0, 40, 90], [10, 10, 60, 120]], float)
    got = oks(a, b, boxes, 0.3)
    for i in range(3):
        for j in range(2):
            area = (boxes[j, 2] - boxes[j, 0]) * (boxes[j, 3] - boxes[j, 1])
            values = []
            for k in range(17):
                if a[i, k, 2] > 0.3 and b[j, k, 2] > 0.3:
                    d2 = (a[i, k, 0] - b[j, k, 0]) ** 2 + (a[i, k, 1] - b[j, k, 1]) ** 2
                    values.append(np.exp(-d2 / (2 * area * (2 * COCO_SIGMAS[k]) ** 2)))
            assert got[i, j] == pytest.approx(np.mean(values) if values else 0.0)
    assert oks(a, b[:0], boxes[:0], 0.3).shape == (3, 0)


def test_assignment_is_optimal_where_greedy_matching_swaps_ids():
    # Two persons, both 3 px further left. The best single pair (A with d1)
    # is a trap: taking it leaves B nothing it resembles.
    tracker = Tracker(TrackerSettings(iou_weight=1.0, min_similarity=0.2))
    a, b = np.array([0, 0, 10, 20.0]), np.array([4, 0, 14, 20.0])
    no_joints = np.zeros((17, 3))
    ids = tracker.assign(np.stack([a, b]), np.array([0.9, 0.9]), np.stack([no_joints, no_joints]), 0.0)
    d1, d2 = b - [3, 0, 3, 0], a - [3, 0, 3, 0]
    iou = box_iou(np.stack([a, b]), np.stack([d1, d2]))
    assert iou[0, 0] > max(iou[0, 1], iou[1, 0]) and iou[1, 1] < 0.2  # greedy would pair A-d1 and lose B
    got = tracker.assign(np.stack([d1, d2]), np.array([0.9, 0.9]), np.stack([no_joints, no_joints]), 0.1)
    assert got.tolist() == [ids[1], ids[0]]


def test_ids_survive_crossing_persons_and_a_short_occlusion():
    tracker = Tracker()
    fps = 10
    first_ids = None
    for f in range(40):
        t = f / fps
        # Two persons walking towards each other and past; the second is hidden for frames 15..22.
        xs = [100 + 8 * f, 420 - 8 * f]
        visible = [True, not 15 <= f <= 22]
        boxes = np.stack([box_of(x, 200) for x, v in zip(xs, visible) if v])
        kpts = np.stack([person(x, 200, seed=i) for i, (x, v) in enumerate(zip(xs, visible)) if v])
        ids = tracker.assign(boxes, np.full(len(boxes), 0.9), kpts, t)
        if first_ids is None:
            first_ids = ids.tolist()
        expected = [first_ids[i] for i, v in enumerate(visible) if v]
        assert ids.tolist() == expected, f"frame {f}"


def test_a_track_unseen_for_longer_than_max_lost_starts_anew():
    tracker = Tracker(TrackerSettings(max_lost_s=0.5))
    [first] = tracker.assign(box_of(100, 100)[None], np.array([0.9]), person(100, 100)[None], 0.0)
    assert tracker.assign(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 17, 3)), 0.3).size == 0
    [again] = tracker.assign(box_of(100, 100)[None], np.array([0.9]), person(100, 100)[None], 0.4)
    assert again == first
    tracker.assign(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 17, 3)), 0.5)
    [later] = tracker.assign(box_of(100, 100)[None], np.array([0.9]), person(100, 100)[None], 1.2)
    assert later != first and first not in tracker.tracks


def test_follow_moves_boxes_with_the_joints_and_keeps_their_size():
    tracker = Tracker()
    box = box_of(100, 200, 120)
    [track_id] = tracker.assign(box[None], np.array([0.8]), person(100, 200, 120)[None], 0.0)
    ids, boxes, scores = tracker.propagate(0.1)
    assert ids.tolist() == [track_id] and np.allclose(boxes[0], box) and scores.tolist() == [pytest.approx(0.8)]
    moved = person(100, 200, 120)
    moved[:, 0] += 6
    moved[3, :2] += 40  # one joint jumps to a wrong place: the median ignores it
    kept, followed = tracker.follow(ids, moved[None], 0.1)
    assert kept.tolist() == [True] and not tracker.lost_on_last_frame
    assert np.allclose(followed[0], box + [6, 0, 6, 0])
    # The next frame's box is predicted with the velocity (60 px/s to the right).
    _, boxes, _ = tracker.propagate(0.2)
    assert boxes[0][0] > followed[0][0] + 2


def test_follow_reports_a_lost_person_and_asks_for_the_detector():
    tracker = Tracker()
    ids = tracker.assign(
        np.stack([box_of(100, 200), box_of(300, 200)]), np.array([0.8, 0.8]),
        np.stack([person(100, 200, score=0.8), person(300, 200, score=0.8, seed=1)]), 0.0,
    )
    lost_box = tracker.tracks[int(ids[0])].box.copy()
    kept, _ = tracker.follow(ids, np.stack([person(100, 200, score=0.3), person(302, 200, score=0.8, seed=1)]), 0.1)
    assert kept.tolist() == [False, True]  # the first one's score fell below half of its detection's
    assert tracker.lost_on_last_frame
    assert np.array_equal(tracker.tracks[int(ids[0])].box, lost_box)  # the lost one is not moved
    assert tracker.propagate(0.2)[0].tolist() == [ids[1]]  # and no longer followed
    few = person(302, 200, score=0.8, seed=1)
    few[2:, 2] = 0.05  # two joints left: too few to follow
    assert tracker.follow(ids[1:], few[None], 0.2)[0].tolist() == [False]


def test_two_tracks_landing_on_one_person_keep_the_better_one():
    tracker = Tracker()
    boxes = np.stack([box_of(100, 200), box_of(140, 200)])
    ids = tracker.assign(boxes, np.array([0.9, 0.9]), np.stack([person(100, 200), person(140, 200, seed=1)]), 0.0)
    same = person(120, 200)
    weaker = same.copy()
    weaker[:, 2] = 0.7
    kept, _ = tracker.follow(ids, np.stack([weaker, same]), 0.1)
    assert kept.tolist() == [False, True] and tracker.lost_on_last_frame


def test_a_person_the_detector_misses_once_is_followed_for_a_frame():
    tracker = Tracker()
    [track_id] = tracker.assign(box_of(100, 200)[None], np.array([0.9]), person(100, 200)[None], 0.0)
    none = (np.zeros((0, 4)), np.zeros(0), np.zeros((0, 17, 3)))
    tracker.assign(*none, 0.1)  # the detector blinks
    assert tracker.propagate(0.2)[0].tolist() == [track_id]
    tracker.assign(*none, 0.3)  # and again on the next detector frame: gone
    assert tracker.propagate(0.4)[0].size == 0
    # Found again by the detector later (within max_lost_s), it keeps its ID.
    assert tracker.assign(box_of(100, 200)[None], np.array([0.9]), person(100, 200)[None], 0.5).tolist() == [track_id]


def test_settings_are_checked():
    with pytest.raises(ConfigError):
        TrackerSettings(iou_weight=1.5)
    with pytest.raises(ConfigError):
        TrackerSettings(max_lost_s=-1)
