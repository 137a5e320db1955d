"""The results as a table, the issue's targets as PASS/FAIL lines, and a chart."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional

PEERS = {"paddlex": "PaddleX", "paddlex_tuned": "PaddleX tuned"}
STAGE_LABELS = {
    "decode": "decode",
    "det_preprocess": "det pre",
    "det_infer": "det model",
    "det_postprocess": "det post",
    "crops": "crops",
    "kpt_infer": "kpt model",
    "kpt_decode": "kpt decode",
    "result_and_glue": "result",
}
BUSY_SHARE = 0.05  # other processes' share of the CPU above which the table warns
SUITE_TITLES = {"real": "real models", "official_arch": "official architectures (synthetic weights)"}


def publish(results: Dict[str, Any], out: str, name: str, text: str) -> Path:
    """Write <out>/<name>.json and print the table `text` (eval.py, video.py)."""
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(results, indent=1))
    print(text)
    print(f"\nwrote {path}")
    return path


# --- targets ---------------------------------------------------------------------------------


def check_targets(results: Dict[str, Any]) -> List[Dict[str, Any]]:
    suites = results["suites"]
    real = suites.get("real")
    targets = [
        speedup_target(real, "000000087038.jpg", 3.0),
        speedup_target(real, "000000014439.jpg", 5.0),
    ]
    for name, suite in suites.items():
        targets.append(overhead_target(name, suite, 0.10))
    for name, suite in suites.items():
        targets.append(slope_target(name, suite, 4.0))
    return targets


def target(text: str, status: str, value: Optional[float] = None) -> Dict[str, Any]:
    return {"target": text, "status": status, "value": value}


def speedup_target(suite: Optional[Dict[str, Any]], photo: str, limit: float) -> Dict[str, Any]:
    text = f"end-to-end speedup >= {limit:g}x on {photo} (real models, medians)"
    row = next((r for r in (suite or {}).get("photos", []) if r["photo"] == photo), None)
    if row is None:
        return target(text, "SKIP: photo not measured")
    if "paddlex" not in row.get("speedup", {}):
        return target(text, "SKIP: PaddleX not measured")
    value = row["speedup"]["paddlex"]["median"]
    persons = f"{row['persons']['posepipe']} persons" + ("" if same_persons(row) else ", persons differ!")
    return target(f"{text}: {value:.2f}x ({persons})", "PASS" if value >= limit else "FAIL", value)


def overhead_target(name: str, suite: Dict[str, Any], limit: float) -> Dict[str, Any]:
    worst = max(suite["photos"], key=lambda r: r["overhead"]["share_of_e2e"])
    share = worst["overhead"]["share_of_e2e"]
    text = (
        f"posepipe overhead <= {limit:.0%} of end-to-end ({name}): worst {share:.1%} on {worst['photo']} "
        f"({worst['overhead']['ms']:.1f} ms of {worst['e2e']['posepipe']['median_ms']:.1f} ms)"
    )
    return target(text, "PASS" if share <= limit else "FAIL", share)


def slope_target(name: str, suite: Dict[str, Any], factor: float) -> Dict[str, Any]:
    growth = suite["growth"]
    text = f"per-person slope <= 1/{factor:g} of PaddleX's ({name})"
    if "slope_ratio" not in growth:
        return target(text, "SKIP: PaddleX not measured" if "posepipe" in growth["slope"] else "SKIP: too few points")
    ours = growth["slope"]["posepipe"]["ms_per_person"]
    theirs = growth["slope"]["paddlex"]["ms_per_person"]
    ratio = growth["slope_ratio"]
    text += f": {ours:.1f} vs {theirs:.1f} ms/person, 1/{ratio:.1f}"
    return target(text, "PASS" if ratio >= factor else "FAIL", ratio)


def same_persons(row: Dict[str, Any]) -> bool:
    return len(set(row["persons"].values())) == 1


# --- table -----------------------------------------------------------------------------------


def table(results: Dict[str, Any]) -> str:
    meta = results["meta"]
    m = meta["machine"]
    others = m.get("others_cpu_share")
    lines = [
        f"posepipe benchmark  {meta['date']}  {m['cpu']}, {m['cores']} cores"
        + ("" if others is None else f"; other processes took {others:.0%} of the CPU meanwhile"),
        f"command: {meta['command']}",
        f"PaddleX: {meta.get('paddlex', '?')}",
        f"posepipe options: {meta['posepipe_options'] or 'defaults'}",
        f"{meta['repeat']} warm rounds per photo after {meta['warmup']} warm-up; sides alternate; "
        f"times in ms as min / median",
    ]
    if others is not None and others > BUSY_SHARE:
        lines.append(
            f"WARNING: other processes used {others:.0%} of the CPU during the run: they share the cores, "
            "so times are inflated and noisy (minima are the steadier figure); rerun on an idle machine"
        )
    for name, suite in results["suites"].items():
        lines += [""] + suite_table(name, suite)
    lines += ["", "Kernel micro-benchmarks (ms, min / median; reference = the NumPy/OpenCV code PaddleX runs)"]
    lines += kernel_table(results["kernels"])
    lines += ["", "Targets (issue 4)"]
    lines += [f"  {t['status'].split(':')[0]:<4}  {t['target']}" + status_note(t) for t in results["targets"]]
    return "\n".join(lines)


def status_note(t: Dict[str, Any]) -> str:
    return f"  ({t['status'].split(': ', 1)[1]})" if ": " in t["status"] else ""


def suite_table(name: str, suite: Dict[str, Any]) -> List[str]:
    lines = [f"== {SUITE_TITLES.get(name, name)}: {suite['models']['detector']} + {suite['models']['keypoints']} =="]
    lines.append(f"posepipe: {describe_posepipe(suite['posepipe'])}")
    lines += describe_peers(suite["paddlex"])
    peers = [key for key in PEERS if key in suite["paddlex"]]
    lines += e2e_table(suite["photos"], peers)
    lines += floor_table(suite["photos"])
    lines += stage_table(suite["photos"])
    lines += growth_table(suite["growth"])
    lines += throughput_table(suite["throughput"])
    return lines


def describe_posepipe(info: Dict[str, Any]) -> str:
    parts = [info.get("engine", "posepipe")]
    for key in ("detector", "keypoints"):
        if isinstance(info.get(key), dict):
            parts.append(f"{key} " + compact(info[key]))
    return "; ".join(parts)


def compact(settings: Dict[str, Any]) -> str:
    """A backend's settings on one line: plain values only (the JSON keeps the rest),
    and a nested choice such as hpip's as its `chosen` entry."""
    parts = []
    for key, value in settings.items():
        if isinstance(value, dict) and "chosen" in value:
            parts.append(f"{key}={value['chosen']} ({value.get('decision', '')})")
        elif not isinstance(value, (dict, list)) and key not in ("model_dir", "onednn_reason", "onnx"):
            parts.append(f"{key}={value}")
    return ", ".join(parts)


