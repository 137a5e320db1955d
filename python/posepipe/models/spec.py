"""A model directory (PaddleX / PaddleDetection export) as typed, frozen data.

Two layouts are read (LAYOUTS), each a program, its weights and a yml:
* PaddleX: `inference.json` (Paddle 3 PIR program; Paddle 2.x exports:
  `inference.pdmodel`), `inference.pdiparams`, `inference.yml`;
* PaddleDetection's `tools/export_model.py`: `model.json` / `model.pdmodel`,
  `model.pdiparams`, `infer_cfg.yml`. PaddleX 3.7.2 refuses this layout; its
  yml has PaddleX's keys but no `Global.model_name`, so the caller's name for
  the model (the pipeline config's `model_name`) stands in.
The yml's `Preprocess` list says what the model wants; we read it with
PaddleX 3.7.2's semantics:

* Detector: `Resize` (target_size is [h, w]; interp is an OpenCV code 0-4),
  `NormalizeImage`, `Permute`. The image is RGB (PaddleX reads it as RGB).
* Top-down keypoint model: `TopDownEvalAffine` (trainsize is [w, h]),
  `NormalizeImage`, `Permute`.
* `PadStride` / `Pad` are accepted only where they cannot change the input
  (fixed-size resize to a multiple of the stride / to the pad size); posepipe's
  preprocessing does not pad, so anything else is refused instead of silently
  computing something different from PaddleX.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import yaml

from ..errors import ModelError
from .program import read_program

DETECTOR = "detector"
KEYPOINT = "keypoint"

# PaddleX's Resize maps these names to the OpenCV codes 0..4.
_INTERP_CODES = {"NEAREST": 0, "LINEAR": 1, "BICUBIC": 2, "AREA": 3, "LANCZOS4": 4}
# PaddleX's NormalizeImage defaults.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)

# Permute (HWC -> CHW) is what posepipe always does; it is accepted, not needed.
_KNOWN_STEPS = frozenset({"Resize", "TopDownEvalAffine", "NormalizeImage", "Permute", "PadStride", "Pad"})

@dataclass(frozen=True)
class Layout:
    """One exporter's file names; `programs` in the order PaddleX prefers them."""

    name: str
    programs: Tuple[str, ...]
    params: str
    yml: str


LAYOUTS = (
    Layout("PaddleX", ("inference.json", "inference.pdmodel"), "inference.pdiparams", "inference.yml"),
    Layout("PaddleDetection", ("model.json", "model.pdmodel"), "model.pdiparams", "infer_cfg.yml"),
)


@dataclass(frozen=True)
class Normalize:
    """`(pixel * (1/255 if is_scale else 1) - mean) / std`, per RGB channel."""

    mean: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    is_scale: bool = False


@dataclass(frozen=True)
class DetectorPreprocess:
    target_hw: Tuple[int, int]
    keep_ratio: bool
    interp: int  # OpenCV interpolation code
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    is_scale: bool
    to_rgb: bool = True


@dataclass(frozen=True)
class KeypointPreprocess:
    input_wh: Tuple[int, int]
    use_udp: bool
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    is_scale: bool


@dataclass(frozen=True)
class ModelSpec:
    model_dir: Path
    model_name: str
    arch: Optional[str]
    draw_threshold: float
    label_list: Tuple[str, ...]
    program_path: Path
    params_path: Path
    detector: Optional[DetectorPreprocess]
    keypoint: Optional[KeypointPreprocess]
    # oneDNN's conv + leaky_relu fusion segfaults on Paddle 3.3.1.
    has_leaky_relu: bool
    # TensorRT shapes from the yml's `Hpi` block: input -> [min, opt, max] shapes.
    hpi_dynamic_shapes: Optional[Dict[str, List[List[int]]]] = None
    # (h, w) of the `image` input as the program declares it; None when dynamic or not found.
    input_hw: Optional[Tuple[int, int]] = None

    @property
    def kind(self) -> str:
        return DETECTOR if self.detector is not None else KEYPOINT


