"""posepipe's benchmark: posepipe against PaddleX 3.7.2 on the same models, same run.

    python benchmarks/run.py                 # both model sets, PaddleX from ../venv-paddlex
    python benchmarks/run.py --quick         # a fast smoke run
    python benchmarks/run.py --models real --repeat 9 --peer-python /path/to/venv/bin/python
    python benchmarks/run.py --models real --modes default,use_hpip,openvino,bf16,int8,auto

Each side runs in its own worker process (PaddleX needs its own venv); the
driver alternates their requests so both see the same machine state. Writes
<out>/<name>.json and <out>/<name>.png and prints the table (benchmarks/README.md
explains every column)."""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import kernels  # noqa: E402
import report  # noqa: E402
from _protocol import Worker, WorkerError  # noqa: E402
from measure import alternate, fit_slope, ratio, summary_ms, thresholds_for_counts  # noqa: E402
from suites import GROWTH_PHOTO, SUITES, Suite, default_peer_python, find_shared  # noqa: E402

from posepipe.runtime.cpu import cpu_info  # noqa: E402
from posepipe.runtime.timing import OthersCpu  # noqa: E402

HERE = Path(__file__).resolve().parent
FULL_GROWTH_COUNTS = [1, 2, 5, 10, 20, 30, 40]
QUICK_GROWTH_COUNTS = [1, 4]
QUICK_PHOTOS = ["hrnet_demo.jpg", "000000087038.jpg"]
STAGES = ["det_preprocess", "det_infer", "det_postprocess", "crops", "kpt_infer", "kpt_decode"]
SECTIONS = {"e2e", "growth", "throughput", "kernels"}
PEER = "paddlex"
PEER_TUNED = "paddlex_tuned"
# posepipe's modes, each a column: create_pipeline options. The lower
# precisions are calibrated and checked on COCO images (../shared/eval), not
# on the benchmark's photos.
MODES: Dict[str, Dict[str, Any]] = {
    "default": {},
    "use_hpip": {"use_hpip": True},
    "openvino": {"backend": "openvino"},
    "bf16": {"precision": "bf16", "calibration": "eval/coco_mini/images"},
    "int8": {"precision": "int8", "calibration": "eval/coco_mini/images"},
    "auto": {"precision": "auto", "calibration": "eval/coco_mini/images"},
}


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fast smoke run: real models, 2 photos, few rounds")
    ap.add_argument("--models", choices=["real", "official_arch", "both"], default=None,
                    help="model sets in ../shared/models (default: both; real with --quick)")
    ap.add_argument("--repeat", type=int, default=None,
                    help="warm rounds per photo (default 7; 2 with --quick); growth and throughput use half")
    ap.add_argument("--peer-python", default=default_peer_python(),
                    help="Python of a venv with PaddleX 3.7.2 (default: $POSEPIPE_PEER_PYTHON or ../venv-paddlex)")
    ap.add_argument("--no-peer", action="store_true", help="measure posepipe alone")
    ap.add_argument("--peer-threads", type=int, default=None,
                    help="also run PaddleX with cpu_threads=N on both models, for the e2e table "
                         "(default: the core count; 0: off; off with --quick)")
    ap.add_argument("--modes", default="default",
                    help=f"posepipe's modes to measure, each a column, comma-separated, from {', '.join(MODES)} "
                         "(default: default; the first one also runs the growth and throughput sections)")
    ap.add_argument("--sections", default="e2e,growth,throughput,kernels",
                    help="what to measure, comma-separated (default: all of e2e,growth,throughput,kernels; "
                         "e2e alone gives the per-photo tables and the targets that need them)")
    ap.add_argument("--pp-option", action="append", default=[], metavar="KEY=VALUE",
                    help="extra posepipe create_pipeline option for every mode, e.g. use_onednn=false (repeatable)")
    ap.add_argument("--settle", type=float, default=0.25, help="idle seconds before each timed request")
    ap.add_argument("--out", default=str(HERE / "results"), help="output folder (default benchmarks/results)")
    ap.add_argument("--name", default=None, help="output file stem (default: a timestamp)")
    args = ap.parse_args(argv)
    args.models = args.models or ("real" if args.quick else "both")
    args.repeat = args.repeat or (2 if args.quick else 7)
    args.warmup = 1 if args.quick else 2
    args.side_rounds = max(1, math.ceil(args.repeat / 2))
    args.growth_counts = QUICK_GROWTH_COUNTS if args.quick else FULL_GROWTH_COUNTS
    args.folder_copies = 1 if args.quick else 3
    if args.peer_threads is None:
        args.peer_threads = 0 if args.quick else (os.cpu_count() or 1)
    args.pp_options = dict(parse_option(text) for text in args.pp_option)
    args.sections = {x.strip() for x in args.sections.split(",") if x.strip()}
    if not args.sections <= SECTIONS or "e2e" not in args.sections:
        raise SystemExit(f"--sections: give e2e and any of {', '.join(sorted(SECTIONS - {'e2e'}))}")
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in args.modes if m not in MODES]
    if unknown or not args.modes:
        raise SystemExit(f"--modes: unknown {', '.join(unknown) or 'empty list'}; choose from {', '.join(MODES)}")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    args.name = args.name or (f"{stamp}-quick" if args.quick else stamp)
    return args


