"""posepipe eval against PaddleX 3.7.2 + pycocotools, same models, same images, same run.

    python benchmarks/eval.py                          # ../shared/eval/coco_mini, real models, PaddleX from ../venv-paddlex
    python benchmarks/eval.py --repeat 9 --pp-option use_hpip=true
    python benchmarks/eval.py --no-peer                # posepipe alone

Two scenarios, each timed with models loaded and warm on both sides:
* `end to end`: posepipe eval's end-to-end mode against PaddleX's
  pipeline.predict over the images, then pycocotools;
* `all three modes`: posepipe eval as it runs by default against what a
  PaddleX user runs for the same three numbers: pipeline.predict, the keypoint
  model on every ground-truth box (the pipeline's own per-person call), the
  detector alone at the same lowest score, then pycocotools three times.
PaddleX's detections are scored by the same code posepipe's are (the same
COCO results conversion and pycocotools adapter), so the AP columns compare
the engines, not the scoring. Writes <out>/<name>.json and prints the table."""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from measure import alternate  # noqa: E402
from report import publish  # noqa: E402
from run import Sides, machine, parse_option  # noqa: E402
from suites import SUITES, default_peer_python, find_shared  # noqa: E402

from posepipe.evaluation.checks import load_dataset  # noqa: E402
from posepipe.runtime.timing import OthersCpu  # noqa: E402
from posepipe.evaluation.coco import STAT_NAMES, ground_truth, score  # noqa: E402
from posepipe.evaluation.modes import box_results, keypoint_results  # noqa: E402
from posepipe.evaluation.report import IOU_TYPES  # noqa: E402
from posepipe.evaluation.settings import E2E, MODES  # noqa: E402

HERE = Path(__file__).resolve().parent
SCENARIOS = {"end to end": (E2E,), "all three modes": MODES}
SPEEDUP_TARGET = 5.0
AP_TOLERANCE = 0.01


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=None, help="COCO person-keypoints dataset folder (default ../shared/eval/coco_mini)")
    ap.add_argument("--models", choices=sorted(SUITES), default="real", help="model set in ../shared/models (default real)")
    ap.add_argument("--repeat", type=int, default=5, help="timed rounds per scenario (default 5), after one warm-up round")
    ap.add_argument("--det-min-score", type=float, default=0.0, help="lowest detector score of the detection mode, both sides")
    ap.add_argument("--peer-python", default=default_peer_python(), help="Python of a venv with PaddleX 3.7.2")
    ap.add_argument("--no-peer", action="store_true", help="measure posepipe alone")
    ap.add_argument("--pp-option", action="append", default=[], metavar="KEY=VALUE", help="extra posepipe create_pipeline option")
    ap.add_argument("--settle", type=float, default=0.25, help="idle seconds before each timed request")
    ap.add_argument("--out", default=str(HERE / "results"), help="output folder (default benchmarks/results)")
    ap.add_argument("--name", default=None, help="output file stem (default: eval-<timestamp>)")
    args = ap.parse_args(argv)
    args.pp_options = dict(parse_option(text) for text in args.pp_option)
    args.name = args.name or "eval-" + datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return args


class PeerScorer:
    """PaddleX's persons -> COCO results -> the evaluator, with posepipe's own
    conversion and adapter; the time it takes is added to PaddleX's side."""

    def __init__(self, dataset):
        self.dataset = dataset
        self.gt = ground_truth(dataset.coco)

    def __call__(self, persons: Dict[str, List[List[Dict[str, Any]]]]) -> Dict[str, Dict[str, float]]:
        ids = [e.id for e in self.dataset.images]
        category, joints = self.dataset.person_category, len(self.dataset.keypoint_names)
        stats = {}
        for mode, per_image in persons.items():
            results: List[Dict[str, Any]] = []
            for image_id, found in zip(ids, per_image):
                if IOU_TYPES[mode] == "bbox":
                    rows = np.array([[*p["coordinate"], p["det_score"]] for p in found], np.float32).reshape(-1, 5)
                    results += box_results(image_id, category, rows)
                else:
                    boxes = [{"det_score": p["det_score"], "keypoints": np.asarray(p["keypoints"], np.float32)} for p in found]
                    results += keypoint_results(image_id, category, {"boxes": boxes}, joints)
            stats[mode] = score(self.gt, results, IOU_TYPES[mode], category, ids).stats
        return stats


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    shared = find_shared()
    dataset_dir = Path(args.dataset) if args.dataset else shared / "eval" / "coco_mini"
    dataset, checked = load_dataset(dataset_dir)
    suite = SUITES[args.models]
    images = [{"path": str(e.path), "gt_boxes": dataset.gt_boxes(e.id).tolist()} for e in dataset.images]
    results: Dict[str, Any] = {
        "meta": {
            "command": " ".join(["python", "benchmarks/eval.py"] + (argv if argv is not None else sys.argv[1:])),
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "machine": machine(),
            "dataset": str(dataset_dir),
            "dataset_counts": checked.counts(),
            "models": {"detector": suite.detector_dir, "keypoints": suite.keypoints_dir},
            "repeat": args.repeat,
            "posepipe_options": args.pp_options,
        },
        "scenarios": {},
    }
    witness = OthersCpu()
    sides = Sides(args)
    try:
        results["meta"]["posepipe"] = sides.posepipe.request("init", name="eval", config=suite.config(shared), options=args.pp_options)
        if sides.peer is not None:
            results["meta"]["paddlex"] = sides.peer.request("init", name="eval", config=suite.peer_config(shared))
        results["meta"]["paddlex_status"] = sides.peer_status
        scorer = PeerScorer(dataset)
        for scenario, modes in SCENARIOS.items():
            print(f"[eval] {scenario}", file=sys.stderr)
            results["scenarios"][scenario] = bench_scenario(sides, scorer, dataset_dir, images, list(modes), args)
    finally:
        sides.close()
    results["meta"]["machine"]["others_cpu_share"] = witness.share()
    results["targets"] = targets(results)
    publish(results, args.out, args.name, table(results))
    return 0