def load_model_spec(model_dir, kind: Optional[str] = None, model_name: Optional[str] = None) -> ModelSpec:
    """Read and check a model directory. `kind` ("detector" / "keypoint"), when
    given, is the role the caller needs; a model of the other kind is refused.
    `model_name` names a model whose yml does not (PaddleDetection's layout);
    without it, such a model is named after its directory."""
    model_dir = Path(model_dir).expanduser()
    if not model_dir.exists():
        raise ModelError(f"{model_dir}: model directory does not exist")
    if not model_dir.is_dir():
        raise ModelError(f"{model_dir}: not a directory (give the folder that holds inference.yml)")
    layout, program = find_layout(model_dir)
    params = model_dir / layout.params
    cfg = _read_yml(model_dir / layout.yml)

    steps = _parse_steps(model_dir / layout.yml, cfg.get("Preprocess"))
    detector, keypoint = _preprocess(model_dir / layout.yml, steps)
    named = cfg["Global"].get("model_name") if isinstance(cfg.get("Global"), dict) else None
    if layout is LAYOUTS[0] and (not isinstance(named, str) or not named):
        raise ModelError(f"{model_dir}/{layout.yml}: missing Global.model_name")
    threshold = cfg.get("draw_threshold", 0.5)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise ModelError(f"{model_dir}/{layout.yml}: draw_threshold must be a number, got {threshold!r}")
    labels = cfg.get("label_list") or []
    if not isinstance(labels, list):
        raise ModelError(f"{model_dir}/{layout.yml}: label_list must be a list")
    arch = cfg.get("arch")

    facts = read_program(program)
    spec = ModelSpec(
        model_dir=model_dir,
        model_name=named if isinstance(named, str) and named else model_name or model_dir.resolve().name,
        arch=str(arch) if arch is not None else None,
        draw_threshold=float(threshold),
        label_list=tuple(str(x) for x in labels),
        program_path=program,
        params_path=params,
        detector=detector,
        keypoint=keypoint,
        has_leaky_relu="leaky_relu" in facts.ops,
        hpi_dynamic_shapes=_hpi_dynamic_shapes(cfg.get("Hpi")),
        input_hw=facts.input_hw,
    )
    _check_input_size(spec, model_dir / layout.yml)
    if kind is not None and spec.kind != kind:
        raise ModelError(
            f"{model_dir}: this is a {spec.kind} model ({spec.model_name}), but a {kind} model is needed here"
        )
    return spec


def read_model_name(model_dir) -> Optional[str]:
    """Global.model_name of the directory's yml, or None when it has none or
    cannot be read (loading the directory then says why)."""
    try:
        layout, _ = find_layout(Path(model_dir).expanduser())
        cfg = _read_yml(Path(model_dir).expanduser() / layout.yml)
    except (ModelError, OSError):
        return None
    name = cfg.get("Global", {}).get("model_name") if isinstance(cfg.get("Global"), dict) else None
    return name if isinstance(name, str) and name else None


def _check_input_size(spec: ModelSpec, yml: Path) -> None:
    """The yml's preprocessing must make images of the size the program takes;
    otherwise the model fails deep inside its graph on every image."""
    if spec.input_hw is None:
        return
    if spec.detector is not None:
        made, step, key, noun = spec.detector.target_hw, "Resize", "target_size", "images"
    else:
        made, step, key, noun = spec.keypoint.input_wh[::-1], "TopDownEvalAffine", "trainsize", "crops"
    if tuple(made) != spec.input_hw:
        raise ModelError(
            f"{yml}: {step} makes {made[0]}x{made[1]} (h x w) {noun}, but the model's program "
            f"({spec.program_path.name}) takes {spec.input_hw[0]}x{spec.input_hw[1]}; make {key} match the program"
        )


def find_layout(model_dir: Path) -> Tuple[Layout, Path]:
    """The directory's layout and program file, or a ModelError that says what
    the directory holds instead and what to do about it."""
    for layout in LAYOUTS:
        program = next((model_dir / n for n in layout.programs if (model_dir / n).is_file()), None)
        if program is not None and (model_dir / layout.params).is_file() and (model_dir / layout.yml).is_file():
            return layout, program
    raise ModelError(f"{model_dir}: {_what_is_wrong(model_dir)}")


