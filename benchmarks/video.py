"""posepipe on video: the targets of issue 10 on ../shared/videos/vtest.avi
with the real models (NanoDet + MoveNet Thunder), PaddleX 3.7.2 in the same run.

    python benchmarks/video.py                  # everything, about 10 minutes on 2 idle cores
    python benchmarks/video.py --quick --no-peer  # a smoke run of posepipe alone

What it measures, each side in its own worker process, sides alternating
round by round (so both see the same machine):
  vs PaddleX        frames/s on vtest's first --frames frames: PaddleX driven by
                    the obvious loop (OpenCV reads a frame, predict() on it),
                    posepipe's predict(video) in every-frame mode, use_hpip and default,
                    and use_hpip with prefetch=False (decoding in line: what the
                    decode thread gains)
  detector skipping det_frequency=5 with tracking against every frame, on all of
                    vtest and on a single-person clip made from a shared photo:
                    frames/s ratio, mean OKS against the every-frame output, the
                    longest run of frames a person of it is missing
  smoothing         jitter of a person standing still (a photo with sensor noise):
                    mean frame-to-frame joint displacement, raw and smoothed; lag:
                    the delay (frames) that best lays the smoothed path of a
                    moving person onto the raw one, on a panned photo and on
                    vtest's walkers
  memory            resident set after every frame of vtest, from frame 100 on
  live              a 60 s MJPEG camera over HTTP at 25 fps (vtest's frames):
                    latency from the camera sending a frame to its result, p50/p99,
                    first against last 10 s, and frames dropped as stale

Writes <out>/<name>.json and prints the table and the targets."""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _protocol import Worker  # noqa: E402
from measure import alternate  # noqa: E402
from report import publish  # noqa: E402
from run import machine  # noqa: E402

from posepipe.runtime.timing import OthersCpu  # noqa: E402
from suites import SUITES, default_peer_python, find_shared  # noqa: E402
from video_clips import MjpegCamera, photo_clip, read_frames, write_video  # noqa: E402
from video_metrics import agreement, jitter, lag_frames  # noqa: E402

HERE = Path(__file__).resolve().parent
DET_FREQUENCY = 5
CAMERA_FPS = 25.0
# A person counts as moving for the lag measure when their path spans this many pixels.
MIN_TRAVEL_PX = 20.0


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a smoke run: few frames, a 10 s camera, one round")
    ap.add_argument("--frames", type=int, default=None, help="vtest frames for the PaddleX comparison (default 100)")
    ap.add_argument("--rounds", type=int, default=None, help="alternating rounds per comparison (default 2)")
    ap.add_argument("--live-seconds", type=float, default=None, help="length of the simulated camera run (default 60)")
    ap.add_argument("--peer-python", default=default_peer_python(), help="Python of a venv with PaddleX 3.7.2")
    ap.add_argument("--no-peer", action="store_true", help="measure posepipe alone")
    ap.add_argument("--out", default=str(HERE / "results"), help="output folder (default benchmarks/results)")
    ap.add_argument("--name", default=None, help="output file stem (default video-<timestamp>)")
    args = ap.parse_args(argv)
    args.frames = args.frames or (10 if args.quick else 100)
    args.rounds = args.rounds or (1 if args.quick else 2)
    args.live_seconds = args.live_seconds or (10.0 if args.quick else 60.0)
    args.vtest_frames = 40 if args.quick else None  # None: all 340
    args.clip_frames = 40 if args.quick else 150
    args.name = args.name or datetime.datetime.now().strftime("video-%Y%m%d-%H%M%S")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    shared = find_shared()
    vtest = str(shared / "videos" / "vtest.avi")
    config = SUITES["real"].config(shared)
    witness = OthersCpu()
    out: Dict[str, Any] = {
        "meta": {
            "command": " ".join(["python", "benchmarks/video.py"] + (argv if argv is not None else sys.argv[1:])),
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "machine": machine(),
            "video": "vtest.avi (768x576, 10 fps, 340 frames)",
            "models": "real: NanoDet (PP-YOLOE-S_human contract) + MoveNet Thunder (PP-TinyPose_256x192 contract)",
        }
    }
    workers: Dict[str, Worker] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="posepipe-video-bench-") as tmp:
            clips = make_clips(shared, Path(tmp), args)
            workers["hpip"] = start_posepipe("hpip", config, {"use_hpip": True})
            workers["hpip_inline"] = start_posepipe("hpip_inline", config, {"use_hpip": True, "prefetch": False})
            workers["default"] = start_posepipe("default", config, {})
            peer = start_peer(config, args) if not args.no_peer else None
            out["meta"]["paddlex"] = "measured" if peer else "not measured"
            if peer:
                workers["paddlex"] = peer
            out["vs_paddlex"] = bench_vs_paddlex(workers, vtest, args)
            out["det_frequency"] = {
                "vtest": bench_det_frequency(workers["hpip"], vtest, args.vtest_frames, args, rss=True),
                "single_person": bench_det_frequency(workers["hpip"], clips["single"], None, args),
            }
            out["smoothing"] = bench_smoothing(workers["hpip"], clips, vtest, args)
            out["memory"] = memory_from(out["det_frequency"]["vtest"].pop("rss_mb"))
            out["live"] = bench_live(workers["hpip"], shared, args)
    finally:
        for worker in workers.values():
            worker.close()
    out["meta"]["machine"]["others_cpu_share"] = witness.share()
    out["targets"] = targets(out)
    publish(out, args.out, args.name, table(out))
    return 0


