"""PaddleX's hpi_config (runtime/hpi_config.py): which backend use_hpip runs,
from create_pipeline's argument, the pipeline config's top level, or a
SubModule's own (merged over the pipeline's, as PaddleX merges them)."""
from __future__ import annotations

import json
import logging

import pytest

import posepipe
from posepipe.config import PipelineConfig
from posepipe.errors import ConfigError
from posepipe.runtime.device import Device
from posepipe.runtime.hpi_config import merge_hpi_configs, parse_hpi_config

CPU, GPU = Device("cpu"), Device("gpu", 0)


@pytest.mark.parametrize(
    "value, fragment",
    [
        ("openvino", "expected a mapping"),
        ({"backend": "tflite"}, "backend must be one of paddle, openvino, onnxruntime, tensorrt, om"),
        ({"backend": "openvino", "threads": 2}, "unknown key(s) threads"),
        ({"backend": "paddle", "backend_config": {"run_mode": "fast"}}, "run_mode must be one of"),
        ({"backend": "tensorrt", "backend_config": {"precision": "int8"}}, "precision must be fp32 or fp16"),
        ({"backend": "openvino", "backend_config": {"cpu_num_threads": 0}}, "cpu_num_threads must be a positive integer"),
        ({"auto_config": False}, "auto_config is false, so a backend must be named"),
        ({"auto_paddle2onnx": "yes"}, "auto_paddle2onnx must be true or false"),
    ],
)
def test_bad_hpi_configs_are_refused_with_the_reason(value, fragment):
    with pytest.raises(ConfigError, match="hpi_config: .*" + fragment.replace("(", r"\(").replace(")", r"\)")):
        parse_hpi_config(value)


@pytest.mark.parametrize(
    "value, device, name, precision",
    [
        ({"backend": "openvino"}, CPU, "openvino", "fp32"),
        ({"backend": "onnxruntime"}, CPU, "onnxruntime", "fp32"),
        ({"backend": "onnxruntime"}, GPU, "onnxruntime_cuda", "fp32"),
        ({"backend": "tensorrt"}, GPU, "onnxruntime_tensorrt_fp32", "fp32"),  # PaddleX's TensorRT default is fp32
        ({"backend": "tensorrt", "backend_config": {"precision": "fp16"}}, GPU, "onnxruntime_tensorrt_fp16", "fp16"),
        ({"backend": "paddle", "backend_config": {"run_mode": "mkldnn"}}, CPU, "paddle_onednn", "fp32"),
        ({"backend": "paddle", "backend_config": {"run_mode": "paddle"}}, CPU, "paddle", "fp32"),
        ({"backend": "paddle", "backend_config": {"run_mode": "trt_fp16"}}, GPU, "paddle_tensorrt_fp16", "fp16"),
        # PaddleX fills these in itself; they are accepted and change nothing.
        ({"backend": "openvino", "model_name": "PP-TinyPose_128x96", "device_type": "cpu", "device_id": 0}, CPU, "openvino", "fp32"),
    ],
)
def test_a_named_backend_is_the_candidate_built(value, device, name, precision):
    candidate = parse_hpi_config(value).candidate(device)
    assert (candidate.name, candidate.precision) == (name, precision)


def test_without_a_backend_use_hpip_measures():
    assert parse_hpi_config({}).candidate(CPU) is None
    assert parse_hpi_config(None) is None


def test_om_and_paddle_fp16_say_what_to_use_instead():
    with pytest.raises(ConfigError, match="posepipe has no OM backend"):
        parse_hpi_config({"backend": "om"}).candidate(CPU)
    with pytest.raises(ConfigError, match="use 'trt_fp16' on GPUs"):
        parse_hpi_config({"backend": "paddle", "backend_config": {"run_mode": "paddle_fp16"}}).candidate(GPU)


def test_merge_is_key_by_key_with_the_module_winning():
    merged = merge_hpi_configs({"backend": "openvino", "auto_paddle2onnx": False}, None, {"backend": "onnxruntime"})
    assert merged == {"backend": "onnxruntime", "auto_paddle2onnx": False}
    assert merge_hpi_configs(None, None) is None


def test_config_keeps_hpi_config_and_the_default_yaml_stays_paddlex(real_config):
    assert "hpi_config" not in json.dumps(PipelineConfig.default().to_dict())
    config = json.loads(json.dumps(real_config))
    config["hpi_config"] = {"backend": "openvino"}
    config["SubModules"]["KeypointDetection"]["hpi_config"] = {"backend": "onnxruntime"}
    parsed = PipelineConfig.from_dict(config)
    assert parsed.hpi_config == {"backend": "openvino"}
    assert parsed.keypoints.hpi_config == {"backend": "onnxruntime"} and parsed.detector.hpi_config is None
    assert PipelineConfig.from_dict(parsed.to_dict()) == parsed
    config["SubModules"]["ObjectDetection"]["hpi_config"] = ["openvino"]
    with pytest.raises(ConfigError, match="SubModules.ObjectDetection: hpi_config must be a mapping"):
        PipelineConfig.from_dict(config)