def parse_option(text: str):
    key, sep, value = text.partition("=")
    if not sep:
        raise SystemExit(f"--pp-option {text!r}: expected KEY=VALUE")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


class Sides:
    """The two worker processes; `peer` is None when PaddleX is not measured."""

    def __init__(self, args: argparse.Namespace):
        self.posepipe = Worker("posepipe", [sys.executable, str(HERE / "_posepipe_worker.py")])
        self.peer: Optional[Worker] = None
        self.peer_status = self._start_peer(args)

    def _start_peer(self, args) -> str:
        if args.no_peer:
            return "not measured (--no-peer)"
        if not os.path.exists(args.peer_python):
            return f"not measured: {args.peer_python} not found (install it as benchmarks/README.md says, or give --peer-python)"
        self.peer = Worker("paddlex", [args.peer_python, str(HERE / "_paddlex_worker.py")])
        return f"measured with {args.peer_python}"

    def close(self) -> None:
        for worker in (self.posepipe, self.peer):
            if worker:
                worker.close()


def bench_suite(suite: Suite, shared: Path, sides: Sides, args) -> Dict[str, Any]:
    print(f"[{suite.name}] loading models", file=sys.stderr)
    out: Dict[str, Any] = {"models": {"detector": suite.detector_dir, "keypoints": suite.keypoints_dir}}
    out["modes"] = list(args.modes)
    out["posepipe"] = {
        mode: sides.posepipe.request(
            "init", name=pp_name(suite, mode), config=suite.config(shared), options=mode_options(mode, shared, args)
        )
        for mode in args.modes
    }
    peers = init_peers(suite, shared, sides, args)
    out["paddlex"] = peers
    print(f"[{suite.name}] end to end per photo", file=sys.stderr)
    photos = QUICK_PHOTOS if args.quick else suite.photos
    out["photos"] = [bench_photo(suite, shared / "photos" / photo, sides, peers, args) for photo in photos]
    if "growth" in args.sections:
        print(f"[{suite.name}] cost growth", file=sys.stderr)
        out["growth"] = bench_growth(suite, shared / "photos" / GROWTH_PHOTO, sides, peers, args)
    if "throughput" in args.sections:
        print(f"[{suite.name}] throughput", file=sys.stderr)
        out["throughput"] = bench_throughput(suite, shared, sides, peers, args)
    return out


def mode_options(mode: str, shared: Path, args) -> Dict[str, Any]:
    """create_pipeline options of a mode, with --pp-option on top; calibration paths are under ../shared."""
    options = dict(MODES[mode])
    if "calibration" in options:
        options["calibration"] = str(shared / options["calibration"])
    return {**options, **args.pp_options}


def init_peers(suite: Suite, shared: Path, sides: Sides, args) -> Dict[str, Any]:
    """PaddleX's pipelines for this suite: defaults, and optionally cpu_threads=N."""
    if sides.peer is None:
        return {"status": sides.peer_status}
    variants = {PEER: None}
    if args.peer_threads:
        variants[PEER_TUNED] = args.peer_threads
    peers: Dict[str, Any] = {"status": sides.peer_status, "settings": suite.peer_note}
    for key, threads in variants.items():
        try:
            peers[key] = sides.peer.request(
                "init", name=f"{suite.name}:{key}", config=suite.peer_config(shared, threads)
            )
        except WorkerError as e:
            print(f"[{suite.name}] PaddleX could not load ({key}):\n{e}", file=sys.stderr)
            return {"status": f"failed to load: {str(e).strip().splitlines()[-1]}"}
    if PEER_TUNED in peers:
        peers[PEER_TUNED]["settings"] = f"as {PEER}, plus engine_config cpu_threads={args.peer_threads} on both models"
    return peers


def peer_names(peers: Dict[str, Any]) -> List[str]:
    return [key for key in (PEER, PEER_TUNED) if key in peers]


