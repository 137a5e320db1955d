"""Device strings, in PaddleX's forms: `cpu`, `gpu`, `gpu:1`, `npu:0`, ...

A device is checked against the installed paddlepaddle when it is parsed, so a
wrong one fails at start-up with a sentence, not deep inside Paddle."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

from ..errors import DeviceError
from .paddle_import import import_paddle

# PaddleX 3.7.2's device types. gpu/dcu use Paddle's CUDA/ROCm build, xpu its
# XPU build, the rest are custom-device plugins (paddle-custom-npu, ...).
DEVICE_KINDS = ("cpu", "gpu", "xpu", "npu", "mlu", "gcu", "dcu", "iluvatar_gpu", "metax_gpu")
_FORMS = "cpu, gpu, gpu:N, or npu/xpu/mlu/gcu/dcu/iluvatar_gpu/metax_gpu with an optional :N"


@dataclass(frozen=True)
class Device:
    kind: str = "cpu"
    index: int = 0

    def __str__(self) -> str:
        return "cpu" if self.kind == "cpu" else f"{self.kind}:{self.index}"


def parse_device(text: Union[str, Device, None]) -> Device:
    """`None` picks what PaddleX picks: gpu:0 when Paddle is a CUDA build and
    sees a GPU, else cpu."""
    if isinstance(text, Device):
        return _check_available(text)
    if text is None:
        return default_device()
    if not isinstance(text, str):
        raise DeviceError(f"device must be a string such as 'cpu' or 'gpu:0', got {text!r}")
    kind, sep, index_text = text.strip().lower().partition(":")
    if kind not in DEVICE_KINDS:
        raise DeviceError(f"unknown device {text!r}; accepted forms: {_FORMS}")
    if not sep:
        return _check_available(Device(kind, 0))
    if kind == "cpu":
        raise DeviceError(f"device {text!r}: cpu takes no index; use 'cpu'")
    if "," in index_text:
        raise DeviceError(f"device {text!r}: posepipe runs on one device; pick one, e.g. '{kind}:0'")
    if not index_text.isdigit():
        raise DeviceError(f"device {text!r}: the index must be a non-negative integer; accepted forms: {_FORMS}")
    return _check_available(Device(kind, int(index_text)))


def default_device() -> Device:
    paddle = _paddle()
    if paddle is not None and paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0:
        return Device("gpu", 0)
    return Device("cpu", 0)


def _check_available(device: Device) -> Device:
    if device.kind == "cpu":
        return device
    paddle = _paddle()
    if paddle is None:
        raise DeviceError(
            f"device {device}: paddlepaddle is not installed; install the build for this device "
            "(e.g. pip install paddlepaddle-gpu for NVIDIA GPUs)"
        )
    if device.kind in ("gpu", "dcu"):
        built = paddle.device.is_compiled_with_cuda() if device.kind == "gpu" else paddle.device.is_compiled_with_rocm()
        if not built:
            what = "CUDA" if device.kind == "gpu" else "ROCm"
            raise DeviceError(
                f"device {device}: the installed paddlepaddle {paddle.__version__} is not a {what} build; "
                f"install paddlepaddle-gpu (or use device='cpu')"
            )
        count = paddle.device.cuda.device_count()
    elif device.kind == "xpu":
        if not paddle.device.is_compiled_with_xpu():
            raise DeviceError(f"device {device}: the installed paddlepaddle is not an XPU build; install paddlepaddle-xpu")
        count = paddle.device.xpu.device_count()
    else:
        plugins = paddle.device.get_all_custom_device_type() or []
        if device.kind not in plugins:
            raise DeviceError(
                f"device {device}: no Paddle custom-device plugin for {device.kind!r} is installed "
                f"(installed: {', '.join(plugins) or 'none'}); install the paddle-custom-{device.kind} package"
            )
        count = sum(1 for d in paddle.device.get_available_custom_device() if d.split(":")[0] == device.kind)
    if device.index >= count:
        raise DeviceError(f"device {device}: only {count} {device.kind} device(s) visible")
    return device


def _paddle() -> Optional[object]:
    """paddle, or None when it is not installed (a CPU-only run may use another backend)."""
    try:
        return import_paddle()
    except ImportError:
        return None
