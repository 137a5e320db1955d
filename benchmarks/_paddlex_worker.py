"""The peer: PaddleX 3.7.2's human_keypoint_detection pipeline, driven by run.py.

Runs under PaddleX's own Python (its venv), never imports posepipe. Requests
(see _protocol.py):
  init  name, config, device            -> what PaddleX resolved (versions, run modes, threads)
  run   name, inputs, repeat, det_threshold -> seconds per full predict() over `inputs`
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
    serve({"init": init, "run": run, "video": video})
