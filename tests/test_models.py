"""models/spec.py: every shared model directory parses; broken ones fail with
a ModelError that names the directory and the problem."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from posepipe.errors import ModelError
from posepipe.models.spec import DETECTOR, KEYPOINT, DetectorPreprocess, KeypointPreprocess, load_model_spec

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

# dir -> (kind, model_name, input size)
SHARED_MODELS = {
    "official_arch/PP-YOLOE-S_human": (DETECTOR, "PP-YOLOE-S_human", (640, 640)),
    "official_arch/PP-YOLOE-S_human_noNMS": (DETECTOR, "PP-YOLOE-S_human", (640, 640)),
    "official_arch/PP-TinyPose_128x96": (KEYPOINT, "PP-TinyPose_128x96", (96, 128)),
    "official_arch/PP-TinyPose_256x192": (KEYPOINT, "PP-TinyPose_256x192", (192, 256)),
    "real/person_detector_nanodet": (DETECTOR, "PP-YOLOE-S_human", (416, 416)),
    "real/keypoint_movenet_thunder": (KEYPOINT, "PP-TinyPose_256x192", (256, 256)),
}


def test_every_listed_model_dir_is_in_shared(shared_dir):
    # A subset, not equality: ../shared may gain model folders without breaking the suite.
    found = {str(p.parent.relative_to(shared_dir / "models")) for p in (shared_dir / "models").glob("*/*/inference.yml")}
    assert set(SHARED_MODELS) <= found


@pytest.mark.parametrize("rel", sorted(SHARED_MODELS))
def test_shared_models_parse(shared_dir, rel):
    kind, name, size = SHARED_MODELS[rel]
    spec = load_model_spec(shared_dir / "models" / rel)
    assert spec.kind == kind
    assert spec.model_name == name
    assert spec.draw_threshold == 0.5
    assert spec.program_path.name == "inference.json"
    assert spec.params_path.name == "inference.pdiparams"
    assert spec.has_leaky_relu is False
    assert spec.input_hw == (size if kind == DETECTOR else size[::-1])  # the program's declared (h, w)
    if kind == DETECTOR:
        assert spec.keypoint is None
        assert spec.label_list == ("pedestrian",)
        assert spec.detector == DetectorPreprocess(size, False, 2, *IMAGENET, True, True)
    else:
        assert spec.detector is None
        mean_std = ((0.5,) * 3, (0.5,) * 3) if "movenet" in rel else IMAGENET
        assert spec.keypoint == KeypointPreprocess(size, False, *mean_std, True)


def test_official_arch_hpi_shapes(shared_dir):
    det = load_model_spec(shared_dir / "models/official_arch/PP-YOLOE-S_human")
    assert det.hpi_dynamic_shapes == {
        "image": [[1, 3, 640, 640], [1, 3, 640, 640], [8, 3, 640, 640]],
        "scale_factor": [[1, 2], [1, 2], [8, 2]],
    }
    assert load_model_spec(shared_dir / "models/real/person_detector_nanodet").hpi_dynamic_shapes is None


def test_wrong_kind_is_refused(shared_dir):
    kpt = shared_dir / "models/official_arch/PP-TinyPose_128x96"
    with pytest.raises(ModelError, match="keypoint model .* but a detector model is needed"):
        load_model_spec(kpt, kind=DETECTOR)
    assert load_model_spec(kpt, kind=KEYPOINT).kind == KEYPOINT


# --- broken directories, built in tmp_path ----------------------------------


def _pir_program(*ops: str) -> bytes:
    """A PIR program file holding these ops (the nesting Paddle 3 writes)."""
    block = {"#": "block_0", "args": [], "ops": [{"#": f"1.{op}"} for op in ops]}
    return json.dumps({"base_code": {"magic": "pir", "version": 1}, "program": {"regions": [{"#": "region_0", "blocks": [block]}]}}).encode()


def _pb(field: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    def varint(n: int) -> bytes:
        out = b""
        while n >= 0x80:
            out, n = out + bytes([n & 0x7F | 0x80]), n >> 7
        return out + bytes([n])
    return varint(field << 3 | 2) + varint(len(payload)) + payload


def _legacy_program(*ops: str) -> bytes:
    """A ProgramDesc with one block (field 1) of these ops (BlockDesc.ops 4, OpDesc.type 3)."""
    return _pb(1, b"".join(_pb(4, _pb(3, op.encode())) for op in ops))


def _write_model(path: Path, preprocess, extra=None, files=("inference.json", "inference.pdiparams")) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name in files:
        program = {".json": _pir_program("conv2d"), ".pdmodel": _legacy_program("conv2d")}
        (path / name).write_bytes(program.get(Path(name).suffix, b"\0"))
    cfg = {"Global": {"model_name": "PP-YOLOE-S_human"}, "Preprocess": preprocess, **(extra or {})}
    (path / "inference.yml").write_text(yaml.safe_dump(cfg))
    return path


DET_STEPS = [{"type": "Resize", "target_size": [320, 480], "keep_ratio": False, "interp": 1}, {"type": "Permute"}]


def _fails(path: Path, *fragments: str) -> None:
    with pytest.raises(ModelError) as info:
        load_model_spec(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message


def test_missing_and_empty_dirs(tmp_path):
    _fails(tmp_path / "nope", "does not exist")
    (tmp_path / "file").write_text("x")
    _fails(tmp_path / "file", "not a directory")
    (tmp_path / "empty").mkdir()
    _fails(tmp_path / "empty", "no inference.json or inference.pdmodel")


def test_missing_params(tmp_path):
    _fails(_write_model(tmp_path / "m", DET_STEPS, files=("inference.json",)), "inference.pdiparams")


def test_missing_or_broken_yml(tmp_path):
    model = _write_model(tmp_path / "m", DET_STEPS)
    (model / "inference.yml").write_text("Preprocess: [unclosed\n")
    _fails(model, "not valid YAML")
    (model / "inference.yml").unlink()
    _fails(model, "inference.yml (the preprocessing settings) is missing")


@pytest.mark.parametrize(
    "steps, extra, fragment",
    [
        ([], None, "missing the Preprocess list"),
        ([{"type": "Permute"}], None, "neither Resize nor TopDownEvalAffine"),
        (DET_STEPS + [{"type": "TopDownEvalAffine", "trainsize": [96, 128]}], None, "both Resize and TopDownEvalAffine"),
        (DET_STEPS + [{"type": "GridMask"}], None, "unsupported Preprocess step 'GridMask'"),
        ([{"type": "Resize", "target_size": [640]}], None, "Resize.target_size must be two positive integers"),
        ([{"type": "Resize", "target_size": [64, 64], "interp": 9}], None, "Resize.interp"),
        ([{"type": "Resize", "target_size": [64, 64], "scale": 2}], None, "Resize has unsupported arguments"),
        (DET_STEPS + [{"type": "NormalizeImage", "mean": [0.5, 0.5]}], None, "NormalizeImage.mean"),
        (DET_STEPS + [{"type": "PadStride", "stride": 64}], None, "PadStride"),
        ([{"type": "TopDownEvalAffine", "trainsize": [96, 128], "use_udp": "yes"}], None, "use_udp"),
        (DET_STEPS, {"Global": {}}, "missing Global.model_name"),
        (DET_STEPS, {"draw_threshold": "high"}, "draw_threshold must be a number"),
    ],
)
def test_bad_preprocess(tmp_path, steps, extra, fragment):
    _fails(_write_model(tmp_path / "m", steps, extra), fragment)


def test_yml_semantics(tmp_path):
    """PaddleX's readings: target_size is [h, w]; norm_type other than mean_std
    keeps only the scaling; defaults are ImageNet mean/std with is_scale; a
    PadStride that cannot pad is accepted; legacy .pdmodel is found."""
    steps = DET_STEPS + [{"type": "NormalizeImage", "norm_type": "none", "mean": [1, 2, 3], "std": [4, 5, 6], "is_scale": False},
                         {"type": "PadStride", "stride": 32}]
    spec = load_model_spec(_write_model(tmp_path / "a", steps, files=("inference.pdmodel", "inference.pdiparams")))
    assert spec.detector == DetectorPreprocess((320, 480), False, 1, (1.0, 2.0, 3.0), (4.0, 5.0, 6.0), False)
    assert spec.program_path.name == "inference.pdmodel"

    steps = DET_STEPS + [{"type": "NormalizeImage", "norm_type": "minmax"}]
    spec = load_model_spec(_write_model(tmp_path / "b", steps))
    assert (spec.detector.mean, spec.detector.std, spec.detector.is_scale) == ((0.0,) * 3, (1.0,) * 3, True)

    spec = load_model_spec(_write_model(tmp_path / "c", DET_STEPS + [{"type": "NormalizeImage"}]))
    assert (spec.detector.mean, spec.detector.std, spec.detector.is_scale) == (*IMAGENET, True)

    kpt = [{"type": "TopDownEvalAffine", "trainsize": [192, 256], "use_udp": True}]
    spec = load_model_spec(_write_model(tmp_path / "d", kpt))
    assert spec.keypoint == KeypointPreprocess((192, 256), True, (0.0,) * 3, (1.0,) * 3, False)


def test_program_ops_decide_leaky_relu(shared_dir, tmp_path):
    model = tmp_path / "m"
    shutil.copytree(shared_dir / "models/real/keypoint_movenet_thunder", model, ignore=shutil.ignore_patterns("*.pdiparams", "*.onnx"))
    (model / "inference.pdiparams").write_bytes(b"\0")
    assert not load_model_spec(model).has_leaky_relu
    program = json.loads((model / "inference.json").read_text())
    program["program"]["regions"][0]["blocks"][0]["ops"] += [{"#": "1.nearest_interp"}, {"#": "1.leaky_relu"}]
    (model / "inference.json").write_text(json.dumps(program))
    spec = load_model_spec(model)
    assert spec.has_leaky_relu


def test_legacy_program_ops_come_from_the_blocks_not_the_version_map(shared_dir, tmp_path):
    """A Paddle 2.6 .pdmodel names leaky_relu in its op_version_map whatever the
    network; only ops in the program's blocks count (else oneDNN is turned off)."""
    legacy = shared_dir / "models/legacy/person_detector_nanodet"
    assert b"leaky_relu" in (legacy / "inference.pdmodel").read_bytes()
    spec = load_model_spec(legacy)
    assert spec.has_leaky_relu is False
    model = tmp_path / "m"
    model.mkdir()
    for name in ("inference.yml", "inference.pdiparams"):
        (model / name).symlink_to(legacy / name)
    # A second block appended to the ProgramDesc (repeated field 1) with the two ops.
    (model / "inference.pdmodel").write_bytes(
        (legacy / "inference.pdmodel").read_bytes() + _legacy_program("nearest_interp_v2", "leaky_relu")
    )
    spec = load_model_spec(model)
    assert spec.has_leaky_relu is True


