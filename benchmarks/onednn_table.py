"""Re-measure the CPU settings behind `use_onednn=None` (see
python/posepipe/runtime/paddle.py): a developer's table.

    python benchmarks/onednn_table.py MODEL_DIR [MODEL_DIR ...] --photo some.jpg

Per model: latency of the plain CPU kernels vs oneDNN (with posepipe's pass
workarounds) at each batch size and thread count, the max |diff| between
their outputs, and whether one predictor serves every batch size 1..16 with
the same per-item results. Settings are timed in interleaved rounds and the
best round's median is kept, which damps other load on a shared machine.
Run it again when Paddle is upgraded: the auto choice is only as good as this table.
"""
from __future__ import annotations

import argparse
import time
from typing import Dict, List, Optional

import numpy as np

from posepipe.models.spec import load_model_spec
from posepipe.runtime import RuntimeOptions, create_backend
from posepipe.runtime.cpu import cpu_info


def _inputs(spec, n: int, photo: Optional[np.ndarray]) -> Dict[str, np.ndarray]:
    import cv2

    pre = spec.detector or spec.keypoint
    h, w = spec.detector.target_hw if spec.detector else spec.keypoint.input_wh[::-1]
    if photo is None:  # smooth deterministic picture, so detectors see structure, not noise
        yy, xx = np.mgrid[0:480, 0:640]
        photo = (127 + 120 * np.sin(xx[..., None] / (17 + np.arange(3))) * np.cos(yy[..., None] / 23)).astype(np.uint8)
    crops = []
    for i in range(n):  # a different window of the photo per batch item
        x0 = (i * photo.shape[1] // 7) % max(1, photo.shape[1] // 2)
        crop = photo[:, x0 : x0 + photo.shape[1] // 2] if spec.keypoint else photo
        crops.append(cv2.resize(crop, (w, h)).astype(np.float32))
    x = np.stack(crops) * (1 / 255.0 if pre.is_scale else 1.0)
    x = ((x - np.float32(pre.mean)) / np.float32(pre.std)).transpose(0, 3, 1, 2)
    feeds = {"image": np.ascontiguousarray(x, dtype=np.float32)}
    if spec.detector:
        feeds["scale_factor"] = np.ones((n, 2), np.float32)
        feeds["im_shape"] = np.tile(np.float32([h, w]), (n, 1))
    return feeds


def _median_ms(backend, feeds, budget_s: float = 1.5) -> float:
    backend.run(feeds)  # warm-up: oneDNN builds primitives per shape
    start = time.perf_counter()
    backend.run(feeds)
    times = [time.perf_counter() - start]
    for _ in range(max(2, min(24, int(budget_s / times[0])))):
        start = time.perf_counter()
        backend.run(feeds)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


def _max_diff(a: List[np.ndarray], b: List[np.ndarray]):
    if [x.shape for x in a] != [x.shape for x in b]:
        return f"shapes differ {[x.shape for x in a]} / {[x.shape for x in b]}"
    return max((float(np.abs(x.astype(np.float64) - y).max()) for x, y in zip(a, b) if x.size), default=0.0)


def measure(model_dir: str, batches: List[int], threads: List[int], rounds: int, photo) -> None:
    spec = load_model_spec(model_dir)
    settings = {(onednn, t): create_backend(spec, RuntimeOptions(cpu_threads=t, use_onednn=onednn))
                for onednn in (False, True) for t in threads}
    for n in batches:
        feeds = _inputs(spec, n, photo)
        feeds = {k: v for k, v in feeds.items() if k in settings[(False, threads[0])].input_names}
        reference = settings[(False, threads[0])].run(feeds)
        best = {key: float("inf") for key in settings}
        for _ in range(rounds):
            for key, backend in settings.items():
                best[key] = min(best[key], _median_ms(backend, feeds))
        for (onednn, t), backend in settings.items():
            diff = "-" if not onednn else f"{_max_diff(reference, backend.run(feeds)):.2g}"
            print(f"| {spec.model_dir.name} | {'oneDNN' if onednn else 'plain'} | {t} | {n} "
                  f"| {best[(onednn, t)]:.1f} | {best[(onednn, t)] / n:.1f} | {diff} |", flush=True)
    auto = settings[(True, threads[-1])]
    if spec.keypoint:  # the pipeline feeds every person at once: any batch size, same answers
        feeds = _inputs(spec, 16, photo)
        singles = [auto.run({"image": feeds["image"][i : i + 1]})[0] for i in range(16)]
        worst = max(float(np.abs(auto.run({"image": feeds["image"][:n]})[0] - np.concatenate(singles[:n])).max())
                    for n in range(1, 17))
        print(f"  {spec.model_dir.name}: batch 1..16 on one predictor OK, max |batch - single| {worst:.2g}")
    else:
        for n in (2, 4, 8):
            feeds = _inputs(spec, n, photo)
            out = auto.run({k: v for k, v in feeds.items() if k in auto.input_names})
            print(f"  {spec.model_dir.name}: batch {n} OK, output shapes {[o.shape for o in out]}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dirs", nargs="+")
    parser.add_argument("--batches", type=int, nargs="+", default=None, help="default: 1 8 (keypoint), 1 (detector)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--photo", help="an image file to feed (RGB-converted); default: a synthetic pattern")
    args = parser.parse_args(argv)
    photo = None
    if args.photo:
        import cv2

        photo = cv2.imread(args.photo)[:, :, ::-1]
    print(f"CPU: {cpu_info().summary()}")
    print("| model | kernels | threads | batch | ms per call | ms per item | max abs diff vs plain |")
    print("|---|---|---|---|---|---|---|")
    for model_dir in args.model_dirs:
        kpt = load_model_spec(model_dir).keypoint is not None
        measure(model_dir, args.batches or ([1, 8] if kpt else [1]), args.threads, args.rounds, photo)


if __name__ == "__main__":
    main()
