"""HTTP serving benchmark: posepipe's server against PaddleX 3.7.2's own
(`paddlex --serve`), same models, same photos, same machine, one run.

    python benchmarks/serving.py                      # concurrency 1, 4, 16; PaddleX from ../venv-paddlex
    python benchmarks/serving.py --quick              # a short run
    python benchmarks/serving.py --no-peer            # posepipe alone
    python benchmarks/serving.py --peer-python /path/to/venv/bin/python --rounds 3

Both servers run side by side on 127.0.0.1 (only one is sent requests at a
time). For each concurrency level, rounds alternate which server goes first
(ABBA...), so both see the same machine state. Each round is closed-loop: C
clients send the photos of ../shared/photos (cycled) back to back; a round's
first C requests warm up and are not counted. Requests ask `visualize: false`
(pass --visualize for the docs client's default). Prints a table and writes
benchmarks/results/serving-<timestamp>.json.

PaddleX's serving needs its serving extra in its venv:
    ../venv-paddlex/bin/pip install "paddlex[serving]==3.7.2"
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import httpx
import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ENDPOINT = "/human-keypoint-detection"
PHOTOS = ["000000014439.jpg", "000000087038.jpg", "000000570688.jpg", "hrnet_demo.jpg"]

PIPELINE_YAML = """\
pipeline_name: human_keypoint_detection
SubModules:
  ObjectDetection:
    module_name: object_detection
    model_name: PP-YOLOE-S_human
    model_dir: {models}/person_detector_nanodet
    batch_size: 1
    threshold: null
    img_size: null
  KeypointDetection:
    module_name: keypoint_detection
    model_name: PP-TinyPose_256x192
    model_dir: {models}/keypoint_movenet_thunder
    batch_size: 1
    flip: False
    use_udp: null
"""


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concurrency", default="1,4,16", help="comma-separated client counts")
    ap.add_argument("--rounds", type=int, default=2, help="rounds per server and concurrency (alternating order)")
    ap.add_argument("--requests", type=int, default=0,
                    help="counted requests per round (default: max(8, 2 x concurrency))")
    ap.add_argument("--max-batch", type=int, default=4, help="posepipe --max_batch (its default: 4)")
    ap.add_argument("--max-wait-ms", type=float, default=5.0, help="posepipe --max_wait_ms (its default: 5)")
    ap.add_argument("--visualize", action="store_true", help="ask for the drawn image (the docs client's default)")
    ap.add_argument("--peer-python", default=os.environ.get("POSEPIPE_PEER_PYTHON")
                    or str(REPO.parent / "venv-paddlex" / "bin" / "python"),
                    help="Python of a venv with paddlex[serving]==3.7.2")
    ap.add_argument("--no-peer", action="store_true", help="measure posepipe alone")
    ap.add_argument("--shared", default=str(REPO.parent / "shared"), help="the shared test assets")
    ap.add_argument("--out", default=str(HERE / "results"), help="folder for the JSON")
    ap.add_argument("--quick", action="store_true", help="concurrency 1,4; one round; few requests")
    ap.add_argument("--startup-timeout", type=float, default=300.0)
    return ap.parse_args(argv)


class Server:
    """A server process on 127.0.0.1 with its log file."""

    def __init__(self, name: str, argv: List[str], port: int, ready_path: str, env: Dict[str, str], log: Path):
        from posepipe.serving.testing import ServerProcess

        self.name = name
        self.ready_path = ready_path
        self.proc = ServerProcess(argv, log, port, env=env)

    @property
    def url(self) -> str:
        return self.proc.url

    def start(self, timeout: float) -> None:
        self.proc.start(wait="ready" if self.ready_path == "/ready" else "health", timeout=timeout)

    def stop(self) -> None:
        self.proc.stop()

    def rss_mib(self) -> float:
        try:
            return round(self.proc.rss_bytes() / 2**20, 1)
        except (OSError, RuntimeError):
            return float("nan")


async def closed_loop(url: str, bodies: List[Dict[str, Any]], concurrency: int, warmup: int) -> Dict[str, Any]:
    """C clients send `bodies` in order, back to back. The first `warmup` are not counted."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    latencies: List[float] = [0.0] * len(bodies)
    statuses: List[int] = [0] * len(bodies)
    persons: List[int] = [-1] * len(bodies)
    started: List[float] = [0.0] * len(bodies)
    next_index = 0
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:

        async def worker() -> None:
            nonlocal next_index
            while next_index < len(bodies):
                i = next_index
                next_index += 1
                started[i] = time.perf_counter()
                try:
                    r = await client.post(ENDPOINT, json=bodies[i])
                    statuses[i] = r.status_code
                    if r.status_code == 200:
                        persons[i] = len(r.json().get("result", {}).get("persons", ()))  # none: ray_serve.py's echo
                except httpx.HTTPError:
                    statuses[i] = -1
                latencies[i] = time.perf_counter() - started[i]

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    counted = range(warmup, len(bodies))
    first = min(started[i] for i in counted)
    last = max(started[i] + latencies[i] for i in counted)
    return {
        "latencies": [latencies[i] for i in counted],
        "errors": sum(1 for i in counted if statuses[i] != 200),
        "seconds": last - first,
        "persons": persons,
    }


