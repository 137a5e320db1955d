"""Bad models, devices and inputs through the public API: a clear error that
names the culprit, and the good inputs of a list still get their results."""
from __future__ import annotations

import copy
import shutil

import numpy as np
import pytest

import posepipe
from posepipe import ConfigError, DeviceError, InputError, ModelError

from conftest import break_tiff_page, load_image


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


@pytest.mark.parametrize("threshold", [-1, -0.01, 1.01, 5, float("nan"), float("inf"), True, False, "0.5", [0.5]])
def test_detection_threshold_outside_0_to_1_is_refused(pipeline, real_config, threshold):
    """The API, the YAML / config dict and the CLI share one rule (config.check_threshold)."""
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ConfigError, match=r"det_threshold must be a number between 0 and 1.*got " + repr(threshold).replace("[", r"\[").replace("]", r"\]")):
        next(pipeline.predict(image, det_threshold=threshold))
    with pytest.raises(ConfigError, match=r"SubModules.ObjectDetection: threshold must be a number between 0 and 1"):
        posepipe.create_pipeline(config=with_submodule(real_config, "ObjectDetection", threshold=threshold), device="cpu")


@pytest.mark.parametrize("threshold", [0, 0.0, 1, 1.0, 0.5, np.float32(0.25)])
def test_detection_threshold_bounds_are_included(pipeline, threshold):
    result = next(pipeline.predict(np.zeros((8, 8, 3), np.uint8), det_threshold=threshold))
    assert result.error is None


def test_names_and_pages_through_the_api(pipeline, shared_dir, tmp_path):
    """One predict call over a folder: clashing stems get suffixes, a
    multi-page TIFF gives a result per page with its page_index and files."""
    from PIL import Image

    photo = shared_dir / "photos" / "hrnet_demo.jpg"
    folder = tmp_path / "in"
    (folder / "a").mkdir(parents=True)
    (folder / "b").mkdir()
    for rel in ["a/x.jpg", "b/x.jpg"]:
        (folder / rel).write_bytes(photo.read_bytes())
    image = load_image(photo)
    image.save(folder / "img.bmp")
    image.save(folder / "img.webp", lossless=True)
    image.save(folder / "pages.tif", save_all=True, append_images=[image, image])
    out = tmp_path / "out"
    results = list(pipeline.predict(str(folder)))
    assert [(r["input_path"], r.get("page_index")) for r in results] == [
        (str(folder / "a/x.jpg"), None), (str(folder / "b/x.jpg"), None), (str(folder / "img.bmp"), None),
        (str(folder / "img.webp"), None), *((str(folder / "pages.tif"), i) for i in range(3)),
    ]
    for r in results:
        r.save_all(out)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["x_res.json", "x_res.jpg", "x-2_res.json", "x-2_res.jpg", "img_res.json", "img_res.bmp", "img-2_res.json",
         "img-2_res.webp"] + [f"pages_{i}_res.{e}" for i in range(3) for e in ("json", "tif")]
    )
    assert all(len(r["boxes"]) == 1 for r in results)


def test_a_bad_tiff_page_fails_alone(pipeline, shared_dir, tmp_path):
    image = load_image(shared_dir / "photos" / "hrnet_demo.jpg")
    path = tmp_path / "scan.tif"
    image.save(path, save_all=True, append_images=[image, image])
    break_tiff_page(path, 1)
    results = list(pipeline.predict(str(path)))
    assert [r.error is None for r in results] == [True, False, True]
    assert results[1]["page_index"] == 1 and results[1].error.startswith(f"{path} (page 1): ")
    assert results[0]["boxes"][0]["coordinate"] == results[2]["boxes"][0]["coordinate"]




def model_copy_with(shared_dir, tmp_path, rel: str, step: str, key: str, value):
    """A writable copy of a shared model directory (never written in place),
    its inference.yml's Preprocess `step` given `key: value`. Returns the yml."""
    import yaml

    model = tmp_path / rel.replace("/", "_")
    shutil.copytree(shared_dir / "models" / rel, model, ignore=shutil.ignore_patterns("*.onnx"))
    model.chmod(0o755)
    yml = model / "inference.yml"
    yml.chmod(0o644)
    cfg = yaml.safe_load(yml.read_text())
    next(s for s in cfg["Preprocess"] if s["type"] == step)[key] = value
    yml.write_text(yaml.safe_dump(cfg))
    return yml


@pytest.mark.parametrize("rel", ["real/person_detector_nanodet", "legacy/person_detector_nanodet"])
def test_detector_yml_size_that_the_graph_does_not_take(real_config, shared_dir, tmp_path, rel):
    yml = model_copy_with(shared_dir, tmp_path, rel, "Resize", "target_size", [320, 320])
    program = "inference.json" if rel.startswith("real") else "inference.pdmodel"
    with pytest.raises(ModelError) as info:
        posepipe.create_pipeline(config=with_submodule(real_config, "ObjectDetection", model_dir=str(yml.parent)), device="cpu")
    assert str(info.value) == (
        f"{yml}: Resize makes 320x320 (h x w) images, but the model's program ({program}) takes 416x416; "
        "make target_size match the program"
    )


def test_img_size_that_the_graph_does_not_take(real_config):
    with pytest.raises(ModelError, match=r"img_size 640x480 \(w x h\) from the pipeline config, but the model's program \(inference.json\) takes 416x416"):
        posepipe.create_pipeline(config=with_submodule(real_config, "ObjectDetection", img_size=[640, 480]), device="cpu")


def test_keypoint_yml_size_that_the_graph_does_not_take(real_config, shared_dir, tmp_path):
    yml = model_copy_with(shared_dir, tmp_path, "real/keypoint_movenet_thunder", "TopDownEvalAffine", "trainsize", [192, 256])
    with pytest.raises(ModelError) as info:
        posepipe.create_pipeline(config=with_submodule(real_config, "KeypointDetection", model_dir=str(yml.parent)), device="cpu")
    assert str(info.value) == (
        f"{yml}: TopDownEvalAffine makes 256x192 (h x w) crops, but the model's program (inference.json) takes 256x256; "
        "make trainsize match the program"
    )
