"""The peer: PaddleX 3.7.2's human_keypoint_detection pipeline, driven by run.py.

Runs under PaddleX's own Python (its venv), never imports posepipe. Requests
(see _protocol.py):
  init  name, config, device            -> what PaddleX resolved (versions, run modes, threads)
  run   name, inputs, repeat, det_threshold -> seconds per full predict() over `inputs`
  eval  name, images, modes, det_min_score
        -> what a PaddleX user runs to evaluate the three ways posepipe eval does,
           with seconds per mode: pipeline.predict (end to end), the keypoint
           model on given boxes as the pipeline calls it per person, the
           detector alone at det_min_score
  video name, path, frames -> seconds for the obvious loop over a video's first
        `frames` frames (OpenCV reads a frame, predict() runs on it), persons per frame
"""
from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK", "True")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _protocol import serve, timed_calls  # noqa: E402

PIPELINES = {}


def init(name, config, device="cpu"):
    import paddle
    import paddlex

    pipeline = paddlex.create_pipeline(config=config, device=device)
    PIPELINES[name] = pipeline
    inner = getattr(pipeline, "_pipeline", pipeline)
    return {
        "engine": f"PaddleX {paddlex.__version__} + paddlepaddle {paddle.__version__}",
        "detector": runner_settings(inner.det_model),
        "keypoints": runner_settings(inner.kpt_model),
    }


def runner_settings(predictor):
    """The engine settings PaddleX resolved for one model (run_mode, threads, deleted passes)."""
    config = getattr(getattr(predictor, "runner", None), "_config", None) or {}
    keys = ("run_mode", "cpu_threads", "delete_pass", "device_type")
    return {key: config.get(key) for key in keys if key in config}


def run(name, inputs, repeat=1, det_threshold=None):
    pipeline = PIPELINES[name]
    last = []

    def once():
        last[:] = list(pipeline.predict(inputs, det_threshold=det_threshold))

    times = timed_calls(once, repeat)
    return {"times_s": times, "persons": [len(res["boxes"]) for res in last]}


def run_eval(name, images, modes, det_min_score=0.0):
    """images: [{"path", "gt_boxes": [[x1, y1, x2, y2], ...]}]. Returns per
    mode the persons of each image (coordinate, det_score, keypoints) and the
    seconds it took."""
    import time

    import cv2
    import numpy as np

    pipeline = PIPELINES[name]
    inner = getattr(pipeline, "_pipeline", pipeline)
    paths = [img["path"] for img in images]
    out, seconds = {}, {}
    if "keypoints" in modes:
        t0 = time.perf_counter()
        results = list(pipeline.predict(paths))
        seconds["keypoints"] = time.perf_counter() - t0
        out["keypoints"] = [[_person(b["coordinate"], b["det_score"], b["keypoints"]) for b in r["boxes"]] for r in results]
    if "keypoints_gt_boxes" in modes:
        t0 = time.perf_counter()
        found = []
        for img in images:
            # PaddleX's reader decodes with cv2.imdecode(IMREAD_COLOR) too.
            frame = cv2.imdecode(np.fromfile(img["path"], np.uint8), cv2.IMREAD_COLOR)
            persons = []
            for box in img["gt_boxes"]:
                # The pipeline's own per-person call (KeypointDetectionPipeline.predict).
                center, scale = inner._box_xyxy2cs(np.asarray(box, np.float64))
                kpts = list(inner.kpt_model({"img": frame, "center": center, "scale": scale}))[0]["kpts"][0]
                persons.append(_person(box, 1.0, kpts["keypoints"]))
            found.append(persons)
        seconds["keypoints_gt_boxes"] = time.perf_counter() - t0
        out["keypoints_gt_boxes"] = found
    if "detection" in modes:
        t0 = time.perf_counter()
        results = list(inner.det_model(paths, threshold=det_min_score))
        seconds["detection"] = time.perf_counter() - t0
        out["detection"] = [[_person(b["coordinate"], b["score"], None) for b in r["boxes"]] for r in results]
    return {"persons": out, "seconds": seconds}


def _person(coordinate, score, keypoints):
    return {
        "coordinate": [float(v) for v in coordinate],
        "det_score": float(score),
        "keypoints": None if keypoints is None else [[float(v) for v in joint] for joint in keypoints],
    }


def video(name, path, frames):
    import cv2

    pipeline = PIPELINES[name]
    persons = []
    t0 = time.perf_counter()
    capture = cv2.VideoCapture(path)
    while len(persons) < frames:
        ok, frame = capture.read()
        if not ok:
            break
        for res in pipeline.predict(frame):
            persons.append(len(res["boxes"]))
    seconds = time.perf_counter() - t0
    capture.release()
    return {"seconds": seconds, "frames": len(persons), "persons": persons}


if __name__ == "__main__":
    serve({"init": init, "run": run, "eval": run_eval, "video": video})
