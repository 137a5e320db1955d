"""Ray Serve benchmark: posepipe's Ray Serve application against `posepipe
serve`, and 2 pipeline replicas against 1, on the models and photos of
benchmarks/serving.py, in one run.

    python benchmarks/ray_serve.py                 # both comparisons, 3 rounds each
    python benchmarks/ray_serve.py --quick         # one round, fewer requests

One local Ray runs in this process (with more logical CPUs than cores, so
that all the applications below fit at once; each pipeline's threads are
set explicitly) and serves three applications side by side on 127.0.0.1:
  ray-1x{T}   1 replica, --threads T (default: the core count)   /r1
  ray-1x1     1 replica, 1 thread                                 /one
  ray-2x1     2 replicas, 1 thread each                           /two
next to `posepipe serve --cpu_threads T` in a child process. Only one is
sent requests at a time; rounds alternate the order (ABBA), so each pair
sees the same machine state, and the figures that matter are same-run
ratios. Closed loop as benchmarks/serving.py (C clients back to back, the
first C requests not counted, `visualize: false`); the load generator runs
in this process and takes CPU from the servers (noted in the output).

Without a model (FakePipeline), the Ray path against `posepipe serve` at
concurrency 1, next to Ray Serve's own floor: an echo deployment one hop
behind Ray's proxy, and one forwarding the body to a second (two hops, as
posepipe's ingress and pipeline replica).

Targets (issue 12): ray-1xT rps at concurrency 16 >= 0.85 x posepipe serve's;
ray-1xT p50 - posepipe serve p50 <= 10 ms at concurrency 1; ray-2x1 rps >=
1.7 x ray-1x1 at concurrency 16. Writes benchmarks/results/ray-serve-<stamp>.json.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from measure import alternate  # noqa: E402
from run import machine  # noqa: E402
from serving import PHOTOS, PIPELINE_YAML, closed_loop, summarize  # noqa: E402


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="rounds per server and concurrency (alternating order)")
    ap.add_argument("--requests", type=int, default=0, help="counted requests per round (default: max(12, 3 x C))")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads of ray-1xT and posepipe serve")
    ap.add_argument("--max-batch", type=int, default=4)
    ap.add_argument("--shared", default=str(HERE.parent.parent / "shared"))
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--quick", action="store_true", help="one round, fewer requests")
    ap.add_argument("--only", choices=("overhead", "floor", "scaling"), help="run one of the comparisons")
    return ap.parse_args(argv)


def alternate_servers(
    servers: Dict[str, str], levels: List[int], rounds: int, requests: int, photos: List[str]
) -> List[Dict[str, Any]]:
    """Rounds over `servers` (name -> URL), the order flipped each round; a summary per server and level."""
    results = []
    for concurrency in levels:
        count = requests or max(12, 3 * concurrency)
        bodies = [{"image": photos[i % len(photos)], "visualize": False} for i in range(concurrency + count)]

        def closed(name: str) -> Callable[[], Dict[str, Any]]:
            def run() -> Dict[str, Any]:
                done = asyncio.run(closed_loop(servers[name], bodies, concurrency, concurrency))
                print(f"  c={concurrency} {name}: {count} requests in {done['seconds']:.1f} s", flush=True)
                return done

            return run

        runs = alternate({name: closed(name) for name in servers}, rounds=rounds, warmup=0, settle_s=0.0)
        results.extend(summarize(name, concurrency, runs[name]) for name in servers)
    return results


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    shared = Path(args.shared)
    models = shared / "models" / "real"
    if not (models / "person_detector_nanodet").is_dir():
        print(f"ray serve benchmark: {models} is missing", file=sys.stderr)
        return 2
    rounds = 1 if args.quick else args.rounds
    requests = 8 if args.quick else args.requests
    photos = [base64.b64encode((shared / "photos" / p).read_bytes()).decode("ascii") for p in PHOTOS]
    work = Path(tempfile.mkdtemp(prefix="posepipe-ray-bench-"))
    config = work / "pipeline.yaml"
    config.write_text(PIPELINE_YAML.format(models=models))

    import ray
    from ray import serve

    import posepipe
    import posepipe.ray
    from posepipe.serving import ServingSettings
    from posepipe.serving.testing import FakePipeline, ServerProcess, free_port

    @serve.deployment(ray_actor_options={"num_cpus": 0})
    class _Echo:
        """Reads the body, answers its length: Ray Serve's floor."""

        async def __call__(self, request: Any) -> Dict[str, int]:
            return {"bytes": len(await request.body())}

        async def length(self, body: bytes) -> Dict[str, int]:
            return {"bytes": len(body)}

    @serve.deployment(ray_actor_options={"num_cpus": 0})
    class _Forward:
        """The body on to another deployment, as posepipe's ingress sends the image file."""

        def __init__(self, inner: Any):
            self.inner = inner

        async def __call__(self, request: Any) -> Dict[str, int]:
            return await self.inner.length.remote(await request.body())

    settings = ServingSettings(max_batch=args.max_batch, max_queue=256, access_log=False, log_level="warning")
    ray.init(num_cpus=8, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    ray_url = f"http://127.0.0.1:{port}"
    local = None
    meta: Dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "loadavg_start": os.getloadavg(),
        "ray": ray.__version__,
        "posepipe": posepipe.__version__,
        "threads": args.threads,
        "rounds": rounds,
        "command": " ".join(["benchmarks/ray_serve.py", *(argv if argv is not None else sys.argv[1:])]),
        "load_generator": "httpx in this process, on the same cores as the servers",
    }
    results: List[Dict[str, Any]] = []
    checks: Dict[str, Any] = {}
    try:
        def deploy(name: str, prefix: str, replicas: int, threads: int) -> str:
            t0 = time.perf_counter()
            app = posepipe.ray.build_app(
                str(config), settings, device="cpu", pipeline_options={"cpu_threads": threads},
                ray_settings=posepipe.ray.RayServeSettings(replicas=replicas, replica_cpus=threads),
            )
            serve.run(app, name=name, route_prefix=prefix)
            print(f"{name}: up in {time.perf_counter() - t0:.1f} s", flush=True)
            return ray_url + prefix

        if args.only in (None, "overhead"):
            local = ServerProcess.cli(
                work, ["--pipeline", str(config), "--device", "cpu", "--max_batch", str(args.max_batch),
                       "--max_queue", "256", "--cpu_threads", str(args.threads), "--log_level", "warning",
                       "--no_access_log"], name="posepipe",
            ).start(timeout=300)
            name_t = f"ray-1x{args.threads}"
            servers = {"posepipe serve": local.url, name_t: deploy("r1", "/r1", 1, args.threads)}
            for url in servers.values():  # warm both
                asyncio.run(closed_loop(url, [{"image": p, "visualize": False} for p in photos * 2], 4, 0))
            part = alternate_servers(servers, [1, 16], rounds, requests, photos)
            results.extend(part)
            row = {(r["server"], r["concurrency"]): r for r in part}
            checks["rps ratio at c=16 (ray-1xT / posepipe serve), target >= 0.85"] = round(
                row[(name_t, 16)]["rps"] / row[("posepipe serve", 16)]["rps"], 3)
            checks["p50 overhead at c=1 in ms (ray-1xT - posepipe serve), target <= 10"] = round(
                row[(name_t, 1)]["p50_ms"] - row[("posepipe serve", 1)]["p50_ms"], 1)
            local.stop()
            local = None
            serve.delete("r1")
        if args.only in (None, "floor"):
            # What the Ray path costs without a model, and Ray Serve's own cost
            # of one and two HTTP-to-replica hops with the same request body.
            fake_local = ServerProcess.fake(work, {"max_batch": args.max_batch, "max_queue": 256,
                                                   "access_log": False, "log_level": "warning"}).start(timeout=120)
            try:
                fake_app = posepipe.ray.build_app(
                    FakePipeline(), settings, ray_settings=posepipe.ray.RayServeSettings(replicas=1, replica_cpus=1))
                serve.run(fake_app, name="fake", route_prefix="/fake")
                serve.run(_Echo.bind(), name="echo", route_prefix="/echo")
                serve.run(_Forward.bind(_Echo.bind()), name="forward", route_prefix="/forward")
                servers = {"fake posepipe serve": fake_local.url, "fake ray": ray_url + "/fake",
                           "ray echo, 1 hop": ray_url + "/echo", "ray echo, 2 hops": ray_url + "/forward"}
                for url in servers.values():
                    asyncio.run(closed_loop(url, [{"image": p, "visualize": False} for p in photos * 2], 1, 0))
                part = alternate_servers(servers, [1], rounds, requests, photos)
            finally:
                fake_local.stop()
            results.extend(part)
            row = {r["server"]: r for r in part}
            checks["p50 at c=1 in ms without a model (fake ray - fake posepipe serve)"] = round(
                row["fake ray"]["p50_ms"] - row["fake posepipe serve"]["p50_ms"], 1)
            checks["p50 at c=1 in ms of Ray Serve's own hops (echo: 1 hop, 2 hops)"] = [
                round(row["ray echo, 1 hop"]["p50_ms"], 1), round(row["ray echo, 2 hops"]["p50_ms"], 1)]
            for name in ("fake", "echo", "forward"):
                serve.delete(name)
        if args.only in (None, "scaling"):
            servers = {"ray-1x1": deploy("one", "/one", 1, 1), "ray-2x1": deploy("two", "/two", 2, 1)}
            for url in servers.values():
                asyncio.run(closed_loop(url, [{"image": p, "visualize": False} for p in photos * 2], 4, 0))
            part = alternate_servers(servers, [16], rounds, requests, photos)
            results.extend(part)
            row = {r["server"]: r for r in part}
            checks["rps ratio at c=16 (ray-2x1 / ray-1x1), target >= 1.7"] = round(
                row["ray-2x1"]["rps"] / row["ray-1x1"]["rps"], 3)
    finally:
        if local is not None:
            local.stop()
        serve.shutdown()
        ray.shutdown()
    meta["loadavg_end"] = os.getloadavg()

    print(f"\nCPU: {meta['machine']['cpu_summary']}; load generator in the same process")
    head = f"{'conc':>4}  {'server':<20} {'n':>4} {'req/s':>7} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'err':>4}"
    print(head)
    print("-" * len(head))
    for r in results:
        print(f"{r['concurrency']:>4}  {r['server']:<20} {r['requests']:>4} {r['rps']:>7.2f} {r['p50_ms']:>8.0f} "
              f"{r['p90_ms']:>8.0f} {r['p99_ms']:>8.0f} {r['errors']:>4}")
    for name, value in checks.items():
        print(f"{name}: {value}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"ray-serve-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    target.write_text(json.dumps({"meta": meta, "results": results, "checks": checks}, indent=2))
    print(f"\nwrote {target}")
    return 1 if any(r["errors"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
