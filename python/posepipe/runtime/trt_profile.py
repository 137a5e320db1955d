"""TensorRT optimisation profiles for the batch axis, shared by the TensorRT
backends (ONNX Runtime's TensorRT provider, Paddle Inference + TensorRT)."""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence, Tuple

from ..batching import MAX_KEYPOINT_BATCH
from ..models.spec import ModelSpec

# The engine covers 1..MAX_KEYPOINT_BATCH persons per keypoint call, tuned for
# a handful; the keypoint batch size is then measured within it (runtime/tuning.py).
TRT_MIN_BATCH, TRT_OPT_BATCH = 1, 8


def trt_batch_profile(
    spec: ModelSpec, declared: Mapping[str, Sequence[Any]], one_image: bool = False
) -> Dict[str, Tuple[List[int], List[int], List[int]]]:
    """TensorRT (min, opt, max) shapes for the inputs with a dynamic batch axis:
    the yml's `Hpi` dynamic shapes when the model has them, with the batch axis
    of keypoint models widened to posepipe's 1..MAX_KEYPOINT_BATCH
    (opt TRT_OPT_BATCH; PaddleX's yml says 1..8 because PaddleX runs one person per
    call); otherwise the declared shape with the batch filled in. `one_image`
    pins the batch to 1 (NMS exported for batch 1). Empty when a non-batch
    axis is dynamic too: TensorRT then builds per shape."""
    out: Dict[str, Tuple[List[int], List[int], List[int]]] = {}
    hpi = spec.hpi_dynamic_shapes or {}
    for name, dims in declared.items():
        if not dims or (isinstance(dims[0], int) and dims[0] > 0):
            continue  # static batch: no profile needed (dynamic: a name in ONNX, -1 in Paddle)
        if name in hpi:
            yml_min, yml_opt, yml_max = ([int(d) for d in s] for s in hpi[name])
        elif all(isinstance(d, int) and d > 0 for d in dims[1:]):
            rest = [int(d) for d in dims[1:]]
            yml_min, yml_opt, yml_max = [1] + rest, [1] + rest, [8] + rest
        else:
            return {}
        if one_image:
            batches = (1, 1, 1)
        elif spec.kind == "keypoint":
            batches = (TRT_MIN_BATCH, TRT_OPT_BATCH, max(MAX_KEYPOINT_BATCH, yml_max[0]))
        else:
            batches = (yml_min[0], yml_opt[0], yml_max[0])
        out[name] = tuple([b] + yml_opt[1:] for b in batches)  # type: ignore[assignment]
    return out
