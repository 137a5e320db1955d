"""posepipe's cache of measured decisions: which backend (use_hpip), how many
threads, how many crops per keypoint call, which precision.

A decision is measured once and written to `$POSEPIPE_HOME/<kind>/` as JSON,
keyed by everything the measurement depends on: the model files, the device
and the processor (model name and ISA flags, runtime/cpu.py), the threads,
the package versions and the rules' version. A different machine sharing the
home folder, an upgraded package or an edited model gets its own measurement."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

from .cpu import cpu_info
from .device import Device
from .onnx_export import posepipe_home
from .paddle_import import import_paddle
from .timing import OthersCpu

log = logging.getLogger("posepipe")

# The packages whose versions change timings or outputs.
VERSIONED = {
    "posepipe": ("posepipe",),
    "paddle": ("paddlepaddle", "paddlepaddle-gpu"),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
    "openvino": ("openvino",),
    "nncf": ("nncf",),
    "paddle2onnx": ("paddle2onnx",),
    "tensorrt": ("tensorrt",),
}


def decision_key(parts: Mapping[str, Any], device: Device) -> str:
    """sha256 of the parts, the machine and the package versions."""
    full = {**parts, "device": str(device), "machine": machine(device), "versions": versions()}
    return hashlib.sha256(json.dumps(full, sort_keys=True, default=str).encode()).hexdigest()


def versions() -> Dict[str, Optional[str]]:
    return {name: _version(*dists) for name, dists in VERSIONED.items()}


def _version(*dists: str) -> Optional[str]:
    for dist in dists:
        try:
            return f"{dist}=={metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            continue
    return None


def machine(device: Device) -> Dict[str, Any]:
    """The processor a measurement ran on: the GPU's name on gpu:N, and always
    the CPU's model, ISA flags and usable cores."""
    out: Dict[str, Any] = {"cpu": cpu_info().key()}
    if device.kind == "gpu":
        try:
            paddle = import_paddle()
            if paddle.device.is_compiled_with_cuda():
                out["gpu"] = str(paddle.device.cuda.get_device_name(device.index))
        except Exception:  # no CUDA paddle: the provider list decides anyway
            pass
    return out


def cache_path(kind: str, name: str, key: str) -> Path:
    return posepipe_home() / kind / f"{name}-{key[:24]}.json"


def load(path: Path, key: str, version: int) -> Optional[Dict[str, Any]]:
    """The saved decision, or None when there is none for this key and rules' version."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.warning("posepipe: ignoring unreadable decision %s (%s)", path, e)
        return None
    if not isinstance(saved, dict) or saved.get("key") != key or saved.get("version") != version:
        return None
    return saved


def store_measured(
    path: Path, key: str, version: int, payload: Mapping[str, Any], witness: "OthersCpu"
) -> Optional[str]:
    """Cache a decision measured while `witness` watched the machine: the
    cache file, or None when it is not cached (other processes were busy, so
    the timings may not hold another time; or the cache is not writable)."""
    share = witness.share()
    if not witness.quiet():
        log.info(
            "posepipe: other processes used %.0f %% of the CPU while %s was measured; the decision holds for this "
            "run and is measured again next time", 100 * (share or 0.0), path.stem,
        )
        return None
    return str(path) if store(path, key, version, {**payload, "others_cpu_share": share}) else None


def store(path: Path, key: str, version: int, payload: Mapping[str, Any]) -> bool:
    """Write the decision atomically; False (with a warning) when the cache is not writable."""
    text = json.dumps(
        {"version": version, "key": key, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **payload}, indent=1
    )
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
            os.unlink(tmp)  # no writable cache: the decision still holds, it is just measured again next start
        log.warning("posepipe: cannot cache a measured decision in %s (%s); set POSEPIPE_HOME", path, e)
        return False
