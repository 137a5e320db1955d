"""Bad models, devices and inputs through the public API: a clear error that
names the culprit, and the good inputs of a list still get their results."""
from __future__ import annotations

import copy
import shutil

import numpy as np
import pytest

import posepipe
from posepipe import ConfigError, DeviceError, InputError, ModelError


@pytest.fixture(scope="module")
def pipeline(real_config):
    return posepipe.create_pipeline(config=real_config, device="cpu")


def with_submodule(config, key, **changes):
    config = copy.deepcopy(config)
    config["SubModules"][key].update(changes)
    return config


def test_keypoint_model_given_as_detector(real_config):
    kpt_dir = real_config["SubModules"]["KeypointDetection"]["model_dir"]
    with pytest.raises(ModelError, match="keypoint_movenet_thunder"):
        posepipe.create_pipeline(config=with_submodule(real_config, "ObjectDetection", model_dir=kpt_dir), device="cpu")


def test_model_dir_missing_params(real_config, tmp_path):
    broken = tmp_path / "det"
    shutil.copytree(real_config["SubModules"]["ObjectDetection"]["model_dir"], broken)
    (broken / "inference.pdiparams").unlink()
    with pytest.raises(ModelError, match="inference.pdiparams"):
        posepipe.create_pipeline(config=with_submodule(real_config, "ObjectDetection", model_dir=str(broken)), device="cpu")


def test_unknown_model_name_without_model_dir(real_config):
    config = with_submodule(real_config, "ObjectDetection", model_name="No-Such-Model", model_dir=None)
    with pytest.raises(ModelError, match="No-Such-Model"):
        posepipe.create_pipeline(config=config, device="cpu")


@pytest.mark.parametrize("device", ["tpu:0", "gpu:0:1", "cpu:3", "banana"])
def test_unknown_device(real_config, device):
    with pytest.raises(DeviceError, match="device"):
        posepipe.create_pipeline(config=real_config, device=device)


def test_unknown_config_key(real_config):
    with pytest.raises(ConfigError, match="thresh"):
        posepipe.create_pipeline(config=with_submodule(real_config, "ObjectDetection", thresh=0.3), device="cpu")


def test_single_bad_input_raises_naming_it(pipeline, tmp_path):
    missing = tmp_path / "nope.jpg"
    with pytest.raises(InputError, match="nope.jpg"):
        next(pipeline.predict(str(missing)))
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("hello")
    with pytest.raises(InputError, match="notes.jpg"):
        next(pipeline.predict(str(not_image)))


def test_empty_folder_raises(pipeline, tmp_path):
    with pytest.raises(InputError, match="no image"):
        next(pipeline.predict(str(tmp_path)))


def test_bad_inputs_in_a_list_do_not_stop_the_good_ones(pipeline, shared_dir, tmp_path):
    good = str(shared_dir / "photos" / "hrnet_demo.jpg")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes((shared_dir / "photos" / "hrnet_demo.jpg").read_bytes()[:5000])
    inputs = [good, str(tmp_path / "missing.png"), str(truncated), np.zeros((4, 4), np.float64), good]
    results = list(pipeline.predict(inputs))
    assert len(results) == len(inputs)
    assert [r.error is None for r in results] == [True, False, False, False, True]
    assert "missing.png" in results[1].error and "cut.jpg" in results[2].error
    assert len(results[0]["boxes"]) == 1 and results[4]["boxes"][0]["kpt_score"] == results[0]["boxes"][0]["kpt_score"]
    assert all(r["boxes"] == [] for r in results[1:4])


def test_absurd_header_is_refused_before_decoding(pipeline, tmp_path):
    # A PNG header claiming 100000 x 100000 pixels, with no pixel data behind it.
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    path = tmp_path / "huge.png"
    path.write_bytes(png)
    with pytest.raises(InputError, match="huge.png.*(too large|pixels)"):
        next(pipeline.predict(str(path)))


def test_grey_and_bgra_arrays_run(pipeline, shared_dir):
    import cv2

    bgr = cv2.imread(str(shared_dir / "photos" / "hrnet_demo.jpg"))
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    bgra = cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA)
    for image in (grey, bgra, np.zeros((1, 1, 3), np.uint8)):
        result = next(pipeline.predict(image))
        assert result.error is None
    assert len(next(pipeline.predict(bgra))["boxes"]) == 1


def test_no_person_image_gives_empty_boxes(pipeline):
    result = next(pipeline.predict(np.full((240, 320, 3), 127, np.uint8)))
    assert result["boxes"] == [] and result.error is None
