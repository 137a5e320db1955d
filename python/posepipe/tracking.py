"""Per-video person state: track IDs across frames, and boxes for the frames
that skip the detector.

On a frame where the detector runs, `Tracker.assign` matches its persons
(box + keypoints) to the tracks by an optimal assignment (scipy's Hungarian
solver) on a similarity that mixes box IoU and keypoint similarity (OKS),
both against where each track is expected to be by now. Persons left over
start new tracks; tracks left over are kept, unseen, for `max_lost_s` so that
a person coming out of a short occlusion gets their ID back.

On a frame without the detector, `Tracker.propagate` gives each followed
track its last box, moved by the track's velocity; the box keeps the size the
detector gave it, which keypoints alone cannot tell (the head reaches above
the eyes, the feet below the ankles, joints go unseen). `Tracker.follow` then
takes the keypoints found in those boxes and moves each box by the median
displacement of its joints. A person whose keypoint score collapsed, who has
too few joints left to follow, or whom another track landed on, is lost: left
out of this frame, and `lost_on_last_frame` asks for the detector on the next.

Followed are the persons seen on the last frame, and also, for one frame, a
person the detector missed on a detector frame: detectors blink on small or
partly hidden persons, and following such a person costs one keypoint crop,
where looking again would cost a detector run; a person who really left is
lost on that frame and the detector runs on the next."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import numpy as np

from .errors import ConfigError, PosepipeError
from .oks import box_iou
from .oks import oks as coco_oks


@dataclass(frozen=True)
class TrackerSettings:
    # Similarity = iou_weight * IoU + (1 - iou_weight) * OKS; pairs below min_similarity never match.
    iou_weight: float = 0.5
    min_similarity: float = 0.2
    # How long an unseen track can still be found again.
    max_lost_s: float = 2.0
    # Joints scoring above this outline a person (box from keypoints) and count in OKS.
    min_joint_score: float = 0.2
    # On a frame without the detector, a person whose mean keypoint score falls
    # below this fraction of its score at the last detection is lost.
    lost_score_ratio: float = 0.5
    # Two followed persons whose boxes overlap more than this are one person.
    duplicate_iou: float = 0.6

    def __post_init__(self) -> None:
        for name in ("iou_weight", "min_similarity", "min_joint_score", "lost_score_ratio", "duplicate_iou"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
                raise ConfigError(f"tracker {name} must be between 0 and 1, got {value!r}")
        if not (isinstance(self.max_lost_s, (int, float)) and self.max_lost_s >= 0 and math.isfinite(self.max_lost_s)):
            raise ConfigError(f"tracker max_lost_s must be a finite number >= 0, got {self.max_lost_s!r}")


@dataclass
class Track:
    id: int
    box: np.ndarray  # [4] x1, y1, x2, y2 where the person was last seen
    keypoints: np.ndarray  # [K,3] last seen
    det_score: float  # the detector's score at the last detection
    ref_kpt_score: float  # mean keypoint score at the last detection
    seen_s: float  # timestamp of the last frame the person was seen on
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))  # box centre, pixels per second
    followed: bool = True  # followed on the next frame without the detector
    detector_misses: int = 0  # detector frames in a row that did not find it


class Tracker:
    def __init__(self, settings: TrackerSettings = TrackerSettings()):
        self.settings = settings
        self.tracks: Dict[int, Track] = {}
        self._next_id = 1
        # A followed person was lost on the last frame: the next frame should
        # look with the detector rather than follow.
        self.lost_on_last_frame = False

    @property
    def started(self) -> int:
        """How many tracks (IDs) have been started."""
        return self._next_id - 1

    # --- frames with the detector -------------------------------------------

    def assign(self, boxes: np.ndarray, det_scores: np.ndarray, keypoints: np.ndarray, t: float) -> np.ndarray:
        """Track IDs for the detected persons ([M,4] boxes, [M] scores, [M,K,3] keypoints) at time t."""
        linear_sum_assignment = _assignment_solver()

        self._forget_old(t)
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        ids = np.zeros(len(boxes), np.int64)
        candidates = list(self.tracks.values())
        matched_tracks = set()
        if candidates and len(boxes):
            similarity = self._similarity(candidates, boxes, keypoints, t)
            rows, cols = linear_sum_assignment(similarity, maximize=True)
            for r, c in zip(rows, cols):
                if similarity[r, c] >= self.settings.min_similarity:
                    track = candidates[r]
                    self._refresh(track, boxes[c], float(det_scores[c]), keypoints[c], t)
                    ids[c] = track.id
                    matched_tracks.add(track.id)
        for c in np.flatnonzero(ids == 0):
            track = self._new_track(boxes[c], float(det_scores[c]), keypoints[c], t)
            ids[c] = track.id
            matched_tracks.add(track.id)
        for track in self.tracks.values():
            if track.id in matched_tracks:
                track.followed, track.detector_misses = True, 0
            else:
                track.detector_misses += 1
                track.followed = track.followed and track.detector_misses == 1
        self.lost_on_last_frame = False
        return ids

    def _similarity(self, tracks: List[Track], boxes: np.ndarray, keypoints: np.ndarray, t: float) -> np.ndarray:
        predicted_boxes = np.stack([_shift(tr.box, tr.velocity * (t - tr.seen_s)) for tr in tracks])
        predicted_kpts = np.stack([_shift_points(tr.keypoints, tr.velocity * (t - tr.seen_s)) for tr in tracks])
        w = self.settings.iou_weight
        return w * box_iou(predicted_boxes, boxes) + (1.0 - w) * oks(
            predicted_kpts, np.asarray(keypoints), boxes, self.settings.min_joint_score
        )

    def _new_track(self, box: np.ndarray, det_score: float, keypoints: np.ndarray, t: float) -> Track:
        track = Track(
            id=self._next_id,
            box=box.copy(),
            keypoints=np.array(keypoints, np.float64),
            det_score=det_score,
            ref_kpt_score=float(np.mean(keypoints[:, 2])),
            seen_s=t,
        )
        self._next_id += 1
        self.tracks[track.id] = track
        return track

    def _refresh(self, track: Track, box: np.ndarray, det_score: float, keypoints: np.ndarray, t: float) -> None:
        self._move(track, box, keypoints, t)
        track.det_score = det_score
        track.ref_kpt_score = float(np.mean(keypoints[:, 2]))

    # --- frames without the detector ----------------------------------------

    def propagate(self, t: float) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids [P], boxes [P,4], det_scores [P]) where the followed persons
        should be at time t."""
        followed = [tr for tr in self.tracks.values() if tr.followed]
        boxes = np.zeros((len(followed), 4), np.float64)
        for i, tr in enumerate(followed):
            boxes[i] = _shift(tr.box, tr.velocity * (t - tr.seen_s))
        ids = np.array([tr.id for tr in followed], np.int64)
        scores = np.array([tr.det_score for tr in followed], np.float64)
        return ids, boxes, scores

    def follow(self, ids: np.ndarray, keypoints: np.ndarray, t: float) -> Tuple[np.ndarray, np.ndarray]:
        """Take the keypoints found at time t in the boxes `propagate` gave.
        Returns (kept [P] bool, boxes [P,4]): which persons are still there,
        and their boxes (the last ones moved with the joints). The lost ones
        stop being followed and set `lost_on_last_frame`."""
        settings = self.settings
        boxes = np.zeros((len(ids), 4), np.float64)
        kept = np.ones(len(ids), bool)
        scores = keypoints[:, :, 2].mean(axis=1) if len(ids) else np.zeros(0)
        for i, track_id in enumerate(ids):
            track = self.tracks[int(track_id)]
            common = (keypoints[i, :, 2] > settings.min_joint_score) & (track.keypoints[:, 2] > settings.min_joint_score)
            if scores[i] < settings.lost_score_ratio * track.ref_kpt_score or common.sum() < MIN_JOINTS_TO_FOLLOW:
                kept[i] = False
                continue
            # The median: robust to the odd joint that jumps to a neighbour.
            displacement = np.median(keypoints[i, common, :2] - track.keypoints[common, :2], axis=0)
            boxes[i] = _shift(track.box, displacement)
        # Two tracks on one person: the one that fits it worse is lost.
        for i, j in zip(*np.nonzero(np.triu(box_iou(boxes, boxes), k=1) > settings.duplicate_iou)):
            if kept[i] and kept[j]:
                kept[j if scores[j] < scores[i] else i] = False
        for i, track_id in enumerate(ids):
            track = self.tracks[int(track_id)]
            if kept[i]:
                self._move(track, boxes[i], keypoints[i], t)
            else:
                track.followed = False
        self.lost_on_last_frame = not kept.all()
        return kept, boxes

    # --- shared --------------------------------------------------------------

    def _move(self, track: Track, box: np.ndarray, keypoints: np.ndarray, t: float) -> None:
        dt = t - track.seen_s
        if dt > 0:
            measured = (_centre(box) - _centre(track.box)) / dt
            # Averaged over recent frames; a track found again after a gap starts afresh.
            track.velocity = 0.5 * track.velocity + 0.5 * measured if track.followed else measured
        track.box = np.array(box, np.float64)
        track.keypoints = np.array(keypoints, np.float64)
        track.seen_s = t

    def _forget_old(self, t: float) -> None:
        for track_id in [k for k, tr in self.tracks.items() if t - tr.seen_s > self.settings.max_lost_s]:
            del self.tracks[track_id]