def _what_is_wrong(model_dir: Path) -> str:
    names = {p.name for p in model_dir.iterdir() if p.is_file()}
    expected = "; ".join(
        f"{layout.name}: {' or '.join(layout.programs)} + {layout.params} + {layout.yml}" for layout in LAYOUTS
    )
    # The closest layout: the one with the most of its files present.
    def present(layout: Layout) -> int:
        return sum(n in names for n in (*layout.programs, layout.params, layout.yml))

    if names & {"__model__", "__params__"}:
        return "a Paddle 1.x export (__model__/__params__), which Paddle 3 cannot run; export the model again with PaddleDetection 2.x or PaddleX 3"
    best = max(LAYOUTS, key=present)
    if present(best):
        missing = [
            what
            for what, ok in (
                (" or ".join(best.programs) + " (the model program)", any(n in names for n in best.programs)),
                (f"{best.params} (the model weights)", best.params in names),
                (f"{best.yml} (the preprocessing settings)", best.yml in names),
            )
            if not ok
        ]
        if "model.yml" in names and best.yml not in names:
            return (
                "model.yml is PaddleX 2.x's own export format, which posepipe (like PaddleX 3) does not read; "
                "export the model again with PaddleX 3 or PaddleDetection"
            )
        found = ", ".join(sorted(n for n in names if n in (*best.programs, best.params, best.yml)))
        verb = "is" if len(missing) == 1 else "are"
        return f"{best.name} export files ({found}), but {' and '.join(missing)} {verb} missing (expected {expected})"
    inside = sorted(
        p.name for p in model_dir.iterdir() if p.is_dir() and any((p / layout.yml).is_file() for layout in LAYOUTS)
    )
    if inside:
        return f"no model files here, but the subfolder {inside[0]!r} holds a model export: set model_dir to {model_dir / inside[0]}"
    weights = sorted(n for n in names if n.endswith((".pdparams", ".pdopt", ".pdema")))
    if weights:
        return (
            f"training weights ({', '.join(weights[:3])}), not an exported inference model. Export it first "
            "(PaddleX: python main.py -c <model>.yaml -o Global.mode=export -o Export.weight_path=...; "
            "PaddleDetection: tools/export_model.py) and set model_dir to the export "
            "(PaddleX training writes one to output/best_model/inference)"
        )
    if any(n.endswith(".onnx") for n in names):
        return (
            f"an ONNX file without the Paddle export it came from (expected {expected}); "
            "posepipe reads the preprocessing from the export's yml and converts to ONNX itself (use_hpip)"
        )
    return f"no inference.json or inference.pdmodel (the model program) in this directory (expected {expected})"


def _read_yml(path: Path) -> Dict[str, Any]:
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ModelError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(cfg, dict):
        raise ModelError(f"{path}: expected a mapping at the top level")
    return cfg


def _parse_steps(yml: Path, raw: Any) -> Dict[str, Dict[str, Any]]:
    """Preprocess list -> {op type: its arguments}, refusing unknown ops."""
    where = str(yml)
    if not isinstance(raw, list) or not raw:
        raise ModelError(f"{where}: missing the Preprocess list")
    steps: Dict[str, Dict[str, Any]] = {}
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            raise ModelError(f"{where}: each Preprocess step must be a mapping with a 'type', got {item!r}")
        op = item["type"]
        if op not in _KNOWN_STEPS:
            raise ModelError(
                f"{where}: unsupported Preprocess step {op!r} (posepipe knows {', '.join(sorted(_KNOWN_STEPS))})"
            )
        if op in steps:
            raise ModelError(f"{where}: Preprocess step {op!r} appears twice")
        steps[op] = {k: v for k, v in item.items() if k != "type"}
    return steps


def _preprocess(yml: Path, steps: Dict[str, Dict[str, Any]]):
    where = str(yml)
    is_det, is_kpt = "Resize" in steps, "TopDownEvalAffine" in steps
    if is_det == is_kpt:
        raise ModelError(
            f"{where}: Preprocess has {'both Resize and' if is_det else 'neither Resize nor'} TopDownEvalAffine; "
            "posepipe needs a person detector (Resize) or a top-down keypoint model (TopDownEvalAffine)"
        )
    try:
        # Without NormalizeImage, PaddleX feeds the raw 0-255 pixels.
        norm = _call(_normalize, steps, "NormalizeImage") if "NormalizeImage" in steps else Normalize()
        if is_kpt:
            input_wh, use_udp = _call(_topdown_affine, steps, "TopDownEvalAffine")
            return None, KeypointPreprocess(input_wh, use_udp, norm.mean, norm.std, norm.is_scale)
        target_hw, keep_ratio, interp = _call(_resize, steps, "Resize")
        _check_padding(steps, target_hw, keep_ratio)
        return DetectorPreprocess(target_hw, keep_ratio, interp, norm.mean, norm.std, norm.is_scale), None
    except ValueError as e:
        raise ModelError(f"{where}: {e}") from None


