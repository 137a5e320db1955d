"""`precision=`: lower precision as a user choice, checked for accuracy.

    None     today's behaviour: fp32 on CPU; on GPUs what use_hpip picks (its
             fp16 TensorRT candidates included)
    "fp32"   fp32 everywhere (on GPUs use_hpip keeps to its fp32 candidates)
    "bf16"   OpenVINO with its bf16 inference precision, where the CPU has
             AMX-BF16 or AVX512-BF16
    "int8"   OpenVINO on models quantized by NNCF on the calibration images,
             where the CPU has VNNI or AMX-INT8
    "fp16"   on GPUs: use_hpip's fp16 TensorRT candidates
    "auto"   per model, the fastest of fp32 and the precisions this device has
             units for that passes the accuracy gate

`calibration` names the user's images (a folder, a file or a list), photos
of the people the pipeline will see. With them, the decision is taken per
model, detector first: each lower precision runs end to end next to fp32 on
those images (the other model as already chosen) and must pass the accuracy
gate (runtime/accuracy.py) and be faster than fp32 on them, else that model
runs fp32 and a log line says why. So a detector whose int8 scores drift
across the detection threshold stays fp32 while the keypoint model runs int8.
int8 and auto need calibration images (int8 is calibrated on them) and
refuse without; an explicit bf16 or fp16 without them runs with a warning
that its accuracy was not checked. A precision the device has no units for
falls back to fp32 with a log line.

The decision (each model's precision, each candidate's accuracy report and
model time) is cached per models, device, CPU and calibration set
(runtime/decisions.py), and shown in `pipeline.metadata["precision"]`.
"""
from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .detector import Detector
from .errors import ConfigError, InputError, PosepipeError
from .io import iter_sources, read_frame
from .keypoints import KeypointModel
from .models.spec import ModelSpec
from .runtime import decisions
from .runtime.accuracy import (
    MAX_SCORE_DRIFT,
    MIN_CLOSE_SHARE,
    MIN_OKS,
    VISIBLE_SCORE,
    AccuracyReport,
    Persons,
    compare_persons,
)
from .runtime.base import Backend, RuntimeOptions
from .runtime.candidates import CANDIDATES
from .runtime.cpu import cpu_info
from .runtime.onnx_export import model_key
from .runtime.plan import ModelPlan, plan_backend
from .runtime.timing import OthersCpu, best_ms

log = logging.getLogger("posepipe")

LOW_PRECISIONS = {"cpu": ("bf16", "int8"), "gpu": ("fp16",)}
ROLES = ("detector", "keypoints")
PRECISION_VERSION = 1
MAX_CALIBRATION_IMAGES = 64
TIMED_IMAGES = 4  # images whose detector calls are timed per candidate and round
TIMED_CROPS = 16  # crops whose keypoint calls are timed per candidate and round
TIMING_ROUNDS = 3
# A lower precision must cut a model's time by this much to be worth its risk.
MIN_SPEEDUP = 1.05

# Builds (Detector, KeypointModel) around two backends and a keypoint batch size.
StageFactory = Callable[[Backend, Backend, int], Tuple[Detector, KeypointModel]]
# Picks the crops per keypoint call for a keypoint model's plan.
BatchChooser = Callable[[ModelPlan], int]


@dataclass
class Choice:
    """What runs: a plan per model, and how it was decided."""

    detector: ModelPlan
    keypoints: ModelPlan
    info: Dict[str, Any] = field(default_factory=dict)

    @property
    def precisions(self) -> Dict[str, str]:
        return {"detector": self.detector.backend.precision, "keypoints": self.keypoints.backend.precision}


@dataclass
class _Trial:
    """One model at one precision, checked and timed."""

    precision: str
    plan: ModelPlan
    report: Optional[AccuracyReport] = None  # None: fp32, the reference
    ms: float = float("inf")

    @property
    def passed(self) -> bool:
        return self.report is None or self.report.passed

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"precision": self.precision, "backend": self.plan.label, "model_ms": round(self.ms, 3)}
        if self.report is not None:
            out["accuracy"] = self.report.summary()
        return out


