"""The results as a table, the issue's targets as PASS/FAIL lines, and a chart."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

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

FP32_MODES = ("default", "use_hpip", "openvino")
LOW_PRECISION_MODES = ("bf16", "int8", "auto")


def check_targets(results: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Issue 4's targets on the first mode, then issue 9's across the modes."""
    suites = results["suites"]
    real = suites.get("real")
    primary = (real or next(iter(suites.values()), {})).get("modes", ["default"])[0]
    targets = [
        speedup_target(real, primary, "000000087038.jpg", 3.0),
        speedup_target(real, primary, "000000014439.jpg", 5.0),
    ]
    for name, suite in suites.items():
        if "growth" in suite:
            targets.append(slope_target(name, suite, 4.0))
    targets.append(speedup_target(real, "default", "000000014439.jpg", 4.0))
    for photo in ("000000014439.jpg", "000000087038.jpg"):
        targets.append(floor_target(real, "use_hpip", photo, 0.10))
    targets.append(low_precision_target(real, results["meta"]["machine"], "000000014439.jpg", 10.0))
    for name, suite in suites.items():
        for mode in suite.get("modes", []):
            targets.append(overhead_target(name, suite, mode, 0.10))
    return targets


def target(text: str, status: str, value: Optional[float] = None) -> Dict[str, Any]:
    return {"target": text, "status": status, "value": value}


def _row(suite: Optional[Dict[str, Any]], photo: str) -> Optional[Dict[str, Any]]:
    return next((r for r in (suite or {}).get("photos", []) if r["photo"] == photo), None)


def speedup_target(suite: Optional[Dict[str, Any]], mode: str, photo: str, limit: float) -> Dict[str, Any]:
    text = f"{mode}: end-to-end speedup >= {limit:g}x on {photo} (real models, medians)"
    row = _row(suite, photo)
    if row is None or mode not in row["e2e"]:
        return target(text, "SKIP: not measured")
    if "paddlex" not in row["speedup"][mode]:
        return target(text, "SKIP: PaddleX not measured")
    value = row["speedup"][mode]["paddlex"]["median"]
    persons = f"{row['persons'][mode]} persons" + ("" if same_persons(row) else ", persons differ!")
    return target(f"{text}: {value:.2f}x ({persons})", "PASS" if value >= limit else "FAIL", value)


def fp32_floor(row: Dict[str, Any]) -> Tuple[float, str]:
    """The least model time of the fp32 modes measured (each at its own batching): (ms, mode)."""
    floors = [(row["modes"][m]["floor"]["total"]["median_ms"], m) for m in FP32_MODES if m in row["modes"]]
    return min(floors)


def floor_target(suite: Optional[Dict[str, Any]], mode: str, photo: str, limit: float) -> Dict[str, Any]:
    text = f"{mode} (fp32) end to end within {limit:.0%} of the fp32 floor on {photo}"
    row = _row(suite, photo)
    if row is None or mode not in row["e2e"]:
        return target(text, "SKIP: not measured")
    floor, floor_mode = fp32_floor(row)
    e2e = row["e2e"][mode]["median_ms"]
    value = e2e / floor - 1.0
    text += f": {e2e:.1f} ms vs floor {floor:.1f} ms ({floor_mode}'s models), +{value:.1%}"
    return target(text, "PASS" if value <= limit else "FAIL", value)


def low_precision_target(suite: Optional[Dict[str, Any]], machine: Dict[str, Any], photo: str, limit: float) -> Dict[str, Any]:
    isa = machine.get("isa") or {}
    units = [f for f in ("amx_bf16", "avx512_bf16", "amx_int8", "avx512_vnni", "avx_vnni") if isa.get(f)]
    text = f"best accurate low precision >= {limit:g}x on {photo} (CPU with AMX or VNNI)"
    row = _row(suite, photo)
    if not units:
        return target(text, "SKIP: this CPU has neither AMX nor VNNI")
    measured = [m for m in LOW_PRECISION_MODES if row is not None and m in row["e2e"] and "paddlex" in row["speedup"][m]]
    if not measured:
        return target(text, "SKIP: no low-precision mode measured against PaddleX")
    best = max(measured, key=lambda m: row["speedup"][m]["paddlex"]["median"])
    value = row["speedup"][best]["paddlex"]["median"]
    running = (suite or {}).get("posepipe", {}).get(best, {}).get("precision", {})
    what = f"{running.get('detector', '?')} detector, {running.get('keypoints', '?')} keypoints"
    return target(f"{text}: {best} ({what}) {value:.2f}x", "PASS" if value >= limit else "FAIL", value)