# --- clips and workers ------------------------------------------------------------


def make_clips(shared: Path, folder: Path, args) -> Dict[str, str]:
    """A person of a shared photo on a 640x480 canvas (the detector wants some
    room around a person): walking slowly with sensor noise (single person),
    standing still with sensor noise (jitter), and panned steadily (lag)."""
    photo = cv2.resize(cv2.imread(str(shared / "photos" / "hrnet_demo.jpg")), None, fx=0.6, fy=0.6)
    canvas = np.full((480, 640, 3), 90, np.uint8)
    canvas[100 : 100 + photo.shape[0], 50 : 50 + photo.shape[1]] = photo
    n = args.clip_frames
    return {
        "single": str(write_video(folder / "single.mp4", photo_clip(canvas, n, seed=1, noise=3.0, shift_px_per_frame=(1.0, 0.0)), CAMERA_FPS)),
        "still": str(write_video(folder / "still.mp4", photo_clip(canvas, n, seed=2, noise=4.0), CAMERA_FPS)),
        "pan": str(write_video(folder / "pan.mp4", photo_clip(canvas, n, seed=3, noise=4.0, shift_px_per_frame=(2.0, 0.0)), CAMERA_FPS)),
    }


def start_posepipe(name: str, config: Dict[str, Any], options: Dict[str, Any]) -> Worker:
    worker = Worker(f"posepipe-{name}", [sys.executable, str(HERE / "_video_worker.py")])
    info = worker.request("init", name=name, config=config, options=options)
    print(f"[video] posepipe {name}: {info}", file=sys.stderr)
    return worker


def start_peer(config: Dict[str, Any], args) -> Optional[Worker]:
    if not Path(args.peer_python).exists():
        print(f"[video] no PaddleX at {args.peer_python}: measuring posepipe alone", file=sys.stderr)
        return None
    worker = Worker("paddlex", [args.peer_python, str(HERE / "_paddlex_worker.py")])
    info = worker.request("init", name="paddlex", config=SUITES["real"].peer_config(find_shared()), device="cpu")
    print(f"[video] paddlex: {info}", file=sys.stderr)
    return worker


# --- measurements -------------------------------------------------------------------


def fps_of(replies: List[Dict[str, Any]]) -> Dict[str, float]:
    rates = [r["frames"] / r["seconds"] for r in replies]
    return {"median_fps": statistics.median(rates), "best_fps": max(rates), "rounds": len(rates), "frames": replies[0]["frames"]}


def bench_vs_paddlex(workers: Dict[str, Worker], vtest: str, args) -> Dict[str, Any]:
    print(f"[video] every-frame mode against PaddleX on {args.frames} frames", file=sys.stderr)
    calls = {
        "posepipe_hpip": lambda: workers["hpip"].request("run", name="hpip", path=vtest, frames=args.frames),
        "posepipe_default": lambda: workers["default"].request("run", name="default", path=vtest, frames=args.frames),
        # The same without decoding ahead on a thread: what that pipelining gains.
        "posepipe_hpip_inline": lambda: workers["hpip_inline"].request("run", name="hpip_inline", path=vtest, frames=args.frames),
    }
    if "paddlex" in workers:
        calls["paddlex"] = lambda: workers["paddlex"].request("video", name="paddlex", path=vtest, frames=args.frames)
    for call in calls.values():  # warm-up: first calls build kernels and caches
        call()
    replies = alternate(calls, rounds=args.rounds, warmup=0, settle_s=0.25)
    result = {name: fps_of(r) for name, r in replies.items()}
    result["decode_ahead_gain"] = result["posepipe_hpip"]["median_fps"] / result["posepipe_hpip_inline"]["median_fps"]
    for name in ("posepipe_hpip", "posepipe_default", "posepipe_hpip_inline"):
        result[name]["persons_per_frame"] = float(np.mean(replies[name][0]["persons"]))
        if "paddlex" in result:
            result[name]["speedup"] = result[name]["median_fps"] / result["paddlex"]["median_fps"]
    if "paddlex" in result:
        result["paddlex"]["persons_per_frame"] = float(np.mean(replies["paddlex"][0]["persons"]))
    return result


