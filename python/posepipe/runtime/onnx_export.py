"""The ONNX file the ONNX Runtime backend runs: the one shipped next to the
Paddle files (`inference.onnx`), else one paddle2onnx makes once and caches.

A converted file goes into posepipe's cache, `$POSEPIPE_HOME/onnx/`
(default `~/.cache/posepipe/onnx/`), never into the model's folder: a model
folder may be shared, read-only or under version control, and a file appearing
there surprises its owner. `<key>` hashes the program and the weights, so an
edited model never reuses a stale conversion, and copies of one model share
one conversion. Files appear with one rename: a reader never sees half a file,
and two processes converting at once both end with a good one.

The conversion runs paddle2onnx's Python API in a child process:
* `paddle2onnx.export(..., save_file=None)` returns the model bytes and skips
  the CLI's Polygraphy constant folding, which pip-installs
  onnx_graphsurgeon at runtime when it is missing (ONNX Runtime folds
  constants itself at session creation);
* its C++ core prints to the process's stdout; in a child we capture that
  (and show it only on failure) instead of spraying it over the caller's output;
* a converter crash cannot take a server down with it.
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from ..errors import ModelError
from ..models.official import posepipe_cache_dir
from ..models.spec import ModelSpec
from .base import BackendUnavailable

log = logging.getLogger("posepipe")

SHIPPED_NAME = "inference.onnx"
# The opset the shipped real-model files use; ONNX Runtime >= 1.13 and TensorRT 8.6+ run it.
OPSET = 17
CONVERT_TIMEOUT_S = 600.0
# `export(model, params, save_file=None, ...)` returns the serialized model.
_CONVERT_SCRIPT = (
    "import sys, paddle2onnx\n"
    "data = paddle2onnx.export(sys.argv[1], sys.argv[2], None, opset_version=int(sys.argv[4]),\n"
    "                          enable_onnx_checker=True, enable_optimize=True)\n"
    "if not data:\n"
    "    sys.exit('paddle2onnx returned an empty model')\n"
    "with open(sys.argv[3], 'wb') as f:\n"
    "    f.write(data)\n"
)
_HASH_CHUNK = 1 << 20
_NMS_OP = re.compile(rb"multiclass_nms")


@dataclass(frozen=True)
class OnnxModel:
    path: Path
    source: str  # "shipped" | "converted" (just now) | "cached" (converted earlier)


def posepipe_home() -> Path:
    """posepipe's cache root: `$POSEPIPE_HOME`, default `~/.cache/posepipe`
    (models/official.py keeps downloaded models in its `models/` folder)."""
    return posepipe_cache_dir().parent


def file_digest(*paths: Path) -> str:
    """sha256 over the files' bytes, memoised per (path, size, mtime) so that a
    process hashing the same 30 MB of weights twice pays once."""
    h = hashlib.sha256()
    for path in paths:
        h.update(_one_file_digest(Path(path)).encode())
    return h.hexdigest()


_DIGESTS: Dict[Tuple[str, int, int], str] = {}


def _one_file_digest(path: Path) -> str:
    st = path.stat()
    memo_key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if memo_key not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(_HASH_CHUNK), b""):
                h.update(chunk)
        _DIGESTS[memo_key] = h.hexdigest()
    return _DIGESTS[memo_key]


def model_key(spec: ModelSpec) -> str:
    """Content key of the Paddle model (program + weights)."""
    return file_digest(spec.program_path, spec.params_path)


def nms_exported_for_one_image(spec: ModelSpec) -> bool:
    """paddle2onnx exports `multiclass_nms3` for batch 1 only: a model with
    NMS in its graph runs one image per call on an ONNX backend."""
    return bool(_NMS_OP.search(spec.program_path.read_bytes()))


def onnx_for(spec: ModelSpec) -> OnnxModel:
    """The model as ONNX, converting it on first use."""
    shipped = spec.model_dir / SHIPPED_NAME
    if shipped.is_file():
        return OnnxModel(shipped, "shipped")
    target = conversion_path(spec)
    if target.is_file() and target.stat().st_size > 0:
        return OnnxModel(target, "cached")
    return OnnxModel(_convert_into(spec, target), "converted")


def conversion_path(spec: ModelSpec) -> Path:
    """Where this model's conversion is cached."""
    return posepipe_home() / "onnx" / f"{spec.model_name}-{model_key(spec)[:16]}.onnx"


def _convert_into(spec: ModelSpec, final: Path) -> Path:
    if importlib.util.find_spec("paddle2onnx") is None:
        raise BackendUnavailable(
            f"{spec.model_dir}: no {SHIPPED_NAME} next to the model, and converting one needs paddle2onnx "
            "(pip install paddle2onnx)"
        )
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{final.stem}-", suffix=".tmp", dir=final.parent)
    except OSError as e:
        raise ModelError(
            f"{spec.model_dir}: cannot write the ONNX conversion into {final.parent} ({e.strerror or e}); "
            "set POSEPIPE_HOME to a writable folder"
        ) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        log.info("posepipe: converting %s to ONNX (paddle2onnx, opset %d) -> %s", spec.model_dir, OPSET, final)
        _run_paddle2onnx(spec, tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; the file is as public as the model
        os.replace(tmp, final)  # atomic: readers see no file or a whole one
    finally:
        if tmp.exists():
            tmp.unlink()
    return final


def _run_paddle2onnx(spec: ModelSpec, out: Path) -> None:
    cmd = [sys.executable, "-c", _CONVERT_SCRIPT, str(spec.program_path), str(spec.params_path), str(out), str(OPSET)]
    env = dict(os.environ, GLOG_minloglevel="2")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CONVERT_TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired:
        raise ModelError(f"{spec.model_dir}: paddle2onnx did not finish in {CONVERT_TIMEOUT_S:.0f} s") from None
    if proc.returncode != 0 or out.stat().st_size == 0:
        tail = _tail(proc.stdout + proc.stderr)
        raise ModelError(f"{spec.model_dir}: paddle2onnx could not convert this model (exit {proc.returncode}): {tail}")


def _tail(text: str, lines: int = 8) -> str:
    kept = [ln for ln in text.strip().splitlines() if ln.strip()][-lines:]
    return " | ".join(kept) or "no output"


__all__ = [
    "OPSET",
    "OnnxModel",
    "conversion_path",
    "file_digest",
    "model_key",
    "nms_exported_for_one_image",
    "onnx_for",
    "posepipe_home",
]


def _main(argv: Optional[List[str]] = None) -> int:
    """`python -m posepipe.runtime.onnx_export MODEL_DIR...`: convert ahead of time."""
    import argparse

    from ..models.spec import load_model_spec

    parser = argparse.ArgumentParser(description=_main.__doc__)
    parser.add_argument("model_dirs", nargs="+")
    args = parser.parse_args(argv)
    for d in args.model_dirs:
        found = onnx_for(load_model_spec(d))
        print(f"{d}: {found.path} ({found.source})")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
