"""`use_hpip=True`: per model and device, the fastest backend that still
matches plain Paddle.

How a model's backend is chosen (once; the decision is then cached on disk):

1. Candidates for the device, each built in turn. One that cannot be built
   here (package missing, no GPU, no TensorRT) is recorded as `unavailable`
   with the reason; one that fails to build or run is `failed`.
     cpu: ONNX Runtime, Paddle + oneDNN (posepipe's interp workaround),
          plain Paddle.
     gpu: Paddle TensorRT fp16, ONNX Runtime TensorRT fp16, ONNX Runtime
          CUDA, Paddle GPU.
2. Calibration: a fixed-seed synthetic batch in the model's input shape
   (keypoint models at batch 1 and 8, detectors at 1 and, for parity only,
   2, which exercises the batch-1 NMS split). Each candidate's outputs are
   compared with plain Paddle on the CPU (runtime/parity.py, tolerances by
   the candidate's precision); a mismatch is recorded and skipped.
3. Timing: the matching candidates run the timed batches in alternating
   rounds (min per batch, which damps other load on a shared machine); from
   the second round on, a candidate 1.5x slower than the best stops early. Score =
   the sum of the timed batches' ms, i.e. the time for a 1-person image plus
   an 8-person image for keypoint models.
4. The decision (chosen backend, per-candidate ms and max diffs) is logged at
   INFO, kept in `describe()["hpip"]` (so in results' metadata) and written to
   `$POSEPIPE_HOME/hpip/`, keyed by the model files, device, CPU threads,
   machine and package versions; later starts build the chosen backend only.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import platform
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..errors import ModelError, PosepipeError
from ..models.spec import KEYPOINT, ModelSpec
from .base import Backend, BackendUnavailable, RuntimeOptions
from .device import Device
from .onnx_export import SHIPPED_NAME, file_digest, model_key, posepipe_home
from .paddle_import import import_paddle
from .parity import TOLERANCES, ParityReport, compare, summarize

log = logging.getLogger("posepipe")

# Bump when candidates, calibration or tolerances change: old decisions are then re-measured.
SELECTION_VERSION = 1
CALIBRATION_SEED = 20240917
REFERENCE = "paddle"  # plain Paddle Inference on the CPU kernels: the parity reference
TIMING_BUDGET_S = 2.5  # per model, after the first round
MIN_ROUNDS, MAX_ROUNDS = 2, 5
PRUNE_FACTOR = 1.5


@dataclass(frozen=True)
class Candidate:
    name: str  # stable id: logs, metadata and the decision cache use it
    precision: str  # "fp32" | "fp16": picks the parity tolerances
    build: Callable[[ModelSpec, RuntimeOptions], Backend]


def _ort(ep: str) -> Callable[[ModelSpec, RuntimeOptions], Backend]:
    def build(spec: ModelSpec, options: RuntimeOptions) -> Backend:
        from .onnxruntime import OrtBackend

        return OrtBackend(spec, options, ep=ep)

    return build


def _paddle(use_onednn: Optional[bool]) -> Callable[[ModelSpec, RuntimeOptions], Backend]:
    def build(spec: ModelSpec, options: RuntimeOptions) -> Backend:
        from .paddle import PaddleBackend

        if options.device.kind == "gpu":
            # A CPU paddle accepts enable_use_gpu() and quietly runs on the CPU.
            from .paddle_trt import require_cuda_paddle

            require_cuda_paddle(options.device)
        return PaddleBackend(spec, dataclasses.replace(options, use_onednn=use_onednn))

    return build


def _paddle_trt(spec: ModelSpec, options: RuntimeOptions) -> Backend:
    from .paddle_trt import PaddleTrtBackend

    return PaddleTrtBackend(spec, options, precision="fp16")


CANDIDATES: Dict[str, Tuple[Candidate, ...]] = {
    "cpu": (
        Candidate("onnxruntime", "fp32", _ort("cpu")),
        Candidate("paddle_onednn", "fp32", _paddle(True)),
        Candidate(REFERENCE, "fp32", _paddle(False)),
    ),
    "gpu": (
        Candidate("paddle_tensorrt_fp16", "fp16", _paddle_trt),
        Candidate("onnxruntime_tensorrt_fp16", "fp16", _ort("tensorrt")),
        Candidate("onnxruntime_cuda", "fp32", _ort("cuda")),
        Candidate("paddle_gpu", "fp32", _paddle(None)),
    ),
}


@dataclass
class Trial:
    name: str
    precision: str
    status: str = "pending"  # ok | mismatch | failed | unavailable
    reason: str = ""
    ms: Dict[int, float] = field(default_factory=dict)  # batch -> best ms
    max_diff: Dict[str, float] = field(default_factory=dict)

    @property
    def score_ms(self) -> float:
        return sum(self.ms.values()) if self.ms else math.inf

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"name": self.name, "precision": self.precision, "status": self.status}
        if self.reason:
            out["reason"] = self.reason
        if self.ms:
            out["ms"] = {str(b): round(v, 3) for b, v in self.ms.items()}
        if self.max_diff:
            out["max_diff"] = {k: float(f"{v:.3g}") for k, v in self.max_diff.items()}
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Trial":
        return cls(
            name=str(d["name"]),
            precision=str(d["precision"]),
            status=str(d["status"]),
            reason=str(d.get("reason", "")),
            ms={int(b): float(v) for b, v in (d.get("ms") or {}).items()},
            max_diff={str(k): float(v) for k, v in (d.get("max_diff") or {}).items()},
        )

    def line(self) -> str:
        if self.status in ("unavailable", "failed"):
            return f"{self.name}: {self.status} ({self.reason})"
        ms = ", ".join(f"b{b} {v:.1f} ms" for b, v in self.ms.items()) or "not timed"
        text = f"{self.name}: {ms}, max diff {summarize(self.max_diff)}"
        return text if self.status == "ok" else f"{text}: {self.status} ({self.reason})"


@dataclass
class Decision:
    chosen: str
    trials: List[Trial]
    key: str
    seconds: float
    source: str = "measured"  # measured | cache
    cache_file: Optional[str] = None

    def metadata(self) -> Dict[str, Any]:
        return {
            "chosen": self.chosen,
            "decision": self.source,
            "cache_file": self.cache_file,
            "selection_s": round(self.seconds, 3),
            "reference": f"{REFERENCE} (plain CPU kernels)",
            "candidates": [t.to_dict() for t in self.trials],
        }

    def to_json(self, spec: ModelSpec, options: RuntimeOptions) -> str:
        return json.dumps(
            {
                "selection_version": SELECTION_VERSION,
                "key": self.key,
                "model_name": spec.model_name,
                "model_dir": str(spec.model_dir),
                "device": str(options.device),
                "cpu_threads": options.cpu_threads,
                "chosen": self.chosen,
                "selection_s": round(self.seconds, 3),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "trials": [t.to_dict() for t in self.trials],
            },
            indent=1,
        )


class SelectedBackend(Backend):
    """The chosen backend, plus why it was chosen (in describe()["hpip"])."""

    def __init__(self, inner: Backend, decision: Decision):
        self.inner = inner
        self.decision = decision
        self.name = inner.name
        self.input_names = inner.input_names
        self.output_names = inner.output_names

    def run(self, inputs: Mapping[str, np.ndarray]) -> List[np.ndarray]:
        return self.inner.run(inputs)

    def describe(self) -> Dict[str, Any]:
        return {**self.inner.describe(), "hpip": self.decision.metadata()}


# --- entry point -------------------------------------------------------------


def select_backend(spec: ModelSpec, options: RuntimeOptions, use_cache: bool = True) -> Backend:
    """The fastest backend for this model and device whose outputs match plain Paddle."""
    # The candidates are ordinary backends: they must not recurse into selection
    # (and PaddleBackend logs a note when it sees use_hpip).
    options = dataclasses.replace(options, use_hpip=False)
    candidates = CANDIDATES.get(options.device.kind)
    if candidates is None:  # xpu, npu, ...: Paddle's device plugins are the only way to run there
        from .paddle import PaddleBackend

        log.info("posepipe hpip: %s has no alternative backends; using Paddle Inference", options.device)
        return PaddleBackend(spec, options)
    key = decision_key(spec, options, candidates)
    cache_file = posepipe_home() / "hpip" / f"{spec.model_name}-{key[:24]}.json"
    if use_cache:
        cached = _from_cache(spec, options, candidates, key, cache_file)
        if cached is not None:
            return cached
    backend, decision = _measure(spec, options, candidates, key)
    if use_cache and _write_atomic(cache_file, decision.to_json(spec, options)):
        decision.cache_file = str(cache_file)
    _log_decision(spec, options, decision)
    return SelectedBackend(backend, decision)


def _from_cache(
    spec: ModelSpec, options: RuntimeOptions, candidates: Sequence[Candidate], key: str, path: Path
) -> Optional[SelectedBackend]:
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved.get("key") != key or saved.get("selection_version") != SELECTION_VERSION:
            return None
        trials = [Trial.from_dict(t) for t in saved["trials"]]
        chosen = next(c for c in candidates if c.name == saved["chosen"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, StopIteration) as e:
        log.warning("posepipe hpip: ignoring unreadable decision %s (%s)", path, e)
        return None
    start = time.perf_counter()
    try:
        backend = chosen.build(spec, options)
    except (PosepipeError, OSError) as e:  # the environment changed since: measure again
        log.warning("posepipe hpip: cached choice %s no longer builds (%s); re-selecting", chosen.name, e)
        return None
    decision = Decision(chosen.name, trials, key, time.perf_counter() - start, source="cache", cache_file=str(path))
    log.info(
        "posepipe hpip: %s on %s -> %s (decision cached in %s)", spec.model_name, options.device, chosen.name, path
    )
    return SelectedBackend(backend, decision)


def _measure(
    spec: ModelSpec, options: RuntimeOptions, candidates: Sequence[Candidate], key: str
) -> Tuple[Backend, Decision]:
    start = time.perf_counter()
    parity_batches, timed_batches = calibration_batches(spec)
    reference_options = RuntimeOptions(
        device=Device("cpu"), cpu_threads=options.cpu_threads, use_onednn=False, use_hpip=False
    )
    try:
        reference = _paddle(False)(spec, reference_options)
    except PosepipeError as e:
        raise BackendUnavailable(
            f"{spec.model_dir}: use_hpip checks every backend against plain Paddle Inference, which cannot run here: {e}"
        ) from e
    feeds = {b: calibration_feeds(spec, b, reference.input_names) for b in parity_batches}
    expected = {b: reference.run(f) for b, f in feeds.items()}

    trials: List[Trial] = []
    ready: Dict[str, Backend] = {}
    for cand in candidates:
        trial = Trial(cand.name, cand.precision)
        trials.append(trial)
        same_as_reference = cand.name == REFERENCE and options.device.kind == "cpu"
        try:
            backend = reference if same_as_reference else cand.build(spec, options)
        except BackendUnavailable as e:
            trial.status, trial.reason = "unavailable", str(e)
            log.info("posepipe hpip: %s: %s unavailable: %s", spec.model_name, cand.name, e)
            continue
        except Exception as e:  # a backend that cannot even load this model just loses
            trial.status, trial.reason = "failed", f"{type(e).__name__}: {e}"
            log.warning("posepipe hpip: %s: %s failed to build: %s", spec.model_name, cand.name, e)
            continue
        report = ParityReport()
        try:
            for b in parity_batches:
                got = expected[b] if same_as_reference else backend.run(feeds[b])  # also the warm-up run
                report.merge(compare(spec.kind, expected[b], got, TOLERANCES[cand.precision]), prefix=f"batch {b}: ")
        except Exception as e:
            trial.status, trial.reason = "failed", f"{type(e).__name__}: {e}"
            log.warning("posepipe hpip: %s: %s failed to run: %s", spec.model_name, cand.name, e)
            continue
        trial.max_diff = report.max_diff
        if not report.ok:
            trial.status, trial.reason = "mismatch", "; ".join(report.problems[:3])
            log.warning("posepipe hpip: %s: %s does not match plain Paddle: %s", spec.model_name, cand.name, trial.reason)
            continue
        trial.status = "ok"
        ready[cand.name] = backend
    if not ready:
        raise BackendUnavailable(
            f"{spec.model_dir}: no backend for {options.device} passed: " + "; ".join(t.line() for t in trials)
        )
    timed = {b: feeds[b] if b in feeds else calibration_feeds(spec, b, reference.input_names) for b in timed_batches}
    for name, ms in _time(ready, timed).items():
        next(t for t in trials if t.name == name).ms = ms
    best = min((t for t in trials if t.status == "ok"), key=lambda t: t.score_ms)
    return ready[best.name], Decision(best.name, trials, key, time.perf_counter() - start)


def calibration_batches(spec: ModelSpec) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """(batches checked for parity, batches timed)."""
    if spec.kind == KEYPOINT:
        return (1, 8), (1, 8)
    return (1, 2), (1,)


def _time(
    backends: Dict[str, Backend],
    feeds: Dict[int, Dict[str, np.ndarray]],
    max_rounds: int = MAX_ROUNDS,
    budget_s: float = TIMING_BUDGET_S,
    prune: bool = True,
) -> Dict[str, Dict[int, float]]:
    """Best ms per batch, candidates alternating round by round."""
    best = {name: {b: math.inf for b in feeds} for name in backends}
    active = list(backends)
    deadline = None
    for round_no in range(max_rounds):
        for name in active:
            for b, f in feeds.items():
                t0 = time.perf_counter()
                backends[name].run(f)
                best[name][b] = min(best[name][b], (time.perf_counter() - t0) * 1000)
        if deadline is None:
            deadline = time.perf_counter() + budget_s
        if round_no + 1 < MIN_ROUNDS or not prune:
            continue  # one sample can be a 10x outlier on a busy machine: never prune on it
        top = min(sum(best[n].values()) for n in active)
        active = [n for n in active if sum(best[n].values()) <= PRUNE_FACTOR * top]
        if len(active) == 1 or time.perf_counter() > deadline:
            break
    return best


# --- calibration input -------------------------------------------------------


def calibration_feeds(spec: ModelSpec, batch: int, input_names: Sequence[str], seed: int = CALIBRATION_SEED):
    """A fixed-seed batch in the model's input layout: smooth colour fields
    with hard-edged blobs (edges and shapes for detectors and keypoint
    heatmaps to respond to), normalised as the yml says. Item i is the same
    image whatever the batch size."""
    import cv2

    pre = spec.detector or spec.keypoint
    h, w = spec.detector.target_hw if spec.detector else (spec.keypoint.input_wh[1], spec.keypoint.input_wh[0])
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(batch):
        img = cv2.resize(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
        for _ in range(6):
            centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            axes = (int(rng.integers(w // 16, w // 4)), int(rng.integers(h // 8, h // 3)))
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            cv2.ellipse(img, centre, axes, float(rng.integers(0, 180)), 0.0, 360.0, colour, -1)
        images.append(img)
    x = np.stack(images).astype(np.float32) * np.float32(1 / 255.0 if pre.is_scale else 1.0)
    x = ((x - np.float32(pre.mean)) / np.float32(pre.std)).transpose(0, 3, 1, 2)
    known = {
        "image": np.ascontiguousarray(x, dtype=np.float32),
        "scale_factor": np.ones((batch, 2), np.float32),
        "im_shape": np.tile(np.float32([h, w]), (batch, 1)),
    }
    unknown = [n for n in input_names if n not in known]
    if unknown:
        raise ModelError(f"{spec.model_dir}: use_hpip cannot make calibration data for input(s) {unknown}")
    return {n: known[n] for n in input_names}


# --- decision cache ------------------------------------------------------------


def decision_key(spec: ModelSpec, options: RuntimeOptions, candidates: Sequence[Candidate]) -> str:
    """What a measured decision depends on: the model files (and a shipped ONNX),
    the device and machine, the threads, the package versions, the rules."""
    shipped = spec.model_dir / SHIPPED_NAME
    parts = {
        "selection": SELECTION_VERSION,
        "model": model_key(spec),
        "onnx": file_digest(shipped) if shipped.is_file() else None,
        "device": str(options.device),
        "machine": _machine(options.device),
        "cpu_threads": options.cpu_threads,
        "candidates": [c.name for c in candidates],
        "versions": {
            name: _version(*dists)
            for name, dists in {
                "posepipe": ("posepipe",),
                "paddle": ("paddlepaddle", "paddlepaddle-gpu"),
                "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
                "paddle2onnx": ("paddle2onnx",),
                "tensorrt": ("tensorrt",),
            }.items()
        },
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _version(*dists: str) -> Optional[str]:
    for dist in dists:
        try:
            return f"{dist}=={metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            continue
    return None


def _machine(device: Device) -> str:
    """The processor the timings were taken on, so a shared home folder does not
    carry one machine's choice to another."""
    if device.kind == "gpu":
        try:
            paddle = import_paddle()
            if paddle.device.is_compiled_with_cuda():
                return str(paddle.device.cuda.get_device_name(device.index))
        except Exception:  # no CUDA paddle: the provider list decides anyway
            pass
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _write_atomic(path: Path, text: str) -> bool:
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        return True
    except OSError as e:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)  # no writable cache: selection still worked, it just runs again next start
        log.warning("posepipe hpip: cannot cache the decision in %s (%s); set POSEPIPE_HOME", path, e)
        return False