@pytest.mark.parametrize("content", [b"", b"\xff\xff\xff", b"not a protobuf at all"])
def test_corrupt_legacy_program_is_named(tmp_path, content):
    model = _write_model(tmp_path / "m", DET_STEPS, files=("inference.pdmodel", "inference.pdiparams"))
    (model / "inference.pdmodel").write_bytes(content)
    _fails(model, "inference.pdmodel: not a Paddle program")


def test_corrupt_pir_program_is_named(tmp_path):
    model = _write_model(tmp_path / "m", DET_STEPS)
    (model / "inference.json").write_text('{"ops": ["1.conv2d"]}')
    _fails(model, "inference.json: not a Paddle PIR program")


# --- export layouts ----------------------------------------------------------


def test_paddledetection_layout_is_read(shared_dir):
    """PaddleDetection 2.x's export: model.pdmodel/.pdiparams + infer_cfg.yml
    (no Global.model_name: the caller's name, else the folder's)."""
    ppdet = shared_dir / "models/legacy/keypoint_movenet_thunder_ppdet"
    pir = load_model_spec(shared_dir / "models/real/keypoint_movenet_thunder")
    spec = load_model_spec(ppdet, kind=KEYPOINT, model_name="PP-TinyPose_256x192")
    assert (spec.program_path.name, spec.params_path.name) == ("model.pdmodel", "model.pdiparams")
    assert spec.model_name == "PP-TinyPose_256x192"
    assert (spec.keypoint, spec.draw_threshold, spec.arch, spec.label_list) == (pir.keypoint, 0.5, "HRNet", ("keypoint",))
    assert spec.has_leaky_relu is False
    assert load_model_spec(ppdet).model_name == "keypoint_movenet_thunder_ppdet"