def bench_det_frequency(worker: Worker, path: str, frames: Optional[int], args, rss: bool = False) -> Dict[str, Any]:
    print(f"[video] det_frequency={DET_FREQUENCY} against every frame on {Path(path).name}", file=sys.stderr)
    calls = {
        "every_frame": lambda: worker.request("run", name="hpip", path=path, frames=frames, keep=True, rss=rss),
        "skipping": lambda: worker.request(
            "run", name="hpip", path=path, frames=frames, keep=True, kwargs={"det_frequency": DET_FREQUENCY}
        ),
    }
    replies = alternate(calls, rounds=args.rounds, warmup=0, settle_s=0.25)
    every, skipping = replies["every_frame"][0], replies["skipping"][0]
    score = agreement(every["results"], skipping["results"])
    result = {
        "every_frame": {**fps_of(replies["every_frame"]), "tracks": every["tracks"]},
        "skipping": {
            **fps_of(replies["skipping"]),
            "tracks": skipping["tracks"],
            "detector_frames": skipping["detector_frames"],
            "extra_detector_frames": skipping["extra_detector_frames"],
        },
        "agreement": score,
        "persons_per_frame": float(np.mean(every["persons"])),
    }
    result["speedup"] = result["skipping"]["median_fps"] / result["every_frame"]["median_fps"]
    if rss:
        result["rss_mb"] = every["rss_mb"]
    return result


def bench_smoothing(worker: Worker, clips: Dict[str, str], vtest: str, args) -> Dict[str, Any]:
    print("[video] smoothing: jitter and lag", file=sys.stderr)

    def run(path, smooth, frames=None):
        kwargs = {"smooth": True} if smooth else {}
        return worker.request("run", name="hpip", path=path, frames=frames, keep=True, kwargs=kwargs)["results"]

    still_raw, still_smooth = run(clips["still"], False), run(clips["still"], True)
    raw_pts, smooth_pts, visible = single_person_joints(still_raw, still_smooth)
    jitter_raw, jitter_smooth = jitter(raw_pts[:, visible]), jitter(smooth_pts[:, visible])
    pan_raw, pan_smooth = run(clips["pan"], False), run(clips["pan"], True)
    raw_pts, smooth_pts, visible = single_person_joints(pan_raw, pan_smooth)
    pan_lag = lag_frames(raw_pts[:, visible].mean(axis=1), smooth_pts[:, visible].mean(axis=1))
    walker_lags = walkers_lag(run(vtest, False, args.vtest_frames), run(vtest, True, args.vtest_frames))
    return {
        "still_jitter_px": {"raw": jitter_raw, "smoothed": jitter_smooth, "reduction": 1 - jitter_smooth / jitter_raw},
        "pan_lag_frames": pan_lag,
        "pan_speed_px_per_frame": 2.0,
        "vtest_walkers": {
            "tracks": len(walker_lags),
            "median_lag_frames": statistics.median(walker_lags) if walker_lags else None,
            "max_lag_frames": max(walker_lags) if walker_lags else None,
        },
    }


def single_person_joints(raw: List[List[Dict]], smooth: List[List[Dict]]):
    """Frames where both runs have exactly one person: its joints [T,17,2]
    in each run, and the joints that are visible (score > 0.3) on average."""
    pairs = [(a[0], b[0]) for a, b in zip(raw, smooth) if len(a) == 1 and len(b) == 1]
    raw_kpts = np.array([a["keypoints"] for a, _ in pairs])
    smooth_kpts = np.array([b["keypoints"] for _, b in pairs])
    return raw_kpts[:, :, :2], smooth_kpts[:, :, :2], raw_kpts[:, :, 2].mean(axis=0) > 0.3