def bench_photo(suite: Suite, path: Path, sides: Sides, peers: Dict[str, Any], args) -> Dict[str, Any]:
    """Every posepipe mode (e2e and its floor) and PaddleX, alternating, on one photo."""
    image = str(path)
    pp = sides.posepipe
    calls = {}
    for mode in args.modes:
        calls[mode] = lambda mode=mode: pp.request("run", name=pp_name(suite, mode), inputs=image)
        calls[f"floor:{mode}"] = lambda mode=mode: pp.request("floor", name=pp_name(suite, mode), image=image)
    for key in peer_names(peers):
        calls[key] = lambda key=key: sides.peer.request("run", name=f"{suite.name}:{key}", inputs=image)
    replies = alternate(calls, args.repeat, args.warmup, args.settle)
    row: Dict[str, Any] = {"photo": path.name, "persons": {}, "e2e": {}, "speedup": {}, "modes": {}}
    for side in [*args.modes, *peer_names(peers)]:
        row["persons"][side] = replies[side][-1]["persons"][0]
        row["e2e"][side] = summary_ms(first_times(replies[side]))
    for mode in args.modes:
        row["speedup"][mode] = {key: ratio(row["e2e"][key], row["e2e"][mode]) for key in peer_names(peers)}
        row["modes"][mode] = floor_and_stages(replies[mode], replies[f"floor:{mode}"], row["e2e"][mode])
    return row


def first_times(replies: List[Dict[str, Any]]) -> List[float]:
    return [reply["times_s"][0] for reply in replies]


def floor_and_stages(runs, floors, e2e: Dict[str, float]) -> Dict[str, Any]:
    """The models-alone floor, posepipe's overhead over it, and its stage times.

    The overhead is taken three ways, because a busy machine shifts single
    numbers: per round (each e2e run against the floor measured next to it,
    median of the shares: the target's figure), on minima, and inside the
    e2e run itself (total minus the pipeline's own model clock)."""
    det = [f["det_model_s"][0] for f in floors]
    kpt = [f["kpt_model_s"][0] for f in floors]
    decode = [f["decode_s"][0] for f in floors]
    totals = first_times(runs)
    floor_s = [d + k for d, k in zip(det, kpt)]
    floor = summary_ms(floor_s)
    models_in_run = [run["stages_s"][0].get("det_infer", 0.0) + run["stages_s"][0].get("kpt_infer", 0.0) for run in runs]
    stages = {"decode": summary_ms(decode)}
    for key in STAGES:
        stages[key] = summary_ms([run["stages_s"][0].get(key, 0.0) for run in runs])
    rest = [
        total - sum(run["stages_s"][0].get(key, 0.0) for key in STAGES) - dec
        for total, run, dec in zip(totals, runs, decode)
    ]
    stages["result_and_glue"] = summary_ms(rest)
    return {
        "floor": {"det_model": summary_ms(det), "kpt_model": summary_ms(kpt), "total": floor},
        "overhead": {
            "ms": 1000.0 * statistics.median(t - f for t, f in zip(totals, floor_s)),
            "share_of_e2e": statistics.median((t - f) / t for t, f in zip(totals, floor_s)),
            "share_on_minima": (e2e["min_ms"] - floor["min_ms"]) / e2e["min_ms"],
            "share_in_run": statistics.median((t - m) / t for t, m in zip(totals, models_in_run)),
        },
        "stages": stages,
    }


def bench_growth(suite: Suite, path: Path, sides: Sides, peers: Dict[str, Any], args) -> Dict[str, Any]:
    """End-to-end time against persons, by lowering the detection threshold on one photo."""
    image = str(path)
    scores = sides.posepipe.request("scores", name=pp_name(suite, args.modes[0]), image=image)
    points = thresholds_for_counts(scores, args.growth_counts)
    names = ["posepipe"] + ([PEER] if PEER in peers else [])
    for point in points:
        calls = {name: growth_call(sides, suite, name, image, point["det_threshold"], args.modes[0]) for name in names}
        replies = alternate(calls, args.side_rounds, 1, args.settle)
        for name, runs in replies.items():
            point.setdefault("persons", {})[name] = runs[-1]["persons"][0]
            point.setdefault("e2e", {})[name] = summary_ms(first_times(runs))
    out: Dict[str, Any] = {"photo": path.name, "mode": args.modes[0], "points": points, "slope": {}}
    for name in names:
        if len(points) >= 2:
            xs = [p["persons"][name] for p in points]
            ys = [p["e2e"][name]["median_ms"] for p in points]
            out["slope"][name] = fit_slope(xs, ys)
    if len(out["slope"]) == 2:
        out["slope_ratio"] = out["slope"][PEER]["ms_per_person"] / out["slope"]["posepipe"]["ms_per_person"]
    return out