def describe_peers(peers: Dict[str, Any]) -> List[str]:
    if "paddlex" not in peers:
        return [f"PaddleX: {peers.get('status', 'not measured')}"]
    lines = [f"PaddleX: {peers['paddlex'].get('engine', '')}; {peers.get('settings', '')}"]
    for key, label in PEERS.items():
        if key in peers:
            p = peers[key]
            lines.append(f"  {label}: detector {compact(p['detector'])}; keypoints {compact(p['keypoints'])}")
    return lines


def ms(stats: Dict[str, float]) -> str:
    return f"{stats['min_ms']:.1f} / {stats['median_ms']:.1f}"


def e2e_table(rows: List[Dict[str, Any]], peers: List[str]) -> List[str]:
    header = f"  {'photo':<18}{'persons':>8}  {'posepipe':>15}"
    for key in peers:
        header += f"  {PEERS[key]:>15}  {'speedup':>13}"
    lines = ["End to end, ms per image (speedup = PaddleX / posepipe, on medians and on minima)", header]
    for r in rows:
        persons = "/".join(str(v) for v in dict.fromkeys(r["persons"].values()))
        line = f"  {r['photo']:<18}{persons:>8}  {ms(r['e2e']['posepipe']):>15}"
        for key in peers:
            s = r["speedup"][key]
            line += f"  {ms(r['e2e'][key]):>15}  {s['median']:>5.2f}x {s['min']:>5.2f}x"
        lines.append(line)
    return lines