def summarize(name: str, concurrency: int, runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    lat = np.array([x for r in runs for x in r["latencies"]]) * 1000.0
    n = len(lat)
    seconds = sum(r["seconds"] for r in runs)
    return {
        "server": name,
        "concurrency": concurrency,
        "requests": n,
        "seconds": round(seconds, 3),
        "rps": round(n / seconds, 3) if seconds > 0 else None,
        "p50_ms": round(float(np.percentile(lat, 50)), 1),
        "p90_ms": round(float(np.percentile(lat, 90)), 1),
        "p99_ms": round(float(np.percentile(lat, 99)), 1),
        "max_ms": round(float(lat.max()), 1),
        "errors": sum(r["errors"] for r in runs),
    }


def print_table(rows: List[Dict[str, Any]], speedups: Dict[str, Dict[str, float]]) -> None:
    head = f"{'conc':>4}  {'server':<9} {'n':>4} {'req/s':>7} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8} {'err':>4}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['concurrency']:>4}  {r['server']:<9} {r['requests']:>4} {r['rps']:>7.2f} {r['p50_ms']:>8.0f} "
              f"{r['p90_ms']:>8.0f} {r['p99_ms']:>8.0f} {r['max_ms']:>8.0f} {r['errors']:>4}")
    for c, s in speedups.items():
        print(f"concurrency {c}: posepipe/PaddleX throughput x{s['rps']:.2f}, p50 x{s['p50']:.2f} lower, "
              f"p99 x{s['p99']:.2f} lower")


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    shared = Path(args.shared)
    models = shared / "models" / "real"
    if not (models / "person_detector_nanodet").is_dir():
        print(f"serving benchmark: {models} is missing", file=sys.stderr)
        return 2
    levels = [int(c) for c in args.concurrency.split(",")] if not args.quick else [1, 4]
    rounds = 1 if args.quick else args.rounds
    photos = [base64.b64encode((shared / "photos" / p).read_bytes()).decode("ascii") for p in PHOTOS]

    work = Path(tempfile.mkdtemp(prefix="posepipe-serving-bench-"))
    config = work / "pipeline.yaml"
    config.write_text(PIPELINE_YAML.format(models=models))

    import posepipe
    from posepipe.serving.testing import free_port

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(posepipe.__file__).absolute().parents[1]),
                                        *filter(None, [env.get("PYTHONPATH")])])
    port = free_port()
    servers = [Server(
        "posepipe",
        [sys.executable, "-m", "posepipe", "serve", "--pipeline", str(config), "--device", "cpu", "--host",
         "127.0.0.1", "--port", str(port), "--max_batch", str(args.max_batch), "--max_wait_ms", str(args.max_wait_ms),
         "--max_queue", "256", "--log_level", "warning"],
        port, "/ready", env, work / "posepipe.log",
    )]
    if not args.no_peer:
        peer_bin = Path(args.peer_python).parent / "paddlex"
        if not peer_bin.exists():
            print(f"serving benchmark: {peer_bin} not found (give --peer-python or --no-peer)", file=sys.stderr)
            return 2
        peer_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        peer_env["PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK"] = "True"
        port = free_port()
        servers.append(Server(
            "paddlex",
            [str(peer_bin), "--serve", "--pipeline", str(config), "--device", "cpu", "--host", "127.0.0.1",
             "--port", str(port)],
            port, "/health", peer_env, work / "paddlex.log",
        ))

    from run import machine  # the CPU model, ISA flags and cores, as every benchmark records them

    results: List[Dict[str, Any]] = []
    meta: Dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {**machine(), "loadavg_start": os.getloadavg()},
        "photos": PHOTOS,
        "visualize": args.visualize,
        "posepipe": {"max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms, "version": posepipe.__version__},
        "rounds": rounds,
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
    }
    try:
        for server in servers:
            t0 = time.perf_counter()
            server.start(args.startup_timeout)
            print(f"{server.name}: up in {time.perf_counter() - t0:.1f} s at {server.url}", flush=True)
        bodies_for = lambda n: [{"image": photos[i % len(photos)], "visualize": args.visualize} for i in range(n)]  # noqa: E731
        # Warm both (model caches, first-call costs) and check they agree on the photos.
        persons: Dict[str, List[int]] = {}
        for server in servers:
            run = asyncio.run(closed_loop(server.url, bodies_for(2 * len(photos)), 4, 0))
            persons[server.name] = run["persons"][: len(photos)]
        meta["persons_per_photo"] = persons
        if len({tuple(v) for v in persons.values()}) > 1:
            print(f"warning: the servers disagree on persons per photo: {persons}", file=sys.stderr)

        for concurrency in levels:
            count = args.requests or max(8, 2 * concurrency)
            runs: Dict[str, List[Dict[str, Any]]] = {s.name: [] for s in servers}
            for r in range(rounds):
                order = servers if r % 2 == 0 else servers[::-1]
                for server in order:
                    run = asyncio.run(closed_loop(server.url, bodies_for(concurrency + count), concurrency, concurrency))
                    runs[server.name].append(run)
                    print(f"  c={concurrency} round {r + 1}/{rounds} {server.name}: {count} requests in "
                          f"{run['seconds']:.1f} s", flush=True)
            for server in servers:
                results.append(summarize(server.name, concurrency, runs[server.name]))
        meta["rss_mib_end"] = {s.name: s.rss_mib() for s in servers}
    finally:
        for server in servers:
            server.stop()
    meta["loadavg_end"] = os.getloadavg()

    speedups: Dict[str, Dict[str, float]] = {}
    if not args.no_peer:
        for concurrency in levels:
            ours = next(r for r in results if r["server"] == "posepipe" and r["concurrency"] == concurrency)
            theirs = next(r for r in results if r["server"] == "paddlex" and r["concurrency"] == concurrency)
            speedups[str(concurrency)] = {
                "rps": round(ours["rps"] / theirs["rps"], 2),
                "p50": round(theirs["p50_ms"] / ours["p50_ms"], 2),
                "p99": round(theirs["p99_ms"] / ours["p99_ms"], 2),
            }
    print()
    print(f"CPU: {meta['machine']['cpu_summary']}")
    print_table(results, speedups)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    target = out_dir / f"serving-{stamp}.json"
    target.write_text(json.dumps({"meta": meta, "results": results, "speedup": speedups}, indent=2))
    print(f"\nwrote {target}")
    return 1 if any(r["errors"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
