"""End to end on real models (../shared/models/real) against PaddleX 3.7.2's own
output on the same photos, and against an independent pose model."""
from __future__ import annotations

import json

import numpy as np
import pytest

import posepipe

PHOTOS = ["000000014439.jpg", "000000087038.jpg", "000000570688.jpg", "hrnet_demo.jpg"]

# COCO keypoint sigmas, for OKS against the independent oracle.
COCO_SIGMAS = np.array(
    [0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89]
) / 10.0


@pytest.fixture(scope="module")
def real_pipeline(real_config):
    return posepipe.create_pipeline(config=real_config, device="cpu")


@pytest.fixture(scope="module")
def real_results(real_pipeline, shared_dir):
    paths = [str(shared_dir / "photos" / name) for name in PHOTOS]
    return {name: res for name, res in zip(PHOTOS, real_pipeline.predict(paths))}


def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match(ours, theirs, key_ours, key_theirs, min_iou):
    """Greedy best-IoU pairs (ours, theirs) above min_iou."""
    pairs, used = [], set()
    for t in theirs:
        best, best_iou = None, min_iou
        for i, o in enumerate(ours):
            v = iou(o[key_ours], t[key_theirs])
            if i not in used and v >= best_iou:
                best, best_iou = i, v
        if best is not None:
            used.add(best)
            pairs.append((ours[best], t))
    return pairs


@pytest.mark.parametrize("name", PHOTOS)
def test_matches_paddlex_reference(real_results, shared_dir, name):
    reference = json.loads((shared_dir / "reference" / "paddlex_real_models.json").read_text())[name]
    result = real_results[name]
    assert result["input_path"].endswith(name)
    ours = result["boxes"]
    assert len(ours) == len(reference), f"{name}: {len(ours)} persons, PaddleX found {len(reference)}"
    pairs = match(ours, reference, "coordinate", "coordinate", 0.9)
    assert len(pairs) == len(reference), f"{name}: only {len(pairs)} of {len(reference)} PaddleX persons matched"
    kpt_err = []
    for o, r in pairs:
        np.testing.assert_allclose(o["coordinate"], r["coordinate"], atol=2e-3)
        assert abs(o["det_score"] - r["det_score"]) < 1e-4
        k_ours, k_ref = np.asarray(o["keypoints"]), np.asarray(r["keypoints"])
        assert k_ours.shape == (17, 3) and k_ours.dtype == np.float32
        kpt_err.append(np.linalg.norm(k_ours[:, :2] - k_ref[:, :2], axis=1))
        np.testing.assert_allclose(k_ours[:, 2], k_ref[:, 2], atol=1e-2)
        assert abs(o["kpt_score"] - r["kpt_score"]) < 1e-2
    kpt_err = np.concatenate(kpt_err)
    # Measured (2-core AMD EPYC): boxes within 6.1e-5 px, keypoints within 0.084 px (median 0),
    # the same with OpenCV 4.10 (PaddleX's) and 5.0 installed. The bounds leave room for
    # oneDNN and thread-count rounding moving a crop by a step of OpenCV's 1/32-px warp grid.
    assert kpt_err.max() <= 1.0, f"{name}: max keypoint error {kpt_err.max():.3f} px"
    assert np.median(kpt_err) <= 0.1, f"{name}: median keypoint error {np.median(kpt_err):.3f} px"


def test_keypoints_land_near_independent_oracle(real_results, shared_dir):
    oracle = json.loads((shared_dir / "reference" / "oracle_yolo11n_pose.json").read_text())
    oks_values, matched, total = [], 0, 0
    for name in PHOTOS:
        persons = [p for p in oracle[name] if p["score"] >= 0.5]
        total += len(persons)
        for ours, theirs in match(real_results[name]["boxes"], persons, "coordinate", "box", 0.5):
            matched += 1
            gt = np.asarray(theirs["kpts"])
            visible = gt[:, 2] > 0.5
            box = theirs["box"]
            area = (box[2] - box[0]) * (box[3] - box[1])
            d2 = np.sum((np.asarray(ours["keypoints"])[:, :2] - gt[:, :2]) ** 2, axis=1)
            oks = np.exp(-d2 / (2 * area * (2 * COCO_SIGMAS) ** 2))
            oks_values.append(oks[visible].mean())
    assert matched >= total - 1, f"matched {matched} of {total} oracle persons"
    assert np.mean(oks_values) >= 0.85, f"mean OKS against the oracle {np.mean(oks_values):.3f}"