def load_calibration(calibration: Any) -> Tuple[List[np.ndarray], str]:
    """The calibration images (BGR uint8) and a digest of their pixels."""
    images: List[np.ndarray] = []
    digest = hashlib.sha256()
    for source in iter_sources(calibration):
        try:
            frame = read_frame(source)
        except InputError as e:
            raise ConfigError(f"calibration: {e}") from None
        images.append(frame.image)
        digest.update(f"{frame.image.shape}".encode())
        digest.update(frame.image.tobytes())
        if len(images) == MAX_CALIBRATION_IMAGES:
            log.info("posepipe precision: using the first %d calibration images", MAX_CALIBRATION_IMAGES)
            break
    if not images:
        raise ConfigError(f"calibration: no images in {calibration!r}")
    return images, digest.hexdigest()


class PrecisionChooser:
    """Takes the precision decision for one pipeline (see the module's docstring)."""

    def __init__(
        self,
        specs: Tuple[ModelSpec, ModelSpec],
        runtime: RuntimeOptions,
        make_stages: StageFactory,
        choose_batch: BatchChooser,
        det_threshold: Optional[float],
        tune_threads: bool,
    ):
        self.specs = dict(zip(ROLES, specs))
        self.runtime = runtime
        self.make_stages = make_stages
        self.choose_batch = choose_batch
        self.det_threshold = det_threshold
        self.tune_threads = tune_threads
        self.device = runtime.device

    def choose(self, request: Optional[str], calibration: Any, fp32: Tuple[ModelPlan, ModelPlan]) -> Choice:
        det32, kpt32 = fp32
        if request in (None, "fp32"):
            return Choice(det32, kpt32, {"requested": request})
        wanted = self._wanted(request)
        if not wanted:
            return Choice(det32, kpt32, {"requested": request, "decision": "no units"})
        if calibration is None:  # explicit bf16 / fp16 only (PipelineOptions refuses the rest)
            plans = {role: self._build(role, wanted[0]) for role in ROLES}
            log.warning(
                "posepipe precision: running %s without an accuracy check (no calibration images given; "
                "calibration=... checks it against fp32 on your photos)", wanted[0],
            )
            return Choice(plans["detector"], plans["keypoints"], {"requested": request, "decision": "unchecked"})
        return self._decide(request, wanted, calibration, det32, kpt32)

    def _wanted(self, request: str) -> List[str]:
        """The precisions to try, less those this device has no units for (logged)."""
        wanted = list(LOW_PRECISIONS.get(self.device.kind, ())) if request == "auto" else [request]
        usable = []
        for precision in wanted:
            why = self._no_units(precision)
            if why:
                log.warning("posepipe precision: %s would not pay here (%s); running fp32", precision, why)
            else:
                usable.append(precision)
        return usable

    def _no_units(self, precision: str) -> str:
        if precision not in LOW_PRECISIONS.get(self.device.kind, ()):
            where = " / ".join(kind for kind, low in LOW_PRECISIONS.items() if precision in low)
            return f"posepipe runs {precision} on {where}, not on {self.device}"
        if self.device.kind == "cpu":
            from .runtime.openvino import OpenVinoBackend

            if precision not in OpenVinoBackend.precisions(self.device):
                units = "AMX-BF16 or AVX512-BF16" if precision == "bf16" else "VNNI or AMX-INT8"
                return f"{precision} needs {units}; this CPU is {cpu_info().summary()}"
        return ""

    # --- the measured decision -----------------------------------------------

    def _decide(self, request: str, wanted: List[str], calibration: Any, det32: ModelPlan, kpt32: ModelPlan) -> Choice:
        start, witness = time.perf_counter(), OthersCpu()
        images, calib_digest = load_calibration(calibration)
        key = self._key(request, wanted, calib_digest, det32, kpt32)
        path = decisions.cache_path("precision", "+".join(s.model_name for s in self.specs.values()), key)
        cached = self._from_cache(decisions.load(path, key, PRECISION_VERSION), {"detector": det32, "keypoints": kpt32})
        if cached is not None:
            cached.info.update(requested=request, decision="cache", cache_file=str(path))
            return cached
        reference, det_feeds, crops = self._run(det32, kpt32, images)
        if not any(len(p.boxes) for p in reference):
            raise ConfigError(
                "calibration: the fp32 pipeline finds no person on these images, so a lower precision cannot be "
                "checked; give photos of the people the pipeline will see"
            )
        samples = {"detector": det_feeds, "keypoints": [{"image": c[None]} for c in crops]}
        chosen = {"detector": det32, "keypoints": kpt32}
        trials: Dict[str, List[_Trial]] = {}
        for role in ROLES:  # the detector first: the keypoint model then sees the chosen detector's persons
            trials[role] = [_Trial("fp32", chosen[role])]
            for precision in wanted:
                try:
                    plan = self._build(role, precision, samples[role])
                except PosepipeError as e:
                    log.warning("posepipe precision: %s: %s cannot run here (%s)", role, precision, e)
                    continue
                plans = {**chosen, role: plan}
                trial = _Trial(precision, plan, compare_persons(reference, self._run(plans["detector"], plans["keypoints"], images)[0]))
                log.log(
                    logging.INFO if trial.passed else logging.WARNING,
                    "posepipe precision: %s at %s against fp32 on the calibration images %s: %s",
                    role, precision, "passes" if trial.passed else "FAILS the accuracy gate", trial.report.line(),
                )
                trials[role].append(trial)
            other = chosen["keypoints" if role == "detector" else "detector"]
            self._time(role, [t for t in trials[role] if t.passed], other, det_feeds, crops)
            chosen[role] = self._pick(role, trials[role]).plan
        info: Dict[str, Any] = {
            "requested": request,
            "decision": "measured",
            "calibration_images": len(images),
            "decision_s": round(time.perf_counter() - start, 3),
            "candidates": {role: [t.to_dict() for t in trials[role]] for role in ROLES},
        }
        models = {role: str(getattr(chosen[role].backend, "model_path", "")) for role in ROLES}
        payload = {"chosen": {role: chosen[role].backend.precision for role in ROLES}, "models": models, **info}
        info["cache_file"] = decisions.store_measured(path, key, PRECISION_VERSION, payload, witness)
        choice = Choice(chosen["detector"], chosen["keypoints"], info)
        log.info("posepipe precision: %s requested -> %s (%.1f s)", request, choice.precisions, info["decision_s"])
        return choice

    def _pick(self, role: str, trials: List[_Trial]) -> _Trial:
        """The fastest passing trial, if it beats fp32 by MIN_SPEEDUP; the others' reasons logged."""
        fp32 = trials[0]
        passing = [t for t in trials if t.passed]
        best = min(passing, key=lambda t: t.ms)
        if best is not fp32 and best.ms * MIN_SPEEDUP > fp32.ms:
            best = fp32
        for trial in trials[1:]:
            if trial is not best:
                why = trial.report.reason() if not trial.passed else (
                    f"accurate, but {trial.ms:.1f} ms of model time on the calibration inputs against fp32's {fp32.ms:.1f} ms"
                )
                log.warning("posepipe precision: %s: not running %s (%s); running %s", role, trial.precision, why, best.precision)
        return best

    def _from_cache(self, saved: Optional[Dict[str, Any]], fp32: Dict[str, ModelPlan]) -> Optional[Choice]:
        if saved is None or not isinstance(saved.get("chosen"), dict):
            return None
        plans = dict(fp32)
        try:
            for role in ROLES:
                precision = saved["chosen"][role]
                if precision == fp32[role].backend.precision:
                    continue
                model = Path(saved["models"][role]) if precision == "int8" else None
                if model is not None and not (model.is_file() and model.with_suffix(".bin").is_file()):
                    return None  # the quantized model is gone: decide again
                plans[role] = self._plan(role, precision, model)
        except (KeyError, TypeError) as e:
            log.warning("posepipe precision: ignoring an unreadable cached decision (%s)", e)
            return None
        except PosepipeError as e:
            log.warning("posepipe precision: the cached choice no longer builds (%s); deciding again", e)
            return None
        return Choice(plans["detector"], plans["keypoints"], {"candidates": saved.get("candidates")})

    def _key(self, request: str, wanted: Sequence[str], calib_digest: str, det32: ModelPlan, kpt32: ModelPlan) -> str:
        parts = {
            "precision": PRECISION_VERSION,
            "request": request,
            "wanted": list(wanted),
            "models": [model_key(s) for s in self.specs.values()],
            "fp32": [det32.label, kpt32.label],
            "calibration": calib_digest,
            "threshold": self.det_threshold,
            "gate": [MIN_OKS, MIN_CLOSE_SHARE, VISIBLE_SCORE, MAX_SCORE_DRIFT, MIN_SPEEDUP],
        }
        return decisions.decision_key(parts, self.device)

    # --- candidates ------------------------------------------------------------

    def _build(self, role: str, precision: str, samples: Optional[List[Dict[str, np.ndarray]]] = None) -> ModelPlan:
        model = None
        if precision == "int8" and self.device.kind != "gpu":
            from .runtime.quantize import int8_model

            if not samples:
                raise ConfigError("int8 needs calibration images with people on them")
            model = int8_model(self.specs[role], samples)
        return self._plan(role, precision, model)

    def _plan(self, role: str, precision: str, model_path: Optional[Path] = None) -> ModelPlan:
        """A lower precision's backend on this device: use_hpip's fp16 TensorRT
        candidates on GPUs, OpenVINO (with its int8 model, if any) on CPUs."""
        if self.device.kind == "gpu":
            fp16 = tuple(c for c in CANDIDATES["gpu"] if c.precision == "fp16")
            return plan_backend(self.specs[role], self.runtime, use_hpip=True, candidates=fp16, tune_threads=False)
        return self._openvino(role, precision, model_path)

    def _openvino(self, role: str, precision: str, model_path: Optional[Path] = None) -> ModelPlan:
        from .runtime.openvino import OpenVinoBackend

        spec = self.specs[role]
        label = f"openvino_{precision}" + (f":{model_path.stem}" if model_path is not None else "")
        build = lambda o: OpenVinoBackend(spec, o, precision=precision, model_path=model_path)  # noqa: E731
        return ModelPlan.tuned(spec, self.runtime, label, build, self.tune_threads)

    # --- running ---------------------------------------------------------------

    def _run(
        self, det: ModelPlan, kpt: ModelPlan, images: List[np.ndarray]
    ) -> Tuple[List[Persons], List[Dict[str, np.ndarray]], List[np.ndarray]]:
        """Every calibration image end to end: persons per image, the detector's
        input per image, and every person's crop."""
        from .pipeline import detect_persons, estimate_keypoints

        detector, keypoints = self.make_stages(det.backend, kpt.backend, self.choose_batch(kpt))
        persons, feeds, crops = [], [], []
        for image in images:
            feeds.append(detector.preprocess([image]))
            rows, _ = detect_persons(detector, [image], self.det_threshold)
            kpts, _, image_crops = estimate_keypoints(keypoints, [image], rows)
            persons.append(Persons.from_rows(rows[0], kpts[0]))
            crops.extend(image_crops)
        return persons, feeds, crops

    def _time(
        self, role: str, trials: List[_Trial], other: ModelPlan, det_feeds: List[Dict[str, np.ndarray]], crops: List[np.ndarray]
    ) -> None:
        """Each trial's model time on the calibration inputs (`other`: the
        other model's plan), alternating rounds."""
        calls = {}
        for i, trial in enumerate(trials):
            det, kpt = (trial.plan, other) if role == "detector" else (other, trial.plan)
            detector, keypoints = self.make_stages(det.backend, kpt.backend, self.choose_batch(kpt))
            if role == "detector":
                call = lambda detector=detector: [detector.infer(f) for f in det_feeds[:TIMED_IMAGES]]  # noqa: E731
            else:
                batch = np.stack(crops[:TIMED_CROPS])
                call = lambda keypoints=keypoints, batch=batch: keypoints.heatmaps(batch)  # noqa: E731
            call()  # kernel creation for every shape, untimed
            calls[i] = call
        for i, ms in best_ms(calls, TIMING_ROUNDS).items():
            trials[i].ms = ms


__all__ = ["Choice", "PrecisionChooser", "load_calibration"]