def _call(fn: Callable, steps: Dict[str, Dict[str, Any]], op: str):
    """Run a step's reader on its yml arguments, refusing arguments PaddleX's
    builder for that step does not take either."""
    try:
        inspect.signature(fn).bind(**steps[op])
    except TypeError:
        raise ValueError(f"{op} has unsupported arguments {sorted(steps[op])}") from None
    return fn(**steps[op])


def _normalize(mean=_IMAGENET_MEAN, std=_IMAGENET_STD, is_scale=True, norm_type=None) -> Normalize:
    # PaddleX: a norm_type other than mean_std/none keeps only the 1/255 scaling.
    if norm_type not in (None, "none", "mean_std"):
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    mean, std = _triple(mean, "NormalizeImage.mean"), _triple(std, "NormalizeImage.std")
    if any(s == 0 for s in std):
        raise ValueError(f"NormalizeImage.std must not contain 0, got {list(std)}")
    return Normalize(mean, std, bool(is_scale))


def _resize(target_size=None, keep_ratio=False, interp=2) -> Tuple[Tuple[int, int], bool, int]:
    if isinstance(target_size, int) and not isinstance(target_size, bool):
        target_size = [target_size, target_size]
    target_hw = _int_pair(target_size, "Resize.target_size")
    if isinstance(interp, str) and interp.upper() in _INTERP_CODES:
        interp = _INTERP_CODES[interp.upper()]
    if isinstance(interp, bool) or interp not in _INTERP_CODES.values():
        raise ValueError(f"Resize.interp must be 0-4 or one of {sorted(_INTERP_CODES)}, got {interp!r}")
    return target_hw, bool(keep_ratio), int(interp)


def _topdown_affine(trainsize=None, use_udp=False) -> Tuple[Tuple[int, int], bool]:
    if not isinstance(use_udp, bool):
        raise ValueError(f"TopDownEvalAffine.use_udp must be true or false, got {use_udp!r}")
    return _int_pair(trainsize, "TopDownEvalAffine.trainsize"), use_udp


def _check_padding(steps: Dict[str, Dict[str, Any]], target_hw: Tuple[int, int], keep_ratio: bool) -> None:
    h, w = target_hw
    if "PadStride" in steps:
        stride = steps["PadStride"].get("stride", 32)
        if keep_ratio or not isinstance(stride, int) or stride <= 0 or h % stride or w % stride:
            raise ValueError(
                f"PadStride (stride {stride!r}) would pad the resized image; posepipe supports it only "
                "after a fixed-size Resize to a multiple of the stride"
            )
    if "Pad" in steps:
        size = steps["Pad"].get("size") or [3, 640, 640]
        if keep_ratio or list(size)[-2:] != [h, w]:
            raise ValueError(f"Pad to {size!r} would pad the resized image; posepipe supports it only when it is a no-op")


def _int_pair(value: Any, what: str) -> Tuple[int, int]:
    if (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        return int(value[0]), int(value[1])
    raise ValueError(f"{what} must be two positive integers, got {value!r}")


def _triple(value: Any, what: str) -> Tuple[float, float, float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value] * 3
    if (
        isinstance(value, (list, tuple))
        and len(value) == 3
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        return float(value[0]), float(value[1]), float(value[2])
    raise ValueError(f"{what} must be three numbers, got {value!r}")


def _hpi_dynamic_shapes(hpi: Any) -> Optional[Dict[str, List[List[int]]]]:
    """Hpi.backend_configs.{paddle_infer.trt_dynamic_shapes | tensorrt.dynamic_shapes}.
    Optional metadata: a malformed block is ignored rather than failing the load."""
    try:
        configs = hpi["backend_configs"]
        shapes = (configs.get("paddle_infer") or {}).get("trt_dynamic_shapes") or (
            configs.get("tensorrt") or {}
        ).get("dynamic_shapes")
        out = {str(name): [[int(d) for d in shape] for shape in triple] for name, triple in shapes.items()}
    except (TypeError, KeyError, AttributeError, ValueError):
        return None
    return out if all(len(v) == 3 for v in out.values()) else None