def growth_call(sides: Sides, suite: Suite, name: str, image: str, threshold: float, mode: str):
    if name == "posepipe":
        return lambda: sides.posepipe.request("run", name=pp_name(suite, mode), inputs=image, det_threshold=threshold)
    return lambda: sides.peer.request("run", name=f"{suite.name}:{PEER}", inputs=image, det_threshold=threshold)


def bench_throughput(suite: Suite, shared: Path, sides: Sides, peers: Dict[str, Any], args) -> Dict[str, Any]:
    """Images per second over a folder (the photos, copied `folder_copies` times).
    posepipe also runs without prefetch and with 4 images per detector batch,
    to show what overlapping and cross-image batching are worth (all in the
    first mode)."""
    primary = mode_options(args.modes[0], shared, args)
    variants = {
        "posepipe": (suite.config(shared), {}),
        "posepipe_no_prefetch": (suite.config(shared), {"prefetch": False}),
        "posepipe_det_batch4": (suite.config(shared, det_batch_size=4), {}),
    }
    names = {"posepipe": pp_name(suite, args.modes[0])}
    for key, (config, options) in variants.items():
        if key != "posepipe":
            names[key] = pp_name(suite, f"{args.modes[0]}:{key}")
            sides.posepipe.request("init", name=names[key], config=config, options={**primary, **options})
    with tempfile.TemporaryDirectory(prefix="posepipe-bench-") as folder:
        photos = QUICK_PHOTOS if args.quick else suite.photos
        n_images = fill_folder(Path(folder), shared / "photos", photos, args.folder_copies)
        calls = {key: (lambda key=key: sides.posepipe.request("run", name=names[key], inputs=folder)) for key in variants}
        if PEER in peers:
            calls[PEER] = lambda: sides.peer.request("run", name=f"{suite.name}:{PEER}", inputs=folder)
        replies = alternate(calls, args.side_rounds, 1, args.settle)
    out: Dict[str, Any] = {"images": n_images, "mode": args.modes[0]}
    for key, runs in replies.items():
        times = summary_ms(first_times(runs))
        out[key] = {
            "images_per_s": 1000.0 * n_images / times["median_ms"],
            "best_images_per_s": 1000.0 * n_images / times["min_ms"],
            "folder_ms": times,
            "persons": sum(runs[-1]["persons"]),
        }
    if PEER in out:
        out["speedup"] = out["posepipe"]["images_per_s"] / out[PEER]["images_per_s"]
    return out


def pp_name(suite: Suite, mode: str) -> str:
    """The name of a posepipe pipeline in its worker: the suite's and the mode's (or a variant of it)."""
    return f"{suite.name}:{mode}"


def fill_folder(folder: Path, photos: Path, names: List[str], copies: int) -> int:
    count = 0
    for copy in range(copies):
        for name in names:
            shutil.copyfile(photos / name, folder / f"{copy:02d}_{name}")
            count += 1
    return count


def machine() -> Dict[str, Any]:
    """The machine every figure of a result was taken on: CPU model, ISA flags, cores."""
    cpu = cpu_info()
    return {
        "cpu": cpu.model,
        "isa": cpu.isa(),
        "cpu_summary": cpu.summary(),
        "cores": cpu.cores,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    shared = find_shared()
    suites = ["real", "official_arch"] if args.models == "both" else [args.models]
    results: Dict[str, Any] = {
        "meta": {
            "command": " ".join([os.path.basename(sys.executable), "benchmarks/run.py"] + (argv if argv is not None else sys.argv[1:])),
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "machine": machine(),
            "repeat": args.repeat,
            "warmup": args.warmup,
            "settle_s": args.settle,
            "posepipe_options": args.pp_options,
            "modes": {mode: MODES[mode] for mode in args.modes},
            "sections": sorted(args.sections),
        },
        "suites": {},
    }
    # How much CPU other processes took while the benchmark ran: a busy machine
    # shifts every number, so the table says when it happened. Read after the
    # workers are closed, so that their CPU counts as this run's own.
    witness = OthersCpu()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops the workers
    sides = Sides(args)
    try:
        for name in suites:
            results["suites"][name] = bench_suite(SUITES[name], shared, sides, args)
        results["meta"]["paddlex"] = sides.peer_status
    finally:
        sides.close()
    if "kernels" in args.sections:
        print("[kernels] micro-benchmarks", file=sys.stderr)
        results["kernels"] = kernels.run_all(shared, suites, quick=args.quick)
    results["meta"]["machine"]["others_cpu_share"] = witness.share()
    results["targets"] = report.check_targets(results)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{args.name}.json"
    json_path.write_text(json.dumps(results, indent=1))
    png_path = report.chart(results, out_dir / f"{args.name}.png")
    print(report.table(results))
    print(f"\nwrote {json_path}" + (f" and {png_path}" if png_path else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
