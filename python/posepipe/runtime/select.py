"""`use_hpip=True`: per model and device, the fastest backend that still
matches plain Paddle.

How a model's backend is chosen (once; the decision is then cached on disk):

1. Candidates for the device (runtime/candidates.py), each built in turn.
   One that cannot be built here (package missing, no GPU, no TensorRT) is
   recorded as `unavailable` with the reason; one that fails to build or run
   is `failed`.
2. Calibration: a fixed-seed synthetic batch in the model's input shape
   (runtime/timing.py; keypoint models at batch 1 and 8, detectors at 1 and,
   for parity only, 2, which exercises the batch-1 NMS split). Each
   candidate's outputs are compared with plain Paddle on the CPU
   (runtime/parity.py, tolerances by the candidate's precision); a mismatch
   is recorded and skipped.
3. Timing: the matching candidates run the timed batches in alternating
   rounds (min per batch); from the second round on, a candidate 1.5x slower
   than the best stops early. Score = the sum of the timed batches' ms, i.e.
   the time for a 1-person image plus an 8-person image for keypoint models.
4. The decision (chosen backend, per-candidate ms and max diffs) is logged at
   INFO, kept in `describe()["hpip"]` (so in results' metadata) and written to
   `$POSEPIPE_HOME/hpip/` (runtime/decisions.py); later starts build the
   chosen backend only.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..batching import run_split
from ..errors import PosepipeError
from ..models.spec import KEYPOINT, ModelSpec
from . import decisions
from .base import Backend, BackendUnavailable, RuntimeOptions
from .candidates import CANDIDATES, REFERENCE, Candidate, paddle
from .device import Device
from .onnx_export import SHIPPED_NAME, file_digest, model_key
from .parity import TOLERANCES, ParityReport, compare, summarize
from .timing import OthersCpu, calibration_feeds, time_backends

log = logging.getLogger("posepipe")

# Bump when candidates, calibration or tolerances change: old decisions are then re-measured.
SELECTION_VERSION = 2
TIMING_BUDGET_S = 2.5  # per model, after the first round
MAX_ROUNDS = 5
PRUNE_FACTOR = 1.5


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


class SelectedBackend(Backend):
    """The chosen backend, plus why it was chosen (in describe()["hpip"]);
    `candidate` builds it again (with other threads, say)."""

    def __init__(self, inner: Backend, decision: Decision, candidate: Candidate):
        self.inner = inner
        self.decision = decision
        self.candidate = candidate
        self.name = inner.name
        self.input_names = inner.input_names
        self.output_names = inner.output_names
        self.max_batch = inner.max_batch
        self.precision = inner.precision

    def run(self, inputs: Mapping[str, np.ndarray]) -> List[np.ndarray]:
        return self.inner.run(inputs)

    def describe(self) -> Dict[str, Any]:
        return {**self.inner.describe(), "hpip": self.decision.metadata()}


def select_backend(
    spec: ModelSpec,
    options: RuntimeOptions,
    use_cache: bool = True,
    candidates: Optional[Sequence[Candidate]] = None,
) -> Backend:
    """The fastest backend for this model and device whose outputs match plain Paddle."""
    candidates = tuple(candidates if candidates is not None else CANDIDATES.get(options.device.kind, ()))
    if not candidates:  # xpu, npu, ...: Paddle's device plugins are the only way to run there
        from .paddle import PaddleBackend

        log.info("posepipe hpip: %s has no alternative backends; using Paddle Inference", options.device)
        return PaddleBackend(spec, options)
    key = decision_key(spec, options, candidates)
    cache_file = decisions.cache_path("hpip", spec.model_name, key)
    if use_cache:
        cached = _from_cache(spec, options, candidates, key, cache_file)
        if cached is not None:
            return cached
    witness = OthersCpu()
    backend, decision = _measure(spec, options, candidates, key)
    chosen = next(c for c in candidates if c.name == decision.chosen)
    payload = {
        "model_name": spec.model_name,
        "model_dir": str(spec.model_dir),
        "device": str(options.device),
        "cpu_threads": options.cpu_threads,
        "chosen": decision.chosen,
        "selection_s": round(decision.seconds, 3),
        "trials": [t.to_dict() for t in decision.trials],
    }
    if use_cache:
        decision.cache_file = decisions.store_measured(cache_file, key, SELECTION_VERSION, payload, witness)
    _log_decision(spec, options, decision)
    return SelectedBackend(backend, decision, chosen)


def decision_key(spec: ModelSpec, options: RuntimeOptions, candidates: Sequence[Candidate]) -> str:
    """What a measured decision depends on: the model files (and a shipped ONNX),
    the device and machine, the threads, the package versions, the candidates."""
    shipped = spec.model_dir / SHIPPED_NAME
    parts = {
        "selection": SELECTION_VERSION,
        "model": model_key(spec),
        "onnx": file_digest(shipped) if shipped.is_file() else None,
        "cpu_threads": options.cpu_threads,
        "candidates": [c.name for c in candidates],
    }
    return decisions.decision_key(parts, options.device)


def _from_cache(
    spec: ModelSpec, options: RuntimeOptions, candidates: Sequence[Candidate], key: str, path
) -> Optional[SelectedBackend]:
    saved = decisions.load(path, key, SELECTION_VERSION)
    if saved is None:
        return None
    try:
        trials = [Trial.from_dict(t) for t in saved["trials"]]
        chosen = next(c for c in candidates if c.name == saved["chosen"])
    except (KeyError, TypeError, ValueError, StopIteration) as e:
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
    return SelectedBackend(backend, decision, chosen)


def _measure(
    spec: ModelSpec, options: RuntimeOptions, candidates: Sequence[Candidate], key: str
) -> Tuple[Backend, Decision]:
    start = time.perf_counter()
    parity_batches, timed_batches = calibration_batches(spec)
    reference_options = RuntimeOptions(device=Device("cpu"), cpu_threads=options.cpu_threads, use_onednn=False)
    try:
        reference = paddle(False)(spec, reference_options)
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
        try:
            report = check_parity(spec, backend, feeds, expected, cand.precision, same_as_reference)
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
    times = time_backends(ready, timed, MAX_ROUNDS, TIMING_BUDGET_S, PRUNE_FACTOR)
    for name, ms in times.items():
        next(t for t in trials if t.name == name).ms = ms
    best = min((t for t in trials if t.status == "ok"), key=lambda t: t.score_ms)
    return ready[best.name], Decision(best.name, trials, key, time.perf_counter() - start)


def check_parity(
    spec: ModelSpec,
    backend: Backend,
    feeds: Mapping[int, Mapping[str, np.ndarray]],
    expected: Mapping[int, List[np.ndarray]],
    precision: str,
    same_as_reference: bool = False,
) -> ParityReport:
    """The backend's outputs on the calibration batches against the reference's."""
    report = ParityReport()
    for b, f in feeds.items():
        got = expected[b] if same_as_reference else run_split(backend, dict(f))  # also the warm-up run
        report.merge(compare(spec.kind, expected[b], got, TOLERANCES[precision]), prefix=f"batch {b}: ")
    return report


def calibration_batches(spec: ModelSpec) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """(batches checked for parity, batches timed)."""
    if spec.kind == KEYPOINT:
        return (1, 8), (1, 8)
    return (1, 2), (1,)


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
