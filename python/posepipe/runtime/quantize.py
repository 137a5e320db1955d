"""int8 models for the OpenVINO backend: NNCF's post-training quantization
of the model's ONNX on inputs made from the user's calibration images (the
detector's preprocessed images; the keypoint model's crops of the persons
the fp32 pipeline finds on them).

A quantized model is written once to `$POSEPIPE_HOME/int8/` as an OpenVINO
IR pair (.xml + .bin), keyed by the model's files and the calibration inputs,
and reused by later starts. NNCF runs in a child process, as paddle2onnx
does in runtime/onnx_export.py: its progress bars and log lines stay out of
the caller's output (shown only on failure), its imports out of the caller's
memory, and a crash cannot take a server down."""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List, Mapping

import numpy as np

from ..errors import ModelError
from ..models.spec import ModelSpec
from .base import BackendUnavailable
from .onnx_export import model_key, onnx_for, posepipe_home

log = logging.getLogger("posepipe")

INSTALL_HINT = "int8 needs NNCF and OpenVINO: pip install nncf openvino, or pip install 'posepipe[openvino]'"
QUANTIZE_TIMEOUT_S = 1200.0
MAX_SAMPLES = 300  # NNCF's default subset size
# argv: onnx path, samples .npz (one array per input name and sample), output .xml
_QUANTIZE_SCRIPT = """
import logging, sys
import numpy as np
import nncf, openvino as ov
nncf.set_log_level(logging.ERROR)
model = ov.Core().read_model(sys.argv[1])
data = np.load(sys.argv[2])
names = sorted({k.rsplit("/", 1)[0] for k in data.files})
count = len([k for k in data.files if k.startswith(names[0] + "/")])
samples = [{n: data[f"{n}/{i}"] for n in names} for i in range(count)]
quantized = nncf.quantize(model, nncf.Dataset(samples), subset_size=len(samples))
ov.save_model(quantized, sys.argv[3])
"""


def calibration_digest(samples: List[Mapping[str, np.ndarray]]) -> str:
    h = hashlib.sha256()
    for sample in samples:
        for name in sorted(sample):
            arr = np.ascontiguousarray(sample[name])
            h.update(f"{name}:{arr.dtype}:{arr.shape}".encode())
            h.update(arr.tobytes())
    return h.hexdigest()


def int8_model(spec: ModelSpec, samples: List[Mapping[str, np.ndarray]]) -> Path:
    """The model quantized to int8 on these calibration inputs (quantizing on first use)."""
    if importlib.util.find_spec("nncf") is None or importlib.util.find_spec("openvino") is None:
        raise BackendUnavailable(INSTALL_HINT)
    if not samples:
        raise ModelError(f"{spec.model_dir}: no calibration inputs to quantize on")
    samples = samples[:MAX_SAMPLES]
    final = posepipe_home() / "int8" / f"{spec.model_name}-{model_key(spec)[:16]}-{calibration_digest(samples)[:16]}.xml"
    if final.is_file() and final.with_suffix(".bin").is_file():
        return final
    onnx = onnx_for(spec)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{final.stem}-", dir=final.parent))
    except OSError as e:
        raise ModelError(
            f"{spec.model_dir}: cannot write the int8 model into {final.parent} ({e.strerror or e}); "
            "set POSEPIPE_HOME to a writable folder"
        ) from None
    try:
        data = work / "samples.npz"
        np.savez(data, **{f"{name}/{i}": arr for i, s in enumerate(samples) for name, arr in s.items()})
        out = work / final.name
        log.info("posepipe: quantizing %s to int8 (NNCF, %d calibration inputs) -> %s", spec.model_dir, len(samples), final)
        _run_nncf(spec, onnx.path, data, out)
        # The .bin first: a reader that finds the .xml finds its weights.
        os.replace(out.with_suffix(".bin"), final.with_suffix(".bin"))
        os.replace(out, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


def _run_nncf(spec: ModelSpec, onnx_path: Path, data: Path, out: Path) -> None:
    cmd = [sys.executable, "-c", _QUANTIZE_SCRIPT, str(onnx_path), str(data), str(out)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=QUANTIZE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ModelError(f"{spec.model_dir}: NNCF did not finish quantizing in {QUANTIZE_TIMEOUT_S:.0f} s") from None
    if proc.returncode != 0 or not out.is_file():
        lines = [ln for ln in (proc.stdout + proc.stderr).strip().splitlines() if ln.strip()][-8:]
        raise ModelError(f"{spec.model_dir}: NNCF could not quantize this model (exit {proc.returncode}): {' | '.join(lines) or 'no output'}")