def floor_table(rows: List[Dict[str, Any]]) -> List[str]:
    lines = [
        "Floor (the two models alone, same backend and batching, inputs prepared, medians) and posepipe's overhead",
        "(e2e - floor; share per round [target], on minima, and inside the run [e2e - the pipeline's own model clock])",
        f"  {'photo':<18}{'e2e':>9}{'det model':>11}{'kpt model':>11}{'floor':>9}{'overhead':>10}"
        f"{'share':>8}{'on min':>8}{'in run':>8}",
    ]
    for r in rows:
        f, o = r["floor"], r["overhead"]
        lines.append(
            f"  {r['photo']:<18}{r['e2e']['posepipe']['median_ms']:>9.1f}{f['det_model']['median_ms']:>11.1f}"
            f"{f['kpt_model']['median_ms']:>11.1f}{f['total']['median_ms']:>9.1f}{o['ms']:>10.1f}"
            f"{o['share_of_e2e']:>8.1%}{o['share_on_minima']:>8.1%}{o['share_in_run']:>8.1%}"
        )
    return lines


def stage_table(rows: List[Dict[str, Any]]) -> List[str]:
    header = f"  {'photo':<18}" + "".join(f"{label:>11}" for label in STAGE_LABELS.values())
    lines = ["posepipe per stage, median ms", header]
    for r in rows:
        cells = "".join(f"{r['stages'][key]['median_ms']:>11.2f}" for key in STAGE_LABELS)
        lines.append(f"  {r['photo']:<18}{cells}")
    return lines


def growth_table(growth: Dict[str, Any]) -> List[str]:
    sides = list(growth["slope"]) or ["posepipe"]
    lines = [
        f"Cost growth on {growth['photo']} (detection threshold lowered), median ms",
        f"  {'threshold':>10}{'persons':>9}" + "".join(f"{PEERS.get(s, s):>12}" for s in sides),
    ]
    for p in growth["points"]:
        persons = "/".join(str(v) for v in dict.fromkeys(p["persons"].values()))
        cells = "".join(f"{p['e2e'][s]['median_ms']:>12.1f}" for s in sides if s in p["e2e"])
        lines.append(f"  {p['det_threshold']:>10.4f}{persons:>9}{cells}")
    fits = [
        f"{PEERS.get(s, s)} {f['ms_per_person']:.1f} ms/person ({f['intercept_ms']:+.0f} ms at 0)"
        for s, f in growth["slope"].items()
    ]
    if fits:
        ratio = f"; PaddleX/posepipe {growth['slope_ratio']:.1f}x" if "slope_ratio" in growth else ""
        lines.append("  slope: " + ", ".join(fits) + ratio)
    return lines


def throughput_table(t: Dict[str, Any]) -> List[str]:
    lines = [f"Throughput on a folder of {t['images']} images (images/s, median and best)"]
    for key, v in t.items():
        if isinstance(v, dict):
            lines.append(f"  {PEERS.get(key, key):<22}{v['images_per_s']:>8.2f}{v['best_images_per_s']:>8.2f}")
    if "speedup" in t:
        lines.append(f"  speedup (posepipe / PaddleX): {t['speedup']:.2f}x")
    return lines