def _log_decision(spec: ModelSpec, options: RuntimeOptions, decision: Decision) -> None:
    log.info(
        "posepipe hpip: %s (%s) on %s, %d threads -> %s [selection %.1f s] | %s",
        spec.model_name,
        spec.model_dir,
        options.device,
        options.cpu_threads,
        decision.chosen,
        decision.seconds,
        " | ".join(t.line() for t in decision.trials),
    )


def _table(argv: Optional[Sequence[str]] = None) -> int:
    """Measure every candidate of this device on each model, without pruning:
    ms per call (min over interleaved rounds) and max diff against plain Paddle.

        python -m posepipe.runtime.select MODEL_DIR [...] [--rounds 7] [--threads 2]
    """
    import argparse

    from ..models.spec import load_model_spec

    parser = argparse.ArgumentParser(description=_table.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dirs", nargs="+")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    from .device import parse_device

    options = RuntimeOptions(device=parse_device(args.device), cpu_threads=args.threads)
    print(f"device {options.device}, {options.cpu_threads} threads, {_machine(options.device)}")
    print(f"{'model':40} {'backend':28} {'batch':>5} {'ms/call':>9} {'ms/item':>8}  max diff vs plain Paddle (CPU)")
    for model_dir in args.model_dirs:
        spec = load_model_spec(model_dir)
        reference = _paddle(False)(spec, dataclasses.replace(options, device=Device("cpu"), use_onednn=False))
        batches = calibration_batches(spec)[0]
        feeds = {b: calibration_feeds(spec, b, reference.input_names) for b in batches}
        expected = {b: reference.run(f) for b, f in feeds.items()}
        ready: Dict[str, Backend] = {}
        diffs: Dict[str, str] = {}
        for cand in CANDIDATES[options.device.kind]:
            try:
                backend = reference if cand.name == REFERENCE else cand.build(spec, options)
                report = ParityReport()
                for b in batches:
                    report.merge(compare(spec.kind, expected[b], backend.run(feeds[b]), TOLERANCES[cand.precision]))
            except PosepipeError as e:
                print(f"{spec.model_dir.parent.name + '/' + spec.model_dir.name:40} {cand.name:28} unavailable: {e}")
                continue
            ready[cand.name] = backend
            diffs[cand.name] = summarize(report.max_diff) + ("" if report.ok else "  MISMATCH: " + report.problems[0])
        times = _time(ready, feeds, max_rounds=args.rounds, budget_s=math.inf, prune=False)
        for name, per_batch in times.items():
            for b, ms in per_batch.items():
                label = spec.model_dir.parent.name + "/" + spec.model_dir.name
                print(f"{label:40} {name:28} {b:5d} {ms:9.1f} {ms / b:8.1f}  {diffs[name]}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(_table())