def walkers_lag(raw: List[List[Dict]], smooth: List[List[Dict]]) -> List[float]:
    """Lag of each vtest track seen on 30 or more consecutive frames that
    moves at least MIN_TRAVEL_PX: the path of its mean joint, raw against
    smoothed (tracking is the same in both runs; smoothing comes after it)."""
    paths: Dict[int, List] = {}
    for f, (a, b) in enumerate(zip(raw, smooth)):
        by_id = {p["track_id"]: p for p in b}
        for person in a:
            other = by_id.get(person["track_id"])
            if other is None:
                continue
            k = np.asarray(person["keypoints"])
            visible = k[:, 2] > 0.3
            if visible.sum() < 5:
                continue
            paths.setdefault(person["track_id"], []).append((f, k[visible, :2].mean(0), np.asarray(other["keypoints"])[visible, :2].mean(0)))
    lags = []
    for samples in paths.values():
        stretches: List[List] = [[]]
        for sample in samples:
            if stretches[-1] and sample[0] != stretches[-1][-1][0] + 1:
                stretches.append([])
            stretches[-1].append(sample)
        longest = max(stretches, key=len)
        raw_path = np.array([s[1] for s in longest])
        if len(longest) >= 30 and np.linalg.norm(raw_path[-1] - raw_path[0]) >= MIN_TRAVEL_PX:
            lags.append(lag_frames(raw_path, np.array([s[2] for s in longest])))
    return lags