def overhead_target(name: str, suite: Dict[str, Any], mode: str, limit: float) -> Dict[str, Any]:
    worst = max(suite["photos"], key=lambda r: r["modes"][mode]["overhead"]["share_of_e2e"])
    o = worst["modes"][mode]["overhead"]
    text = (
        f"{mode}: posepipe overhead <= {limit:.0%} of end-to-end ({name}): worst {o['share_of_e2e']:.1%} on "
        f"{worst['photo']} ({o['ms']:.1f} ms of {worst['e2e'][mode]['median_ms']:.1f} ms; in run {o['share_in_run']:.1%})"
    )
    return target(text, "PASS" if o["share_of_e2e"] <= limit else "FAIL", o["share_of_e2e"])


def slope_target(name: str, suite: Dict[str, Any], factor: float) -> Dict[str, Any]:
    growth = suite["growth"]
    text = f"{growth.get('mode', 'posepipe')}: per-person slope <= 1/{factor:g} of PaddleX's ({name})"
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
        f"posepipe benchmark  {meta['date']}  CPU: {m.get('cpu_summary') or m['cpu']}"
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
    if "kernels" in results:
        lines += ["", "Kernel micro-benchmarks (ms, min / median; reference = the NumPy/OpenCV code PaddleX runs)"]
        lines += kernel_table(results["kernels"])
    lines += ["", "Targets (issue 4 on the first mode; issue 9 across the modes)"]
    lines += [f"  {t['status'].split(':')[0]:<4}  {t['target']}" + status_note(t) for t in results["targets"]]
    return "\n".join(lines)


def status_note(t: Dict[str, Any]) -> str:
    return f"  ({t['status'].split(': ', 1)[1]})" if ": " in t["status"] else ""


def suite_table(name: str, suite: Dict[str, Any]) -> List[str]:
    lines = [f"== {SUITE_TITLES.get(name, name)}: {suite['models']['detector']} + {suite['models']['keypoints']} =="]
    for mode in suite["modes"]:
        lines.append(f"posepipe {mode}: {describe_posepipe(suite['posepipe'][mode])}")
    lines += describe_peers(suite["paddlex"])
    peers = [key for key in PEERS if key in suite["paddlex"]]
    lines += e2e_table(suite["photos"], suite["modes"], peers)
    lines += floor_table(suite["photos"], suite["modes"])
    lines += stage_table(suite["photos"], suite["modes"])
    if "growth" in suite:
        lines += growth_table(suite["growth"])
    if "throughput" in suite:
        lines += throughput_table(suite["throughput"])
    return lines


def describe_posepipe(info: Dict[str, Any]) -> str:
    parts = [info.get("engine", "posepipe")]
    precision = info.get("precision") or {}
    if precision.get("requested"):
        parts.append(f"precision {precision['requested']} -> detector {precision.get('detector')}, "
                     f"keypoints {precision.get('keypoints')} ({precision.get('decision', '')})")
    for key in ("detector", "keypoints"):
        if isinstance(info.get(key), dict):
            parts.append(f"{key} " + compact(info[key]))
    parts.append(f"crops per call {info.get('kpt_batch_size')}")
    return "; ".join(parts)


def compact(settings: Dict[str, Any]) -> str:
    """A backend's settings on one line: plain values only (the JSON keeps the rest),
    and a nested choice such as hpip's as its `chosen` entry."""
    parts = []
    for key, value in settings.items():
        if isinstance(value, dict) and "chosen" in value:
            parts.append(f"{key}={value['chosen']} ({value.get('decision', '')})")
        elif not isinstance(value, (dict, list)) and key not in (
            "model_dir", "onednn_reason", "onnx", "model_file", "model_cache", "onnx_source"
        ):
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