def test_paddlex_name_wins_over_the_callers(shared_dir):
    spec = load_model_spec(shared_dir / "models/legacy/keypoint_movenet_thunder", model_name="PP-TinyPose_128x96")
    assert spec.model_name == "PP-TinyPose_256x192"
    assert spec.program_path.name == "inference.pdmodel"


def test_paddledetection_pir_export_is_read(shared_dir, tmp_path):
    """PaddleDetection on Paddle 3 writes model.json in the same layout."""
    real = shared_dir / "models/real/keypoint_movenet_thunder"
    model = tmp_path / "ppdet_pir"
    model.mkdir()
    (model / "model.json").symlink_to(real / "inference.json")
    (model / "model.pdiparams").symlink_to(real / "inference.pdiparams")
    (model / "infer_cfg.yml").symlink_to(shared_dir / "models/legacy/keypoint_movenet_thunder_ppdet/infer_cfg.yml")
    spec = load_model_spec(model, model_name="PP-TinyPose_256x192")
    assert spec.program_path.name == "model.json" and spec.keypoint == load_model_spec(real).keypoint


@pytest.mark.parametrize(
    "files, fragments",
    [
        (("best_model.pdparams", "best_model.pdopt"), ["training weights (best_model.pdopt, best_model.pdparams)", "Global.mode=export"]),
        (("__model__", "__params__", "infer_cfg.yml"), ["Paddle 1.x export"]),
        (("inference.json", "infer_cfg.yml"), ["PaddleX export files (inference.json), but inference.pdiparams (the model weights) and inference.yml"]),
        (("model.pdmodel", "model.pdiparams", "model.yml"), ["PaddleX 2.x's own export format"]),
        (("inference.pdmodel", "model.pdiparams", "infer_cfg.yml"), ["model.json or model.pdmodel (the model program) is missing"]),
        (("model.pdmodel", "model.pdiparams"), ["infer_cfg.yml (the preprocessing settings) is missing"]),
        (("inference.onnx",), ["an ONNX file without the Paddle export"]),
        (("README.md",), ["no inference.json or inference.pdmodel", "model.pdmodel + model.pdiparams + infer_cfg.yml"]),
    ],
)
def test_wrong_format_dirs_say_what_they_hold(tmp_path, files, fragments):
    model = tmp_path / "m"
    model.mkdir()
    for name in files:
        (model / name).write_bytes(b"\0")
    _fails(model, *fragments)


def test_training_output_points_at_its_export(tmp_path):
    out = tmp_path / "best_model"
    _write_model(out / "inference", DET_STEPS)
    (out / "best_model.pdparams").write_bytes(b"\0")
    _fails(out, "the subfolder 'inference' holds a model export", f"set model_dir to {out / 'inference'}")
