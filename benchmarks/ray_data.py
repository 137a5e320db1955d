"""Ray Data benchmark: `posepipe --ray` (posepipe.ray.run_batch) against the
local CLI on a folder, same models and photos as benchmarks/serving.py.

    python benchmarks/ray_data.py                  # 25 copies of the 4 photos, 2 rounds
    python benchmarks/ray_data.py --copies 5 --rounds 1

Three ways over the same folder, alternating in each round (the order
flips), each into a fresh output folder:
  local       create_pipeline(cpu_threads=T) + predict + save_to_json/img, as `posepipe` does
  ray-1xT     run_batch with 1 actor of T threads
  ray-Tx1     run_batch with T actors of 1 thread each
T defaults to the core count. The time of each includes loading the models
(the local pipeline, the actors), not starting Ray (a cluster is up before a
job). Afterwards the result files of every Ray run are compared with the local
ones, byte for byte. Target (issue 12): ray images/s >= 0.9 x local.
Writes benchmarks/results/ray-data-<stamp>.json.
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from measure import alternate  # noqa: E402
from run import fill_folder, machine  # noqa: E402
from serving import PHOTOS, PIPELINE_YAML  # noqa: E402


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--copies", type=int, default=25, help="copies of each photo in the folder")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--shared", default=str(HERE.parent.parent / "shared"))
    ap.add_argument("--out", default=str(HERE / "results"))
    return ap.parse_args(argv)


def local_run(config: Path, folder: Path, out: Path, threads: int) -> float:
    import posepipe

    started = time.perf_counter()
    pipeline = posepipe.create_pipeline(pipeline=str(config), cpu_threads=threads)
    for result in pipeline.predict(str(folder)):
        result.save_to_json(out)
        result.save_to_img(out)
    return time.perf_counter() - started


def ray_run(config: Path, folder: Path, out: Path, actors: int, threads: int) -> float:
    import posepipe.ray

    started = time.perf_counter()
    report = posepipe.ray.run_batch(
        str(config), str(folder), out, progress=False, pipeline_options={"cpu_threads": threads},
        settings=posepipe.ray.RayBatchSettings(actors=actors, actor_cpus=threads),
    )
    assert not report.errors and report.written == report.total, report
    return time.perf_counter() - started


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    shared = Path(args.shared)
    models = shared / "models" / "real"
    if not (models / "person_detector_nanodet").is_dir():
        print(f"ray data benchmark: {models} is missing", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="posepipe-ray-data-bench-"))
    config = work / "pipeline.yaml"
    config.write_text(PIPELINE_YAML.format(models=models))
    folder = work / "photos"
    folder.mkdir()
    images = fill_folder(folder, shared / "photos", PHOTOS, args.copies)
    t = args.threads

    import ray

    ray.init(num_cpus=t, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    modes = {
        "local": lambda out: local_run(config, folder, out, t),
        f"ray-1x{t}": lambda out: ray_run(config, folder, out, 1, t),
        f"ray-{t}x1": lambda out: ray_run(config, folder, out, t, 1),
    }
    outputs: Dict[str, List[Path]] = {name: [] for name in modes}

    def timed(name: str) -> Callable[[], float]:
        def run() -> float:
            out = work / f"out-{name}-{len(outputs[name])}"
            outputs[name].append(out)
            took = modes[name](out)
            print(f"round {len(outputs[name])}/{args.rounds} {name}: {images} images in {took:.1f} s", flush=True)
            return took

        return run

    try:
        seconds = alternate({name: timed(name) for name in modes}, rounds=args.rounds, warmup=0, settle_s=0.0)
    finally:
        ray.shutdown()
    reference = outputs["local"][0]
    expected = {p.name: p.read_bytes() for p in reference.iterdir()}
    identical = all(
        {p.name: p.read_bytes() for p in out.iterdir()} == expected for runs in outputs.values() for out in runs
    )
    rows: List[Dict[str, Any]] = []
    best_local = images / min(seconds["local"])
    for name, runs in seconds.items():
        rate = images / min(runs)
        rows.append({"mode": name, "images": images, "seconds": [round(s, 2) for s in runs],
                     "images_per_s": round(rate, 2), "vs_local": round(rate / best_local, 3)})
    cpu = machine()
    print(f"\nCPU: {cpu['cpu_summary']}; {images} images; best of {args.rounds} rounds")
    print(f"{'mode':<10} {'img/s':>7} {'x local':>8}  seconds")
    for row in rows:
        print(f"{row['mode']:<10} {row['images_per_s']:>7.2f} {row['vs_local']:>8.3f}  {row['seconds']}")
    print(f"result files identical to the local run's: {identical}")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"ray-data-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "machine": cpu,
            "threads": t, "ray": ray.__version__, "loadavg": os.getloadavg(),
            "command": " ".join(["benchmarks/ray_data.py", *(argv if argv is not None else sys.argv[1:])])}
    target.write_text(json.dumps({"meta": meta, "results": rows, "identical_files": identical}, indent=2))
    print(f"wrote {target}")
    shutil.rmtree(work, ignore_errors=True)
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