def bench_scenario(sides: Sides, scorer: PeerScorer, dataset_dir: Path, images, modes: List[str], args) -> Dict[str, Any]:
    def posepipe_call():
        reply = sides.posepipe.request("eval", name="eval", dataset=str(dataset_dir), modes=modes, det_min_score=args.det_min_score)
        reply["parts_s"] = {"pipeline": reply.pop("pipeline_s"), "evaluator": reply.pop("evaluator_s")}
        return reply

    def peer_call():
        reply = sides.peer.request("eval", name="eval", images=images, modes=modes, det_min_score=args.det_min_score)
        t0 = time.perf_counter()
        stats = scorer(reply["persons"])
        scoring = time.perf_counter() - t0
        return {
            "seconds": sum(reply["seconds"].values()) + scoring,
            "parts_s": {**{f"{m} (PaddleX)": s for m, s in reply["seconds"].items()}, "evaluator": scoring},
            "stats": stats,
            "persons": {m: sum(len(p) for p in per_image) for m, per_image in reply["persons"].items()},
        }

    calls = {"posepipe": posepipe_call}
    if sides.peer is not None:
        calls["paddlex"] = peer_call
    rounds = alternate(calls, rounds=args.repeat, warmup=1, settle_s=args.settle)
    out: Dict[str, Any] = {"modes": modes}
    for side, replies in rounds.items():
        seconds = [r["seconds"] for r in replies]
        out[side] = {
            "min_s": min(seconds),
            "median_s": statistics.median(seconds),
            "n": len(seconds),
            "stats": replies[-1]["stats"],
            "persons": replies[-1]["persons"],
            "parts_median_s": {k: statistics.median(r["parts_s"][k] for r in replies) for k in replies[0]["parts_s"]},
        }
    if "paddlex" in out:
        out["speedup"] = {
            "median": out["paddlex"]["median_s"] / out["posepipe"]["median_s"],
            "min": out["paddlex"]["min_s"] / out["posepipe"]["min_s"],
        }
    return out


def targets(results: Dict[str, Any]) -> List[Dict[str, str]]:
    all_modes = results["scenarios"]["all three modes"]
    if "paddlex" not in all_modes:
        return [{"target": "PaddleX comparison", "status": f"SKIP: {results['meta']['paddlex_status']}"}]
    ours, theirs = all_modes["posepipe"]["stats"][E2E]["AP"], all_modes["paddlex"]["stats"][E2E]["AP"]
    found = [
        {
            "target": f"end-to-end AP within {AP_TOLERANCE} of PaddleX's pipeline",
            "status": f"{'PASS' if abs(ours - theirs) <= AP_TOLERANCE else 'FAIL'}: {ours:.4f} vs {theirs:.4f}",
        }
    ]
    for scenario, data in results["scenarios"].items():
        s = data["speedup"]["median"]
        found.append(
            {
                "target": f">= {SPEEDUP_TARGET:g}x faster than PaddleX + pycocotools ({scenario}, medians)",
                "status": f"{'PASS' if s >= SPEEDUP_TARGET else 'FAIL'}: {s:.1f}x",
            }
        )
    return found


def table(results: Dict[str, Any]) -> str:
    meta = results["meta"]
    m = meta["machine"]
    others = m.get("others_cpu_share")
    lines = [
        f"posepipe eval vs PaddleX + pycocotools on {meta['dataset']} ({meta['dataset_counts']})",
        f"models: {meta['models']['detector']} + {meta['models']['keypoints']}; CPU: {m['cpu']}, {m['cores']} cores"
        + (f"; other processes took {others:.0%} of the CPU meanwhile" if others is not None else ""),
        f"PaddleX: {meta['paddlex_status']}",
        "",
        f"{'scenario':<18}{'posepipe s (min / median)':>28}{'PaddleX s (min / median)':>28}{'speedup (median / min)':>26}",
    ]
    for scenario, data in results["scenarios"].items():
        p = data["posepipe"]
        row = f"{scenario:<18}{p['min_s']:>15.3f} / {p['median_s']:<10.3f}"
        if "paddlex" in data:
            x, s = data["paddlex"], data["speedup"]
            row += f"{x['min_s']:>15.3f} / {x['median_s']:<10.3f}{s['median']:>13.1f}x / {s['min']:.1f}x"
        lines.append(row)
    all_modes = results["scenarios"]["all three modes"]
    lines += ["", "stats (all three modes), posepipe / PaddleX:"]
    for mode in MODES:
        names = STAT_NAMES[IOU_TYPES[mode]]
        lines.append(f"  {mode}")
        lines.append("    " + "".join(f"{n:>15}" for n in names))
        ours = all_modes["posepipe"]["stats"][mode]
        theirs = all_modes.get("paddlex", {}).get("stats", {}).get(mode)
        cells = [f"{ours[n]:.3f}" + (f"/{theirs[n]:.3f}" if theirs else "") for n in names]
        lines.append("    " + "".join(f"{c:>15}" for c in cells))
    lines += ["", "targets:"] + [f"  {t['status']:<22} {t['target']}" for t in results["targets"]]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