def kernel_table(kernels: Dict[str, Any]) -> List[str]:
    lines = [f"  {'kernel':<16}{'models':<15}{'posepipe':>15}{'reference':>17}{'speedup':>9}{'max|diff|':>11}  what"]
    for suite, cases in kernels.items():
        for key, k in cases.items():
            lines.append(
                f"  {key:<16}{suite:<15}{ms(k['posepipe']):>15}{ms(k['reference']):>17}"
                f"{k['speedup']:>8.1f}x{k['max_abs_diff']:>11.2g}  {k['what']}"
            )
    return lines


# --- chart -----------------------------------------------------------------------------------


def chart(results: Dict[str, Any], path: Path) -> Optional[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no chart (pip install matplotlib)")
        return None
    fig, axes = plt.subplots(2, 2, figsize=(15, 10))
    plot_e2e(axes[0][0], results["suites"])
    plot_growth(axes[0][1], results["suites"])
    plot_stages(axes[1][0], results["suites"])
    plot_kernels(axes[1][1], results["kernels"])
    fig.suptitle(f"posepipe vs PaddleX 3.7.2, {results['meta']['machine']['cpu']}, {results['meta']['date']}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def photo_labels(suites: Dict[str, Any]):
    for name, suite in suites.items():
        for r in suite["photos"]:
            yield name, r, f"{name}: {Path(r['photo']).stem} ({r['persons']['posepipe']})"


def plot_e2e(ax, suites):
    rows = list(photo_labels(suites))
    sides = ["posepipe"] + [k for k in PEERS if any(k in r["e2e"] for _, r, _ in rows)]
    width = 0.8 / len(sides)
    for i, side in enumerate(sides):
        xs = [j + i * width for j in range(len(rows))]
        ys = [r["e2e"].get(side, {}).get("median_ms", 0) for _, r, _ in rows]
        ax.bar(xs, ys, width, label=PEERS.get(side, side))
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(rows))], [label for _, _, label in rows], fontsize=7, rotation=25, ha="right")
    ax.set_ylabel("ms per image (median)")
    ax.set_title("End to end per photo (persons)")
    ax.legend()


def plot_growth(ax, suites):
    for name, suite in suites.items():
        g = suite["growth"]
        for side, fit in g["slope"].items():
            xs = [p["persons"][side] for p in g["points"]]
            ys = [p["e2e"][side]["median_ms"] for p in g["points"]]
            ax.plot(xs, ys, "o-", label=f"{PEERS.get(side, side)} ({name}): {fit['ms_per_person']:.1f} ms/person")
    ax.set_xlabel("persons in the image")
    ax.set_ylabel("ms per image (median)")
    ax.set_title("Cost growth with persons")
    ax.legend(fontsize=8)


def plot_stages(ax, suites):
    rows = list(photo_labels(suites))
    bottoms = [0.0] * len(rows)
    for key, label in STAGE_LABELS.items():
        ys = [r["stages"][key]["median_ms"] for _, r, _ in rows]
        ax.bar(range(len(rows)), ys, bottom=bottoms, label=label)
        bottoms = [b + y for b, y in zip(bottoms, ys)]
    ax.set_xticks(range(len(rows)), [label for _, _, label in rows], fontsize=7, rotation=25, ha="right")
    ax.set_ylabel("ms (median)")
    ax.set_title("posepipe per stage")
    ax.legend(fontsize=7, ncol=2)


def plot_kernels(ax, kernels):
    labels, values = [], []
    for suite, cases in kernels.items():
        for key, k in cases.items():
            labels.append(f"{key} ({suite})")
            values.append(k["speedup"])
    ax.barh(range(len(values)), values)
    ax.set_yticks(range(len(values)), labels, fontsize=7)
    ax.set_xscale("log")
    ax.set_xticks([0.125, 0.25, 0.5, 1, 2, 4, 8, 16, 32], ["1/8", "1/4", "1/2", "1x", "2x", "4x", "8x", "16x", "32x"])
    ax.xaxis.set_minor_formatter(lambda value, _: "")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("speedup over the NumPy/OpenCV reference (median, log scale)")
    ax.set_title("Kernel micro-benchmarks")
