"""One model's backend as the pipeline runs it: which backend (named, chosen
by use_hpip, or named by hpi_config) with how many threads (set by the user,
by hpi_config, or measured: runtime/tuning.py)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional

from ..models.spec import ModelSpec
from . import backend_builder
from .base import Backend, RuntimeOptions
from .hpi_config import HpiConfig
from .select import SelectedBackend
from .tuning import with_tuned_threads


@dataclass
class ModelPlan:
    spec: ModelSpec
    backend: Backend
    label: str  # the backend's name as tuning caches and logs know it
    options: RuntimeOptions  # what it was built with (the thread count in force)
    threads: Dict[str, Any] = field(default_factory=dict)  # how the thread count was decided

    @classmethod
    def tuned(
        cls, spec: ModelSpec, options: RuntimeOptions, label: str, build: Callable[[RuntimeOptions], Backend],
        tune_threads: bool, prebuilt: Optional[Dict[int, Backend]] = None,
    ) -> "ModelPlan":
        """Built with the user's threads, or with the measured best (tune_threads)."""
        if not tune_threads or options.device.kind != "cpu":
            return cls(spec, build(options), label, options, {"threads": options.cpu_threads, "decision": "set"})
        backend, info = with_tuned_threads(spec, options, label, build, prebuilt)
        return cls(spec, backend, label, dataclasses.replace(options, cpu_threads=info["threads"]), info)


def plan_backend(
    spec: ModelSpec, options: RuntimeOptions, backend: str = "paddle", *, tune_threads: bool = True, **choice: Any
) -> ModelPlan:
    """`choice`: backend_builder's keywords (use_hpip, hpi, candidates).
    `tune_threads`: measure the thread count (the user did not set one);
    `options.cpu_threads` is then the most threads tried."""
    label, build = backend_builder(spec, options.device, backend, **choice)
    hpi: Optional[HpiConfig] = choice.get("hpi")
    if hpi is not None and hpi.cpu_threads is not None:
        options = dataclasses.replace(options, cpu_threads=hpi.cpu_threads)
        tune_threads = False
    prebuilt: Dict[int, Backend] = {}
    if label == "hpip" and tune_threads and options.device.kind == "cpu":
        # Choose the backend at full threads, then tune the chosen one's threads.
        selected = build(options)
        if not isinstance(selected, SelectedBackend):
            return ModelPlan(spec, selected, selected.name, options, {"threads": options.cpu_threads, "decision": "set"})
        label, chosen, decision = selected.candidate.name, selected.candidate, selected.decision
        build = lambda o: SelectedBackend(chosen.build(spec, o), decision, chosen)  # noqa: E731
        prebuilt[options.cpu_threads] = selected
    return ModelPlan.tuned(spec, options, label, build, tune_threads, prebuilt)
