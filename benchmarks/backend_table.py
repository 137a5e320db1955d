"""Every use_hpip candidate of a device on each model, without pruning: ms per
call (min over interleaved rounds) and the max difference from plain Paddle
on the CPU (a developer's table; use_hpip itself stops timing clear losers).

    python benchmarks/backend_table.py MODEL_DIR [...] [--rounds 7] [--threads 2] [--batches 1 8]
    python benchmarks/backend_table.py ../shared/models/real/* --bf16    # plus OpenVINO bf16 rows

The CPU model and its ISA flags head the table."""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
from typing import Dict, List, Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from posepipe.models.spec import load_model_spec  # noqa: E402
from posepipe.runtime import Device, RuntimeOptions, parse_device  # noqa: E402
from posepipe.runtime.base import Backend  # noqa: E402
from posepipe.runtime.candidates import CANDIDATES, REFERENCE, Candidate, openvino, paddle  # noqa: E402
from posepipe.runtime.cpu import cpu_info  # noqa: E402
from posepipe.runtime.parity import summarize  # noqa: E402
from posepipe.runtime.select import calibration_batches, check_parity  # noqa: E402
from posepipe.runtime.timing import calibration_feeds, time_backends  # noqa: E402


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dirs", nargs="+")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batches", type=int, nargs="+", default=None, help="default: what use_hpip checks (1 8 / 1 2)")
    parser.add_argument("--bf16", action="store_true", help="add OpenVINO bf16 (its diff is reported, not judged)")
    args = parser.parse_args(argv)
    options = RuntimeOptions(device=parse_device(args.device), cpu_threads=args.threads)
    candidates: List[Candidate] = list(CANDIDATES[options.device.kind])
    if args.bf16:
        candidates.append(Candidate("openvino_bf16", "fp32", openvino("bf16")))
    print(f"device {options.device}, {options.cpu_threads} threads, CPU {cpu_info().summary()}")
    print(f"{'model':40} {'backend':28} {'batch':>5} {'ms/call':>9} {'ms/item':>8}  max diff vs plain Paddle (CPU)")
    for model_dir in args.model_dirs:
        spec = load_model_spec(model_dir)
        label = spec.model_dir.parent.name + "/" + spec.model_dir.name
        reference = paddle(False)(spec, dataclasses.replace(options, device=Device("cpu"), use_onednn=False))
        batches = args.batches or calibration_batches(spec)[0]
        feeds = {b: calibration_feeds(spec, b, reference.input_names) for b in batches}
        expected = {b: reference.run(f) for b, f in feeds.items()}
        ready: Dict[str, Backend] = {}
        diffs: Dict[str, str] = {}
        for cand in candidates:
            try:
                backend = reference if cand.name == REFERENCE else cand.build(spec, options)
                report = check_parity(spec, backend, feeds, expected, cand.precision)
            except Exception as e:  # a developer's table: show why, go on
                print(f"{label:40} {cand.name:28} unavailable: {e}")
                continue
            ready[cand.name] = backend
            diffs[cand.name] = summarize(report.max_diff) + ("" if report.ok else "  MISMATCH: " + report.problems[0])
        times = time_backends(ready, feeds, max_rounds=args.rounds, budget_s=math.inf)
        for name, per_batch in times.items():
            for b, ms in per_batch.items():
                print(f"{label:40} {name:28} {b:5d} {ms:9.1f} {ms / b:8.1f}  {diffs[name]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