def test_batched_detector_gives_same_persons(real_config, real_results, shared_dir):
    config = json.loads(json.dumps(real_config))
    config["SubModules"]["ObjectDetection"]["batch_size"] = 3
    config["SubModules"]["KeypointDetection"]["batch_size"] = 5  # a cap: chunks of 4 and 1
    pipeline = posepipe.create_pipeline(config=config, device="cpu")
    assert pipeline.keypoints.max_batch == 5 and pipeline.metadata["kpt_batch_size"] == 5
    paths = [str(shared_dir / "photos" / name) for name in PHOTOS]
    for name, res in zip(PHOTOS, pipeline.predict(paths)):
        single = real_results[name]["boxes"]
        assert len(res["boxes"]) == len(single)
        for a, b in zip(res["boxes"], single):
            np.testing.assert_allclose(a["coordinate"], b["coordinate"], atol=1e-3)
            np.testing.assert_allclose(a["keypoints"], b["keypoints"], atol=1e-3)


def test_det_threshold_filters_persons(real_pipeline, shared_dir):
    path = str(shared_dir / "photos" / "000000014439.jpg")
    default = next(real_pipeline.predict(path))["boxes"]
    strict = next(real_pipeline.predict(path, det_threshold=0.7))["boxes"]
    loose = next(real_pipeline.predict(path, det_threshold=0.3))["boxes"]
    assert len(strict) < len(default) < len(loose)
    assert all(b["det_score"] > 0.7 for b in strict)


def test_array_input_equals_file_input(real_pipeline, real_results, shared_dir):
    import cv2

    image = cv2.imread(str(shared_dir / "photos" / "hrnet_demo.jpg"))
    res = next(real_pipeline.predict(image))
    assert res["input_path"] is None
    ref = real_results["hrnet_demo.jpg"]["boxes"]
    assert len(res["boxes"]) == len(ref)
    np.testing.assert_array_equal(res["boxes"][0]["keypoints"], ref[0]["keypoints"])


def test_flip_and_udp_change_the_result_but_stay_on_the_person(real_config, real_results, shared_dir):
    config = json.loads(json.dumps(real_config))
    config["SubModules"]["KeypointDetection"].update(flip=True, use_udp=True)
    pipeline = posepipe.create_pipeline(config=config, device="cpu")
    res = next(pipeline.predict(str(shared_dir / "photos" / "hrnet_demo.jpg")))
    base = real_results["hrnet_demo.jpg"]["boxes"][0]["keypoints"]
    moved = np.linalg.norm(res["boxes"][0]["keypoints"][:, :2] - base[:, :2], axis=1)
    assert moved.max() > 0.01  # the options are really applied
    assert np.median(moved) < 10.0  # and the joints stay where they were


@pytest.mark.parametrize("name", PHOTOS)
def test_keypoints_on_paddlex_boxes_match_paddlex(real_pipeline, shared_dir, name):
    """The keypoint stage alone (predict_on_boxes), fed PaddleX's own boxes,
    gives PaddleX's keypoints for them."""
    from posepipe.io import Frame, read_frame, iter_sources

    reference = json.loads((shared_dir / "reference" / "paddlex_real_models.json").read_text())[name]
    frame = read_frame(next(iter_sources(str(shared_dir / "photos" / name))))
    boxes = np.array([p["coordinate"] + [p["det_score"]] for p in reference], np.float32)
    (result,) = real_pipeline.predict_on_boxes([frame], [boxes])
    assert isinstance(frame, Frame) and len(result["boxes"]) == len(reference)
    for ours, theirs in zip(result["boxes"], reference):
        np.testing.assert_allclose(ours["coordinate"], theirs["coordinate"], atol=1e-3)
        assert ours["det_score"] == pytest.approx(theirs["det_score"], abs=1e-6)
        kpts, ref = np.asarray(ours["keypoints"]), np.asarray(theirs["keypoints"])
        assert np.abs(kpts[:, :2] - ref[:, :2]).max() <= 1.0
        assert np.abs(kpts[:, 2] - ref[:, 2]).max() <= 1e-2


def test_predict_on_boxes_refuses_malformed_boxes(real_pipeline):
    from posepipe.io import Frame

    frame = Frame(np.zeros((64, 64, 3), np.uint8), None)
    with pytest.raises(ValueError, match="frames but"):
        real_pipeline.predict_on_boxes([frame], [])
    with pytest.raises(ValueError, match=r"boxes\[0\]: expected a finite \[M,4\] or \[M,5\]"):
        real_pipeline.predict_on_boxes([frame], [np.zeros((2, 3))])
    (empty,) = real_pipeline.predict_on_boxes([frame], [np.zeros((0, 4))])
    assert empty["boxes"] == []
