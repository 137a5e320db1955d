"""`precision=`: lower precision as a user choice, checked for accuracy.

    None     today's behaviour: fp32 on CPU; on GPUs what use_hpip picks (its
             fp16 TensorRT candidates included)
    "fp32"   fp32 everywhere (on GPUs use_hpip keeps to its fp32 candidates)
    "bf16"   OpenVINO with its bf16 inference precision, where the CPU has
             AMX-BF16 or AVX512-BF16
    "int8"   OpenVINO on models quantized by NNCF on the calibration images,
             where the CPU has VNNI or AMX-INT8
    "fp16"   on GPUs: use_hpip's fp16 TensorRT candidates
    "auto"   the fastest of fp32 and the precisions this device has units
             for that pass the accuracy gate

`calibration` names the user's images (a folder, a file or a list), photos
of the people the pipeline will see. With them, every lower precision is run
end to end next to fp32 on those images and must pass the accuracy gate
(runtime/accuracy.py) and be faster than fp32 on them; otherwise posepipe
runs fp32 and logs why. int8 and auto need them (int8 is calibrated on them)
and refuse without; an explicit bf16 or fp16 without them runs with a
warning that its accuracy was not checked. A precision the device has no
units for falls back to fp32 with a log line.

The decision (precision, each candidate's accuracy report and model time) is
cached per model, device, CPU and calibration set (runtime/decisions.py), and
shown in `pipeline.metadata["precision"]`.
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
from .runtime.accuracy import MIN_CLOSE_SHARE, MIN_OKS, VISIBLE_SCORE, AccuracyReport, Persons, compare_persons
from .runtime.base import Backend, RuntimeOptions
from .runtime.candidates import CANDIDATES
from .runtime.cpu import cpu_info
from .runtime.onnx_export import model_key
from .runtime.plan import ModelPlan, plan_backend
from .runtime.timing import OthersCpu, best_ms

log = logging.getLogger("posepipe")

LOW_PRECISIONS = {"cpu": ("bf16", "int8"), "gpu": ("fp16",)}
PRECISION_VERSION = 1
MAX_CALIBRATION_IMAGES = 64
TIMED_IMAGES = 4  # images whose model calls are timed per candidate and round
TIMING_ROUNDS = 3
# A lower precision must beat fp32's model time by this much to be worth its risk.
MIN_SPEEDUP = 1.05

# Builds (Detector, KeypointModel) around two backends and a keypoint batch size.
StageFactory = Callable[[Backend, Backend, int], Tuple[Detector, KeypointModel]]
# Picks the crops per keypoint call for a keypoint model's plan.
BatchChooser = Callable[[ModelPlan], int]


@dataclass
class Choice:
    """What runs: one precision for both models."""

    precision: str
    detector: ModelPlan
    keypoints: ModelPlan
    info: Dict[str, Any] = field(default_factory=dict)


@dataclass
class _Candidate:
    precision: str
    detector: ModelPlan
    keypoints: ModelPlan
    kpt_batch: int
    report: Optional[AccuracyReport] = None
    ms: Optional[float] = None

    def model_files(self) -> Dict[str, str]:
        """The int8 model files this candidate runs (by role), for the decision cache."""
        return {
            role: str(plan.backend.model_path)
            for role, plan in (("detector", self.detector), ("keypoints", self.keypoints))
            if self.precision == "int8"
        }

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {
            "precision": self.precision,
            "detector": self.detector.label,
            "keypoints": self.keypoints.label,
            "kpt_batch_size": self.kpt_batch,
        }
        if self.report is not None:
            out["accuracy"] = self.report.summary()
        if self.ms is not None:
            out["model_ms"] = round(self.ms, 3)
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
    """Runs the precision decision for one pipeline (see the module's docstring)."""

    def __init__(
        self,
        det_spec: ModelSpec,
        kpt_spec: ModelSpec,
        runtime: RuntimeOptions,
        make_stages: StageFactory,
        choose_batch: BatchChooser,
        det_threshold: Optional[float],
        tune_threads: bool,
    ):
        self.det_spec = det_spec
        self.kpt_spec = kpt_spec
        self.runtime = runtime
        self.make_stages = make_stages
        self.choose_batch = choose_batch
        self.det_threshold = det_threshold
        self.tune_threads = tune_threads
        self.device = runtime.device

    # --- entry -------------------------------------------------------------

    def choose(self, request: Optional[str], calibration: Any, fp32: Tuple[ModelPlan, ModelPlan]) -> Choice:
        det32, kpt32 = fp32
        if request in (None, "fp32"):
            return Choice("fp32" if request else _precision_of(det32, kpt32), det32, kpt32, {"requested": request})
        wanted = self._wanted(request)
        if not wanted:
            return Choice("fp32", det32, kpt32, {"requested": request, "chosen": "fp32", "reason": "no units"})
        if calibration is None:  # explicit bf16 / fp16 only (PipelineOptions refuses the rest)
            cand = self._build(wanted[0])
            log.warning(
                "posepipe precision: running %s without an accuracy check (no calibration images given; "
                "calibration=... checks it against fp32 on your photos)", wanted[0],
            )
            info = {"requested": request, "chosen": wanted[0], "decision": "unchecked", "candidates": [cand.to_dict()]}
            return Choice(wanted[0], cand.detector, cand.keypoints, info)
        return self._decide(request, wanted, calibration, det32, kpt32)

    def _wanted(self, request: str) -> List[str]:
        """The precisions to try, after refusing those the device has no units for."""
        low = LOW_PRECISIONS.get(self.device.kind, ())
        wanted = list(low) if request == "auto" else [request]
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
            return f"{precision} runs on {' / '.join(k for k, v in LOW_PRECISIONS.items() if precision in v)}, not on {self.device}"
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
        path = decisions.cache_path("precision", f"{self.det_spec.model_name}+{self.kpt_spec.model_name}", key)
        cached = self._from_cache(decisions.load(path, key, PRECISION_VERSION), wanted, det32, kpt32)
        if cached is not None:
            cached.info.update(requested=request, decision="cache", cache_file=str(path))
            return cached
        reference = _Candidate("fp32", det32, kpt32, self.choose_batch(kpt32))
        ref_persons, det_feeds, crops = self._run(reference, images)
        if not any(len(p.boxes) for p in ref_persons):
            raise ConfigError(
                "calibration: the fp32 pipeline finds no person on these images, so a lower precision cannot be "
                "checked; give photos of the people the pipeline will see"
            )
        candidates = [reference]
        for precision in wanted:
            try:
                cand = self._build(precision, det_feeds, crops)
            except PosepipeError as e:
                log.warning("posepipe precision: %s cannot run here (%s); running fp32", precision, e)
                continue
            cand.report = compare_persons(ref_persons, self._run(cand, images)[0])
            candidates.append(cand)
            log.log(
                logging.INFO if cand.report.passed else logging.WARNING,
                "posepipe precision: %s against fp32 on the calibration images %s: %s",
                precision, "passes" if cand.report.passed else "FAILS the accuracy gate", cand.report.line(),
            )
        passing = [c for c in candidates if c.report is None or c.report.passed]
        self._time(passing, images)
        best = min(passing, key=lambda c: c.ms)
        if best is not reference and best.ms * MIN_SPEEDUP > reference.ms:
            best = reference
        for cand in candidates[1:]:
            if cand is not best:
                why = cand.report.reason() if not cand.report.passed else (
                    f"accurate, but {cand.ms:.1f} ms of model time on the calibration images against fp32's "
                    f"{reference.ms:.1f} ms"
                )
                log.warning("posepipe precision: not running %s (%s); running %s", cand.precision, why, best.precision)
        info: Dict[str, Any] = {
            "requested": request,
            "chosen": best.precision,
            "decision": "measured",
            "calibration_images": len(images),
            "decision_s": round(time.perf_counter() - start, 3),
            "candidates": [c.to_dict() for c in candidates],
        }
        payload = {"chosen": best.precision, "models": best.model_files(), "candidates": info["candidates"]}
        info["cache_file"] = decisions.store_measured(path, key, PRECISION_VERSION, payload, witness)
        log.info("posepipe precision: %s requested -> %s (%.1f s)", request, best.precision, info["decision_s"])
        return Choice(best.precision, best.detector, best.keypoints, info)

    def _from_cache(self, saved: Optional[Dict[str, Any]], wanted: List[str], det32: ModelPlan, kpt32: ModelPlan) -> Optional[Choice]:
        if saved is None or saved.get("chosen") not in ["fp32", *wanted]:
            return None
        chosen = saved["chosen"]
        info = {"chosen": chosen, "candidates": saved.get("candidates")}
        if chosen == "fp32":
            return Choice("fp32", det32, kpt32, info)
        models = saved.get("models") or {}
        files = {role: Path(models[role]) for role in ("detector", "keypoints") if models.get(role)}
        if chosen == "int8" and not all(f.is_file() and f.with_suffix(".bin").is_file() for f in files.values()):
            return None  # the quantized models are gone: measure again
        try:
            det = self._openvino(self.det_spec, chosen, files.get("detector"))
            kpt = self._openvino(self.kpt_spec, chosen, files.get("keypoints"))
        except PosepipeError as e:
            log.warning("posepipe precision: cached choice %s no longer builds (%s); deciding again", chosen, e)
            return None
        return Choice(chosen, det, kpt, info)

    def _key(self, request: str, wanted: Sequence[str], calib_digest: str, det32: ModelPlan, kpt32: ModelPlan) -> str:
        parts = {
            "precision": PRECISION_VERSION,
            "request": request,
            "wanted": list(wanted),
            "detector": model_key(self.det_spec),
            "keypoints": model_key(self.kpt_spec),
            "fp32": [det32.label, kpt32.label],
            "calibration": calib_digest,
            "threshold": self.det_threshold,
            "gate": [MIN_OKS, MIN_CLOSE_SHARE, VISIBLE_SCORE],
        }
        return decisions.decision_key(parts, self.device)

    # --- candidates ------------------------------------------------------------

    def _build(
        self, precision: str, det_feeds: Optional[List[Dict[str, np.ndarray]]] = None, crops: Optional[List[np.ndarray]] = None
    ) -> _Candidate:
        if self.device.kind == "gpu":
            fp16 = tuple(c for c in CANDIDATES["gpu"] if c.precision == "fp16")
            det = plan_backend(self.det_spec, self.runtime, use_hpip=True, candidates=fp16, tune_threads=False)
            kpt = plan_backend(self.kpt_spec, self.runtime, use_hpip=True, candidates=fp16, tune_threads=False)
        elif precision == "int8":
            from .runtime.quantize import int8_model

            if not det_feeds or not crops:
                raise ConfigError("int8 needs calibration images with people on them")
            det = self._openvino(self.det_spec, "int8", int8_model(self.det_spec, det_feeds))
            kpt = self._openvino(self.kpt_spec, "int8", int8_model(self.kpt_spec, [{"image": c[None]} for c in crops]))
        else:
            det = self._openvino(self.det_spec, precision)
            kpt = self._openvino(self.kpt_spec, precision)
        return _Candidate(precision, det, kpt, self.choose_batch(kpt))

    def _openvino(self, spec: ModelSpec, precision: str, model_path: Optional[Path] = None) -> ModelPlan:
        from .runtime.openvino import OpenVinoBackend

        label = f"openvino_{precision}" + (f":{model_path.stem}" if model_path is not None else "")
        build = lambda o: OpenVinoBackend(spec, o, precision=precision, model_path=model_path)  # noqa: E731
        return ModelPlan.tuned(spec, self.runtime, label, build, self.tune_threads)

    # --- running ---------------------------------------------------------------

    def _run(self, cand: _Candidate, images: List[np.ndarray]) -> Tuple[List[Persons], List[Dict[str, np.ndarray]], List[np.ndarray]]:
        """Every calibration image end to end: persons per image, the detector's
        input per image, and every person's crop."""
        from .pipeline import detect_persons, estimate_keypoints

        detector, keypoints = self.make_stages(cand.detector.backend, cand.keypoints.backend, cand.kpt_batch)
        persons, feeds, crops = [], [], []
        for image in images:
            feeds.append(detector.preprocess([image]))
            rows, _ = detect_persons(detector, [image], self.det_threshold)
            kpts, _, image_crops = estimate_keypoints(keypoints, [image], rows)
            persons.append(Persons.from_rows(rows[0], kpts[0]))
            crops.extend(image_crops)
        return persons, feeds, crops

    def _time(self, candidates: List["_Candidate"], images: List[np.ndarray]) -> None:
        """Model time per candidate on the first TIMED_IMAGES images, alternating rounds."""
        calls = {}
        for i, cand in enumerate(candidates):
            detector, keypoints = self.make_stages(cand.detector.backend, cand.keypoints.backend, cand.kpt_batch)
            timed = images[:TIMED_IMAGES]
            feeds = [detector.preprocess([im]) for im in timed]
            rows = [detector.postprocess(detector.infer(f), [im.shape[:2]], self.det_threshold)[0] for f, im in zip(feeds, timed)]
            crops = [keypoints.crops([im], np.zeros(len(r), np.int32), r[:, 2:6])[0] for r, im in zip(rows, timed) if len(r)]

            def call(detector=detector, keypoints=keypoints, feeds=feeds, crops=crops) -> None:
                for f in feeds:
                    detector.infer(f)
                for c in crops:
                    keypoints.heatmaps(c)

            call()  # kernel creation for every shape, untimed
            calls[i] = call
        ms = best_ms(calls, TIMING_ROUNDS)
        for i, cand in enumerate(candidates):
            cand.ms = ms[i]


def _precision_of(det: ModelPlan, kpt: ModelPlan) -> str:
    precisions = {det.backend.precision, kpt.backend.precision}
    return precisions.pop() if len(precisions) == 1 else "mixed"


__all__ = ["Choice", "PrecisionChooser", "load_calibration"]