def e2e_table(rows: List[Dict[str, Any]], modes: List[str], peers: List[str]) -> List[str]:
    header = f"  {'photo':<18}{'persons':>8}"
    for mode in modes:
        header += f"  {mode:>15}" + (f"  {'speedup':>13}" if peers else "")
    for key in peers:
        header += f"  {PEERS[key]:>15}"
    lines = [
        "End to end, ms per image (speedup = PaddleX's defaults / posepipe, on medians and on minima)",
        header,
    ]
    for r in rows:
        persons = "/".join(str(v) for v in dict.fromkeys(r["persons"].values()))
        line = f"  {r['photo']:<18}{persons:>8}"
        for mode in modes:
            line += f"  {ms(r['e2e'][mode]):>15}"
            if peers:
                s = r["speedup"][mode]["paddlex"]
                line += f"  {s['median']:>5.2f}x {s['min']:>5.2f}x"
        for key in peers:
            line += f"  {ms(r['e2e'][key]):>15}"
        lines.append(line)
    return lines


def floor_table(rows: List[Dict[str, Any]], modes: List[str]) -> List[str]:
    lines = [
        "Floor (the two models alone, same backend and batching, inputs prepared, medians) and posepipe's overhead",
        "(e2e - floor; share per round [target], on minima, and inside the run [e2e - the pipeline's own model clock])",
        f"  {'photo':<18}{'mode':<10}{'e2e':>9}{'det model':>11}{'kpt model':>11}{'floor':>9}{'overhead':>10}"
        f"{'share':>8}{'on min':>8}{'in run':>8}",
    ]
    for r in rows:
        for mode in modes:
            f, o = r["modes"][mode]["floor"], r["modes"][mode]["overhead"]
            lines.append(
                f"  {r['photo']:<18}{mode:<10}{r['e2e'][mode]['median_ms']:>9.1f}{f['det_model']['median_ms']:>11.1f}"
                f"{f['kpt_model']['median_ms']:>11.1f}{f['total']['median_ms']:>9.1f}{o['ms']:>10.1f}"
                f"{o['share_of_e2e']:>8.1%}{o['share_on_minima']:>8.1%}{o['share_in_run']:>8.1%}"
            )
    return lines


def stage_table(rows: List[Dict[str, Any]], modes: List[str]) -> List[str]:
    header = f"  {'photo':<18}{'mode':<10}" + "".join(f"{label:>11}" for label in STAGE_LABELS.values())
    lines = ["posepipe per stage, median ms", header]
    for r in rows:
        for mode in modes:
            stages = r["modes"][mode]["stages"]
            cells = "".join(f"{stages[key]['median_ms']:>11.2f}" for key in STAGE_LABELS)
            lines.append(f"  {r['photo']:<18}{mode:<10}{cells}")
    return lines


def growth_table(growth: Dict[str, Any]) -> List[str]:
    sides = list(growth["slope"]) or ["posepipe"]
    lines = [
        f"Cost growth on {growth['photo']} (detection threshold lowered; posepipe {growth.get('mode', '')}), median ms",
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
    lines = [f"Throughput on a folder of {t['images']} images (images/s, median and best; posepipe {t.get('mode', '')})"]
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
    plot_growth(axes[0][1], {n: s for n, s in results["suites"].items() if "growth" in s})
    plot_stages(axes[1][0], results["suites"])
    plot_kernels(axes[1][1], results.get("kernels", {}))
    machine = results["meta"]["machine"]
    fig.suptitle(f"posepipe vs PaddleX 3.7.2, {machine.get('cpu_summary') or machine['cpu']}, {results['meta']['date']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def photo_labels(suites: Dict[str, Any]):
    for name, suite in suites.items():
        for r in suite["photos"]:
            yield name, r, f"{name}: {Path(r['photo']).stem} ({r['persons'][suite['modes'][0]]})"


def plot_e2e(ax, suites):
    rows = list(photo_labels(suites))
    modes = list(dict.fromkeys(m for suite in suites.values() for m in suite["modes"]))
    sides = modes + [k for k in PEERS if any(k in r["e2e"] for _, r, _ in rows)]
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
        ys = [r["modes"][suites[name]["modes"][0]]["stages"][key]["median_ms"] for name, r, _ in rows]
        ax.bar(range(len(rows)), ys, bottom=bottoms, label=label)
        bottoms = [b + y for b, y in zip(bottoms, ys)]
    ax.set_xticks(range(len(rows)), [label for _, _, label in rows], fontsize=7, rotation=25, ha="right")
    ax.set_ylabel("ms (median)")
    ax.set_title("posepipe per stage (first mode)")
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