def test_named_backends_run_without_measuring(real_config, posepipe_home, shared_dir):
    config = json.loads(json.dumps(real_config))
    config["SubModules"]["KeypointDetection"]["hpi_config"] = {
        "backend": "onnxruntime", "backend_config": {"cpu_num_threads": 1}
    }
    pipeline = posepipe.create_pipeline(
        config=config, device="cpu", use_hpip=True, hpi_config={"backend": "openvino"}, cpu_threads=2
    )
    det, kpt = pipeline.metadata["detector"], pipeline.metadata["keypoints"]
    assert det["backend"] == "openvino" and kpt["backend"] == "onnxruntime"
    assert "hpip" not in det and "hpip" not in kpt  # named, so nothing was measured
    assert kpt["cpu_threads"] == 1 and det["cpu_threads"] == 2
    assert pipeline.metadata["tuning"]["keypoint_threads"] == {"threads": 1, "decision": "set"}
    res = next(pipeline.predict(str(shared_dir / "photos" / "000000014439.jpg")))
    assert len(res["boxes"]) == 12


def test_hpi_config_needs_use_hpip_as_in_paddlex(real_config, posepipe_home, caplog):
    with caplog.at_level(logging.WARNING, logger="posepipe"):
        pipeline = posepipe.create_pipeline(config=real_config, device="cpu", hpi_config={"backend": "openvino"}, cpu_threads=2)
    assert pipeline.metadata["detector"]["backend"] == "paddle"
    assert "hpi_config applies with use_hpip=True (as in PaddleX); ignored for the detector" in caplog.text



def test_config_keeps_use_hpip_at_both_levels(real_config):
    assert "use_hpip" not in json.dumps(PipelineConfig.default().to_dict())
    config = json.loads(json.dumps(real_config))
    config["use_hpip"] = True
    config["SubModules"]["KeypointDetection"]["use_hpip"] = False
    parsed = PipelineConfig.from_dict(config)
    assert (parsed.use_hpip, parsed.detector.use_hpip, parsed.keypoints.use_hpip) == (True, None, False)
    assert PipelineConfig.from_dict(parsed.to_dict()) == parsed
    config["use_hpip"] = "yes"
    with pytest.raises(ConfigError, match="config: use_hpip must be true or false, got 'yes'"):
        PipelineConfig.from_dict(config)
    config["use_hpip"] = None
    config["SubModules"]["ObjectDetection"]["use_hpip"] = 1
    with pytest.raises(ConfigError, match="SubModules.ObjectDetection: use_hpip must be true or false"):
        PipelineConfig.from_dict(config)


def _backends(pipeline):
    det, kpt = pipeline.metadata["detector"], pipeline.metadata["keypoints"]
    return (det["backend"], det["cpu_threads"]), (kpt["backend"], kpt["cpu_threads"])


def test_hpi_config_argument_replaces_the_configs(real_config, posepipe_home):
    """PaddleX 3.7.2 create_pipeline: a given hpi_config replaces the config's
    top-level one (no key merge); a SubModule's own is merged over the result."""
    config = json.loads(json.dumps(real_config))
    config["SubModules"]["KeypointDetection"]["batch_size"] = 4  # a cap: no batch measurement
    config["hpi_config"] = {"backend": "onnxruntime", "backend_config": {"cpu_num_threads": 1}}
    config["SubModules"]["KeypointDetection"]["hpi_config"] = {"backend_config": {"cpu_num_threads": 1}}
    pipeline = posepipe.create_pipeline(
        config=config, device="cpu", use_hpip=True, hpi_config={"backend": "openvino"}, cpu_threads=2
    )
    assert _backends(pipeline) == (("openvino", 2), ("openvino", 1))
    # Without the argument the config's own top-level hpi_config applies.
    pipeline = posepipe.create_pipeline(config=config, device="cpu", use_hpip=True, cpu_threads=2)
    assert _backends(pipeline) == (("onnxruntime", 1), ("onnxruntime", 1))


@pytest.fixture
def hpip_yaml(shared_dir, tmp_path):
    """examples/shared_real_models.yaml with `use_hpip: true` and a named
    backend at the top level, so that use_hpip shows without a measurement,
    and `use_hpip: false` on the keypoint model (PaddleX's per-module switch)."""
    import yaml

    from conftest import REPO

    data = yaml.safe_load((REPO / "examples" / "shared_real_models.yaml").read_text())
    for key, folder in (("ObjectDetection", "person_detector_nanodet"), ("KeypointDetection", "keypoint_movenet_thunder")):
        data["SubModules"][key]["model_dir"] = str(shared_dir / "models" / "real" / folder)
    data["SubModules"]["KeypointDetection"]["batch_size"] = 4  # a cap: no batch measurement
    data["SubModules"]["KeypointDetection"]["use_hpip"] = False
    data["use_hpip"] = True
    data["hpi_config"] = {"backend": "onnxruntime"}
    path = tmp_path / "hpip.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    "use_hpip, detector, keypoints",
    [
        (None, "onnxruntime", "paddle"),  # the YAML's use_hpip; the module's own wins for the keypoint model
        (False, "paddle", "paddle"),  # an explicit argument replaces the YAML's
        (True, "onnxruntime", "paddle"),  # and a SubModule's use_hpip wins over it, as in PaddleX
    ],
)
def test_yaml_use_hpip_applies_unless_the_argument_says(hpip_yaml, posepipe_home, use_hpip, detector, keypoints):
    pipeline = posepipe.create_pipeline(str(hpip_yaml), device="cpu", use_hpip=use_hpip, cpu_threads=2)
    assert (pipeline.metadata["detector"]["backend"], pipeline.metadata["keypoints"]["backend"]) == (detector, keypoints)
