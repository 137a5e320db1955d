"""End to end on the official PP-YOLOE-S_human / PP-TinyPose graphs
(../shared/models/official_arch, synthetic weights) against PaddleX's output.

These graphs hold nearest-interpolation ops that Paddle 3.3.1's oneDNN cannot
run from PIR programs (Paddle issue #79749); PaddleX's default CPU run crashes on
them. posepipe must run them out of the box, with oneDNN and without."""
from __future__ import annotations

import json

import numpy as np
import pytest

import posepipe

from test_pipeline_real import match

PHOTOS = ["000000014439.jpg", "000000087038.jpg", "000000570688.jpg", "hrnet_demo.jpg"]


def official_config(shared_dir, detector="PP-YOLOE-S_human"):
    root = shared_dir / "models" / "official_arch"
    return {
        "pipeline_name": "human_keypoint_detection",
        "SubModules": {
            "ObjectDetection": {
                "module_name": "object_detection",
                "model_name": "PP-YOLOE-S_human",
                "model_dir": str(root / detector),
                "batch_size": 1,
                "threshold": None,
                "img_size": None,
            },
            "KeypointDetection": {
                "module_name": "keypoint_detection",
                "model_name": "PP-TinyPose_128x96",
                "model_dir": str(root / "PP-TinyPose_128x96"),
                "batch_size": 1,
                "flip": False,
                "use_udp": None,
            },
        },
    }


def check_against_reference(results, reference):
    """The official_arch README's tolerances: boxes tight; keypoints within about
    1 px with a median near 0.1 px (OpenCV's 1/32-px warp grid can move a crop)."""
    kpt_err = []
    for name, result in results.items():
        ref = reference[name]
        ours = result["boxes"]
        assert len(ours) == len(ref), f"{name}: {len(ours)} persons, PaddleX found {len(ref)}"
        pairs = match(ours, ref, "coordinate", "coordinate", 0.9)
        assert len(pairs) == len(ref), f"{name}: {len(pairs)} of {len(ref)} matched"
        for o, r in pairs:
            np.testing.assert_allclose(o["coordinate"], r["coordinate"], atol=5e-3)
            assert abs(o["det_score"] - r["det_score"]) < 1e-4
            kpt_err.append(np.linalg.norm(np.asarray(o["keypoints"])[:, :2] - np.asarray(r["keypoints"])[:, :2], axis=1))
    kpt_err = np.concatenate(kpt_err)
    assert kpt_err.max() <= 1.0, f"max keypoint error {kpt_err.max():.3f} px"
    assert np.median(kpt_err) <= 0.1, f"median keypoint error {np.median(kpt_err):.3f} px"


@pytest.fixture(scope="module")
def reference(shared_dir):
    return json.loads((shared_dir / "reference" / "paddlex_official_arch.json").read_text())


@pytest.mark.parametrize("detector", ["PP-YOLOE-S_human", "PP-YOLOE-S_human_noNMS"])
@pytest.mark.parametrize("use_onednn", [None, False], ids=["auto-onednn", "plain-cpu"])
def test_official_graphs_match_paddlex(shared_dir, reference, detector, use_onednn):
    pipeline = posepipe.create_pipeline(
        config=official_config(shared_dir, detector), device="cpu", use_onednn=use_onednn
    )
    if use_onednn is None:
        # The default must really run oneDNN on these graphs, not fall back to the slow plain path.
        assert pipeline.metadata["detector"]["onednn"] is True
    paths = [str(shared_dir / "photos" / name) for name in PHOTOS]
    results = {name: res for name, res in zip(PHOTOS, pipeline.predict(paths))}
    check_against_reference(results, reference)