def memory_from(rss_mb: List[float]) -> Dict[str, Any]:
    after = rss_mb[100:] if len(rss_mb) > 100 else rss_mb[len(rss_mb) // 3 :]
    return {
        "from_frame": 100 if len(rss_mb) > 100 else len(rss_mb) // 3,
        "frames": len(rss_mb),
        "rss_mb_at_start": after[0],
        "rss_mb_max": max(after),
        "rss_mb_at_end": after[-1],
        "growth": (max(after) - after[0]) / after[0],
    }


def bench_live(worker: Worker, shared: Path, args) -> Dict[str, Any]:
    print(f"[video] live: a {args.live_seconds:g} s MJPEG camera at {CAMERA_FPS:g} fps", file=sys.stderr)
    frames = read_frames(shared / "videos" / "vtest.avi", 0, 50)
    with MjpegCamera(frames, fps=CAMERA_FPS) as camera:
        reply = worker.request("live", name="hpip", url=camera.url, seconds=args.live_seconds)
        sent = list(camera.sent)
    start = sent[0]
    latencies = [(sent[i] - start, done - sent[i]) for i, done in reply["results"] if i < len(sent)]
    first = [lat for t, lat in latencies if t < 10]
    last = [lat for t, lat in latencies if t > latencies[-1][0] - 10]
    all_ms = np.array([lat for _, lat in latencies]) * 1000
    return {
        "camera_fps": CAMERA_FPS,
        "seconds": args.live_seconds,
        "results": len(latencies),
        "results_per_s": len(latencies) / args.live_seconds,
        "dropped": reply["dropped"],
        "latency_ms": {"p50": float(np.percentile(all_ms, 50)), "p99": float(np.percentile(all_ms, 99))},
        "first_10s_p50_ms": float(np.median(first) * 1000),
        "last_10s_p50_ms": float(np.median(last) * 1000),
    }


# --- report -------------------------------------------------------------------------


def targets(out: Dict[str, Any]) -> List[Dict[str, Any]]:
    checks = []

    def check(name, value, ok, goal):
        checks.append({"target": name, "value": value, "goal": goal, "pass": bool(ok)})

    vs = out["vs_paddlex"]
    if "paddlex" in vs:
        check("every-frame use_hpip vs PaddleX loop", vs["posepipe_hpip"]["speedup"], vs["posepipe_hpip"]["speedup"] >= 4, ">= 4x")
    for clip, goal in (("vtest", 1.15), ("single_person", 1.8)):
        d = out["det_frequency"][clip]
        check(f"det_frequency=5 speed, {clip}", d["speedup"], d["speedup"] >= goal, f">= {goal}x every-frame")
        check(f"det_frequency=5 mean OKS, {clip}", d["agreement"]["mean_oks"], d["agreement"]["mean_oks"] >= 0.9, ">= 0.9")
        streak = d["agreement"]["worst_lost_streak"]
        check(f"det_frequency=5 longest lost run, {clip}", streak, streak <= DET_FREQUENCY - 1, f"<= {DET_FREQUENCY - 1} frames")
    s = out["smoothing"]
    check("smoothing: still-person jitter reduction", s["still_jitter_px"]["reduction"], s["still_jitter_px"]["reduction"] >= 0.5, ">= 50%")
    check("smoothing: lag on a panned person", s["pan_lag_frames"], s["pan_lag_frames"] <= 1.0, "<= 1 frame")
    walkers = s["vtest_walkers"]["max_lag_frames"]
    check("smoothing: lag on vtest walkers (worst track)", walkers, walkers is not None and walkers <= 1.0, "<= 1 frame")
    m = out["memory"]
    check("memory: RSS growth from frame 100", m["growth"], m["growth"] <= 0.05, "<= 5%")
    live = out["live"]
    growth = live["last_10s_p50_ms"] / live["first_10s_p50_ms"]
    check("live: latency p50, last 10 s / first 10 s", growth, growth <= 1.5, "<= 1.5 (not growing)")
    return checks


def table(out: Dict[str, Any]) -> str:
    m = out["meta"]
    lines = [f"posepipe video benchmark, {m['machine']['cpu']} ({m['machine']['cores']} cores), {m['date']}",
             f"others' CPU share during the run: {m['machine'].get('others_cpu_share') or 0:.0%}", ""]
    vs = out["vs_paddlex"]
    lines.append(f"Every-frame mode on vtest's first {vs['posepipe_hpip']['frames']} frames (median of rounds):")
    for name in ("paddlex", "posepipe_hpip", "posepipe_default", "posepipe_hpip_inline"):
        if name in vs:
            speed = f"  ({vs[name]['speedup']:.1f}x PaddleX)" if "speedup" in vs[name] else ""
            lines.append(f"  {name:20s} {vs[name]['median_fps']:6.2f} frames/s, {vs[name]['persons_per_frame']:.1f} persons/frame{speed}")
    lines.append(f"  decoding ahead on a thread (hpip against hpip_inline): {vs['decode_ahead_gain']:.2f}x")
    lines.append("")
    lines.append(f"det_frequency={DET_FREQUENCY} with tracking against every frame (use_hpip):")
    for clip, d in out["det_frequency"].items():
        a = d["agreement"]
        lines.append(
            f"  {clip:14s} every {d['every_frame']['median_fps']:6.2f} fps, skipping {d['skipping']['median_fps']:6.2f} fps "
            f"= {d['speedup']:.2f}x; detector on {d['skipping']['detector_frames']}/{d['skipping']['frames']} frames "
            f"({d['skipping']['extra_detector_frames']} extra); mean OKS {a['mean_oks']:.3f}; longest lost run "
            f"{a['worst_lost_streak']} frames ({a['lost_person_frames']}/{a['reference_person_frames']} person-frames); "
            f"tracks {d['every_frame']['tracks']} vs {d['skipping']['tracks']}"
        )
    s = out["smoothing"]
    j = s["still_jitter_px"]
    lines += [
        "",
        "Smoothing (defaults): jitter = mean frame-to-frame joint displacement of a person standing still;",
        "  lag = the delay (frames) that best lays the smoothed path of a moving person onto the raw one",
        f"  still person: jitter {j['raw']:.2f} px raw -> {j['smoothed']:.2f} px smoothed ({j['reduction']:.0%} less)",
        f"  panned person ({s['pan_speed_px_per_frame']:g} px/frame at 25 fps): lag {s['pan_lag_frames']:.2f} frames",
        f"  vtest walkers ({s['vtest_walkers']['tracks']} tracks, 10 fps): lag median {fmt(s['vtest_walkers']['median_lag_frames'])}, "
        f"worst {fmt(s['vtest_walkers']['max_lag_frames'])} frames",
    ]
    mem = out["memory"]
    lines.append(
        f"\nMemory: RSS {mem['rss_mb_at_start']:.0f} MB at frame {mem['from_frame']}, max {mem['rss_mb_max']:.0f}, "
        f"end {mem['rss_mb_at_end']:.0f} MB ({mem['growth']:+.1%})"
    )
    live = out["live"]
    lines.append(
        f"Live ({live['seconds']:g} s MJPEG camera at {live['camera_fps']:g} fps, latest-frame mode): {live['results_per_s']:.1f} results/s, "
        f"{live['dropped']} stale frames dropped; latency p50 {live['latency_ms']['p50']:.0f} ms, p99 {live['latency_ms']['p99']:.0f} ms; "
        f"p50 first 10 s {live['first_10s_p50_ms']:.0f} ms, last 10 s {live['last_10s_p50_ms']:.0f} ms"
    )
    lines.append("\nTargets:")
    for t in out["targets"]:
        value = t["value"]
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        lines.append(f"  {'PASS' if t['pass'] else 'FAIL'}  {t['target']}: {shown} (goal {t['goal']})")
    return "\n".join(lines)


def fmt(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    sys.exit(main())