# Joints seen on both frames needed to follow a person without the detector.
MIN_JOINTS_TO_FOLLOW = 3


def _centre(box: np.ndarray) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])


def _shift(box: np.ndarray, offset: np.ndarray) -> np.ndarray:
    return np.asarray(box, np.float64) + np.array([offset[0], offset[1], offset[0], offset[1]])


def _shift_points(keypoints: np.ndarray, offset: np.ndarray) -> np.ndarray:
    shifted = np.array(keypoints, np.float64)
    shifted[:, :2] += offset
    return shifted


def _assignment_solver():
    """scipy's Hungarian solver (the video extra), or a clear error."""
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError:
        raise PosepipeError("tracking needs scipy: pip install 'posepipe[video]' (or pip install scipy)") from None
    return linear_sum_assignment


def oks(a: np.ndarray, b: np.ndarray, b_boxes: np.ndarray, min_score: float) -> np.ndarray:
    """[N,K,3] x [M,K,3] -> [N,M] object keypoint similarity, COCO's formula
    with each b person's box area as its scale, over the joints both score
    above min_score (0 where they share none)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    boxes = np.asarray(b_boxes, np.float64).reshape(-1, 4)
    area = np.clip((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), 1.0, None)
    d2 = ((a[:, None, :, :2] - b[None, :, :, :2]) ** 2).sum(axis=3)  # [N,M,K]
    both = (a[:, None, :, 2] > min_score) & (b[None, :, :, 2] > min_score)
    return coco_oks(d2, both, area[None, :])
