"""Which ops a Paddle inference program holds, and the image size it
declares, read without Paddle.

Both program formats are read for what they are:
* PIR (`*.json`, Paddle 3): op dicts carry their name under "#" as
  "<dialect>.<op>" ("1.nearest_interp"), in blocks nested inside regions.
* Legacy (`*.pdmodel`, Paddle 2.x): a `ProgramDesc` protobuf. Its blocks
  (field 1) hold ops (BlockDesc field 4) whose type is OpDesc field 3. The
  file also has an `op_version_map` naming ops the program need not use (a
  Paddle 2.6 export lists `leaky_relu` there whatever the network), so a byte
  search over it would find ops that are not there.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, FrozenSet, Iterator, List, Optional, Set, Tuple

from ..errors import ModelError

# ProgramDesc.blocks, BlockDesc.ops, OpDesc.type (paddle/fluid/framework/framework.proto).
_PROGRAM_BLOCKS, _BLOCK_OPS, _OP_TYPE = 1, 4, 3
# BlockDesc.vars, VarDesc.name / .type, VarType.lod_tensor, LoDTensorDesc.tensor, TensorDesc.dims.
_BLOCK_VARS, _VAR_NAME, _VAR_TYPE, _TYPE_LOD_TENSOR, _LOD_TENSOR, _TENSOR_DIMS = 3, 1, 2, 3, 1, 2
_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5


@dataclass(frozen=True)
class ProgramFacts:
    ops: FrozenSet[str]  # op type names, e.g. {"conv2d", "nearest_interp_v2", ...}
    # (h, w) of the `image` input ([N, C, H, W]) when both are fixed; None when
    # dynamic or not found (then nothing is checked, and the backend reports
    # what it meets).
    input_hw: Optional[Tuple[int, int]]


def read_program(path: Path) -> ProgramFacts:
    """What the program at `path` (`.json` PIR or `.pdmodel` legacy) holds,
    from one read and one parse; ModelError if the file is not a program of
    its format."""
    data = path.read_bytes()
    if path.suffix == ".json":
        try:
            program = json.loads(data)["program"]
        except (ValueError, KeyError, TypeError):
            raise ModelError(f"{path}: not a Paddle PIR program (expected JSON with a 'program' object)") from None
        ops = frozenset(op["#"].split(".", 1)[-1] for op in _pir_ops(program))
        dims = _guarded(lambda: _pir_input_dims(program))
    else:
        ops = _legacy_op_types(data, path)
        dims = _guarded(lambda: _legacy_input_dims(data))
    if dims is None or len(dims) != 4 or dims[2] <= 0 or dims[3] <= 0:
        return ProgramFacts(ops, None)
    return ProgramFacts(ops, (int(dims[2]), int(dims[3])))


def _guarded(read_dims: Callable[[], Optional[List[int]]]) -> Optional[List[int]]:
    try:
        return read_dims()
    except (ValueError, KeyError, TypeError, StopIteration):
        return None


def _pir_input_dims(program: Any) -> Optional[List[int]]:
    """The shape attribute of the `data` op named "image"."""
    for op in _pir_ops(program):
        if op["#"].endswith(".data"):
            attrs = {a.get("N"): a.get("AT", {}).get("D") for a in op.get("A", ()) if isinstance(a, dict)}
            if attrs.get("name") == "image":
                return list(attrs["shape"])
    return None


def _legacy_input_dims(data: bytes) -> Optional[List[int]]:
    """The dims of the `image` variable of the first block."""
    block = next(v for f, v in _fields(data) if f == _PROGRAM_BLOCKS)
    for field, var in _fields(block):
        if field != _BLOCK_VARS:
            continue
        var_fields = list(_fields(var))
        if (_VAR_NAME, b"image") not in var_fields:
            continue
        var_type = next(v for f, v in var_fields if f == _VAR_TYPE)
        lod_tensor = next(v for f, v in _fields(var_type) if f == _TYPE_LOD_TENSOR)
        tensor = next(v for f, v in _fields(lod_tensor) if f == _LOD_TENSOR)
        dims = [v for f, v in _fields(tensor) if f == _TENSOR_DIMS]  # int64 varints: -1 is 2^64 - 1
        return [d - (1 << 64) if d >= 1 << 63 else d for d in dims]
    return None


def _pir_ops(node: Any) -> Iterator[dict]:
    """Every op dict of a PIR program, in the blocks nested inside its regions."""
    if isinstance(node, dict):
        for op in node.get("ops", ()) if isinstance(node.get("ops"), list) else ():
            if isinstance(op, dict) and isinstance(op.get("#"), str):
                yield op
        for value in node.values():
            if isinstance(value, (dict, list)):
                yield from _pir_ops(value)
    elif isinstance(node, list):
        for value in node:
            if isinstance(value, (dict, list)):
                yield from _pir_ops(value)


def _legacy_op_types(data: bytes, path: Path) -> FrozenSet[str]:
    found: Set[str] = set()
    try:
        for field, block in _fields(data):
            if field != _PROGRAM_BLOCKS or not isinstance(block, bytes):
                continue
            for block_field, op in _fields(block):
                if block_field != _BLOCK_OPS or not isinstance(op, bytes):
                    continue
                for op_field, value in _fields(op):
                    if op_field == _OP_TYPE and isinstance(value, bytes):
                        found.add(value.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise ModelError(f"{path}: not a Paddle program (the .pdmodel protobuf cannot be parsed)") from None
    if not found:
        raise ModelError(f"{path}: not a Paddle program (no ops found in the .pdmodel file)")
    return frozenset(found)


def _fields(buf: bytes) -> Iterator[Tuple[int, Any]]:
    """(field number, value) of one protobuf message: ints for varints and
    fixed-width fields, bytes for length-delimited ones. ValueError if malformed."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise ValueError("field number 0")
        if wire == _VARINT:
            value, pos = _varint(buf, pos)
        elif wire == _BYTES:
            size, pos = _varint(buf, pos)
            if pos + size > end:
                raise ValueError("length past the end")
            value, pos = buf[pos : pos + size], pos + size
        elif wire in (_FIXED64, _FIXED32):
            width = 8 if wire == _FIXED64 else 4
            if pos + width > end:
                raise ValueError("fixed field past the end")
            value, pos = int.from_bytes(buf[pos : pos + width], "little"), pos + width
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield field, value


def _varint(buf: bytes, pos: int) -> Tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
