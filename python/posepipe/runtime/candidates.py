"""The backends `use_hpip` chooses among, per device kind, each with the
precision its parity check is held to (runtime/parity.py)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

from ..models.spec import ModelSpec
from .base import Backend, RuntimeOptions

# Plain Paddle Inference on the CPU kernels: the parity reference.
REFERENCE = "paddle"


@dataclass(frozen=True)
class Candidate:
    name: str  # stable id: logs, metadata and the decision cache use it
    precision: str  # "fp32" | "fp16": picks the parity tolerances
    build: Callable[[ModelSpec, RuntimeOptions], Backend]


def ort(ep: str) -> Callable[[ModelSpec, RuntimeOptions], Backend]:
    def build(spec: ModelSpec, options: RuntimeOptions) -> Backend:
        from .onnxruntime import OrtBackend

        return OrtBackend(spec, options, ep=ep)

    return build


def openvino(precision: str = "fp32") -> Callable[[ModelSpec, RuntimeOptions], Backend]:
    def build(spec: ModelSpec, options: RuntimeOptions) -> Backend:
        from .openvino import OpenVinoBackend

        return OpenVinoBackend(spec, options, precision=precision)

    return build


def paddle(use_onednn: Optional[bool]) -> Callable[[ModelSpec, RuntimeOptions], Backend]:
    def build(spec: ModelSpec, options: RuntimeOptions) -> Backend:
        from .paddle import PaddleBackend

        if options.device.kind == "gpu":
            # A CPU paddle accepts enable_use_gpu() and quietly runs on the CPU.
            from .paddle_trt import require_cuda_paddle

            require_cuda_paddle(options.device)
        return PaddleBackend(spec, dataclasses.replace(options, use_onednn=use_onednn))

    return build


def paddle_trt(precision: str) -> Callable[[ModelSpec, RuntimeOptions], Backend]:
    def build(spec: ModelSpec, options: RuntimeOptions) -> Backend:
        from .paddle_trt import PaddleTrtBackend

        return PaddleTrtBackend(spec, options, precision=precision)

    return build


CANDIDATES: Dict[str, Tuple[Candidate, ...]] = {
    "cpu": (
        Candidate("openvino", "fp32", openvino("fp32")),
        Candidate("onnxruntime", "fp32", ort("cpu")),
        Candidate("paddle_onednn", "fp32", paddle(True)),
        Candidate(REFERENCE, "fp32", paddle(False)),
    ),
    "gpu": (
        Candidate("paddle_tensorrt_fp16", "fp16", paddle_trt("fp16")),
        Candidate("onnxruntime_tensorrt_fp16", "fp16", ort("tensorrt")),
        Candidate("onnxruntime_cuda", "fp32", ort("cuda")),
        Candidate("paddle_gpu", "fp32", paddle(None)),
    ),
}
