"""posepipe's side of benchmarks/video.py, in its own process (its memory and
its clock are its own; the PaddleX side runs in _paddlex_worker.py).

Requests (see _protocol.py):
  init  name, config, device, options -> posepipe's resolved backends
  run   name, path, frames, kwargs, keep, rss
        -> seconds from the predict call to the last result, frames, persons
           per frame, detector frames, tracks; with keep: every frame's persons
           (coordinate, keypoints, track_id); with rss: the resident set (MB)
           after each frame
  live  name, url, seconds, kwargs
        -> [frame_index, monotonic time the result came out] per result and the
           frames dropped as stale; CLOCK_MONOTONIC is the same clock in every
           process, so the driver can subtract the time it sent each frame
"""
from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _protocol import serve  # noqa: E402

PIPELINES = {}


def init(name, config, device="cpu", options=None):
    import posepipe

    pipeline = posepipe.create_pipeline(config=config, device=device, **(options or {}))
    pipeline.warmup()
    PIPELINES[name] = pipeline
    return {"engine": f"posepipe {posepipe.__version__}", "detector": pipeline.metadata["detector"]["backend"],
            "keypoints": pipeline.metadata["keypoints"]["backend"]}


def run(name, path, frames=None, kwargs=None, keep=False, rss=False):
    from posepipe.video import Video

    pipeline = PIPELINES[name]
    persons, kept, rss_mb = [], [], []
    t0 = time.perf_counter()
    results = pipeline.predict(Video(path), **(kwargs or {}))
    for result in results:
        boxes = result["boxes"]
        persons.append(len(boxes))
        if keep:
            kept.append(
                [
                    {"coordinate": b["coordinate"], "keypoints": b["keypoints"].tolist(), "track_id": b.get("track_id")}
                    for b in boxes
                ]
            )
        if rss:
            rss_mb.append(resident_mb())
        if frames and len(persons) >= frames:
            break
    seconds = time.perf_counter() - t0
    results.close()
    stream = result.metadata["video"]
    return {
        "seconds": seconds,
        "frames": len(persons),
        "persons": persons,
        "detector_frames": stream.detector_frames,
        "extra_detector_frames": stream.extra_detector_frames,
        "tracks": stream.tracks,
        "results": kept,
        "rss_mb": rss_mb,
    }


def live(name, url, seconds, kwargs=None):
    from posepipe.video import Video

    pipeline = PIPELINES[name]
    out = []
    end = time.monotonic() + seconds
    results = pipeline.predict(Video(url, live=True), **(kwargs or {}))
    for result in results:
        out.append([result["frame_index"], time.monotonic()])
        if time.monotonic() > end:
            break
    results.close()
    return {"results": out, "dropped": result.metadata["video"].dropped_frames}


def resident_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


if __name__ == "__main__":
    serve({"init": init, "run": run, "live": live})
