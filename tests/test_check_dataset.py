"""posepipe check-dataset on damaged copies of ../shared/eval/coco_mini (built
in tmp_path; ../shared stays untouched): every problem is reported with its
file and id, never a crash, and the exit code says whether the dataset can
be used."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

import cv2
import pytest

from posepipe import probe
from posepipe.cli import main as cli_main
from posepipe.errors import DatasetError
from posepipe.evaluation import check_dataset
from posepipe.evaluation.checks import load_dataset

ANNOTATIONS = "annotations/person_keypoints_val.json"


@pytest.fixture
def dataset(shared_dir, tmp_path) -> Path:
    root = tmp_path / "coco_mini"
    shutil.copytree(shared_dir / "eval" / "coco_mini", root)
    for path in root.rglob("*"):  # CI's ../shared has no write bits; the copy must be editable
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root


def _edit(root: Path, change: Callable[[dict], None]) -> None:
    path = root / ANNOTATIONS
    coco = json.loads(path.read_text())
    change(coco)
    path.write_text(json.dumps(coco))


def _ann(coco: dict, ann_id: int) -> dict:
    return next(a for a in coco["annotations"] if a["id"] == ann_id)


def test_clean_dataset_passes_with_its_counts(dataset, capsys):
    assert cli_main(["check-dataset", str(dataset)]) == 0
    out = capsys.readouterr().out
    # The counts ../shared/eval/README.md gives.
    assert "4 images, 14 persons (12 with keypoints), 181 labelled keypoints" in out
    assert "0 errors, 0 warnings" in out


FIRST = 442619  # the only person of image 785, 17 labelled keypoints


def _move_wrist_out(coco):
    _ann(coco, FIRST)["keypoints"][9 * 3] = 700.0  # left_wrist x beyond the 640 px width


# (damage, severity, file the problem names ("json" or an image name), where, message fragment)
DAMAGES = [
    (lambda r: (r / "images/000000000785.jpg").unlink(), "error", "000000000785.jpg", "image id 785", "image file not found"),
    (lambda r: (r / ANNOTATIONS).write_text('{"images": [}'), "error", "json", "", "not valid JSON: Expecting value at line 1 column 13"),
    (lambda r: (r / ANNOTATIONS).write_text("[]"), "error", "json", "", "expected a JSON object"),
    (lambda r: _edit(r, lambda c: c.pop("annotations")), "error", "json", "", "missing the 'annotations' list"),
    (lambda r: _edit(r, _move_wrist_out), "warning", "json", f"annotation id {FIRST}", "keypoints outside the 640x425 image: left_wrist"),
    (lambda r: _edit(r, lambda c: _ann(c, FIRST)["bbox"].__setitem__(2, 0)), "error", "json", f"annotation id {FIRST}", "zero-area box"),
    (lambda r: _edit(r, lambda c: _ann(c, FIRST)["keypoints"].__delitem__(slice(48, 51))), "error", "json", f"annotation id {FIRST}", "wrong keypoint count: 48 values, expected 51"),
    (lambda r: _edit(r, lambda c: _ann(c, FIRST)["keypoints"].__setitem__(2, 3)), "error", "json", f"annotation id {FIRST}", "visibility must be 0, 1 or 2, got [3]"),
    (lambda r: _edit(r, lambda c: _ann(c, FIRST).pop("area")), "error", "json", f"annotation id {FIRST}", "missing or invalid area"),
    (lambda r: _edit(r, lambda c: _ann(c, FIRST).pop("iscrowd")), "error", "json", f"annotation id {FIRST}", "iscrowd must be 0 or 1"),
    (lambda r: _edit(r, lambda c: _ann(c, FIRST).pop("num_keypoints")), "error", "json", f"annotation id {FIRST}", "missing or invalid num_keypoints"),
    (lambda r: _edit(r, lambda c: _ann(c, FIRST).__setitem__("num_keypoints", 3)), "warning", "json", f"annotation id {FIRST}", "num_keypoints is 3 but 17 keypoints are labelled"),
    (lambda r: _edit(r, lambda c: _ann(c, FIRST).__setitem__("image_id", 999)), "error", "json", f"annotation id {FIRST}", "image_id 999 is not in the images list"),
    (lambda r: _edit(r, lambda c: c["annotations"][1].__setitem__("id", FIRST)), "error", "json", f"annotation id {FIRST}", "duplicate annotation id"),
    (lambda r: _edit(r, lambda c: c["images"][1].__setitem__("id", 785)), "error", "json", "image id 785", "duplicate image id"),
    (lambda r: _edit(r, lambda c: c["images"][0].pop("width")), "error", "json", "image id 785", "missing or invalid width"),
    (lambda r: _edit(r, lambda c: c["categories"][0].__setitem__("keypoints", c["categories"][0]["keypoints"][:14])), "error", "json", "category id 1", "14 keypoints per person"),
    (lambda r: _edit(r, lambda c: c["categories"][0].pop("keypoints")), "error", "json", "category id 1", "not a person-keypoints annotation file"),
    (lambda r: _edit(r, lambda c: c["categories"][0].__setitem__("name", "human")), "warning", "json", "category id 1", "no category is named 'person'"),
    (lambda r: _edit(r, lambda c: c["categories"][0]["keypoints"].reverse()), "warning", "json", "category id 1", "joint names differ from COCO's"),
]


@pytest.mark.parametrize("damage, severity, file, where, fragment", DAMAGES, ids=[d[4][:40] for d in DAMAGES])
def test_damage_is_reported_with_file_and_id(dataset, capsys, damage, severity, file, where, fragment):
    damage(dataset)
    code = cli_main(["check-dataset", str(dataset)])
    out = capsys.readouterr().out
    named = str(dataset / ANNOTATIONS) if file == "json" else str(dataset / "images" / file)
    line = next((ln for ln in out.splitlines() if fragment in ln), None)
    assert line is not None, out
    assert line.startswith(f"{severity}: {named}: {where + ': ' if where else ''}"), line
    assert code == (1 if severity == "error" else 0)


def test_truncated_image_needs_a_full_decode(dataset):
    image = dataset / "images/000000196141.jpg"
    image.write_bytes(image.read_bytes()[:30_000])
    assert check_dataset(dataset, decode=False).usable  # the header is intact
    report = check_dataset(dataset)
    assert [(p.file, p.where) for p in report.errors] == [(str(image), "image id 196141")]
    assert "truncated" in report.errors[0].message


def test_image_of_another_size_is_an_error(dataset):
    """Annotations made on another resolution would put every keypoint in the wrong place."""
    path = dataset / "images/000000197388.jpg"
    cv2.imwrite(str(path), cv2.resize(cv2.imread(str(path)), (320, 196)))
    for decode in (True, False):
        (problem,) = check_dataset(dataset, decode=decode).errors
        assert problem.where == "image id 197388"
        assert "the image is 320x196 as decoded (EXIF orientation applied), the annotation says 640x392" in problem.message


def test_many_problems_are_all_listed(dataset, capsys):
    (dataset / "images/000000000785.jpg").unlink()
    _edit(dataset, lambda c: [a["bbox"].__setitem__(3, 0) for a in c["annotations"]])
    assert cli_main(["check-dataset", str(dataset)]) == 1
    out = capsys.readouterr().out
    assert "15 errors, 0 warnings" in out
    assert out.count("zero-area box") == 14


def test_not_a_dataset_folder(tmp_path, capsys):
    assert cli_main(["check-dataset", str(tmp_path)]) == 1
    assert f"error: {tmp_path}: no annotations/ folder" in capsys.readouterr().out


def _set(entries: str, field: str, value):
    def change(coco):
        coco[entries][0][field] = value

    return change


# Ids that are JSON lists, objects, booleans, floats or strings: each an error
# naming the entry, never a TypeError; True and 785.0 would otherwise pass as 1
# and 785 in Python's comparisons.
BAD_IDS = [[785], {"id": 785}, True, 785.0, "785"]
ID_DAMAGES = [
    *[(_set("annotations", "id", v), "annotations[0]", "missing or invalid id (an integer)") for v in BAD_IDS],
    *[(_set("annotations", "image_id", v), f"annotation id {FIRST}", "missing or invalid image_id (an integer)") for v in BAD_IDS],
    *[(_set("annotations", "category_id", v), f"annotation id {FIRST}", "missing or invalid category_id (an integer)") for v in BAD_IDS],
    (lambda c: c["annotations"][0].pop("category_id"), f"annotation id {FIRST}", "missing or invalid category_id (an integer), got category_id None"),
    *[(_set("images", "id", v), "images[0]", "missing or invalid id") for v in BAD_IDS],
    *[(_set("categories", "id", v), "categories[0]", "expected an object with an integer id") for v in BAD_IDS],
    (lambda c: c["categories"].append([1]), "categories[1]", "expected an object with an integer id"),
]


@pytest.mark.parametrize("command", ["check-dataset", "eval"])
@pytest.mark.parametrize("change, where, fragment", ID_DAMAGES, ids=[f"{i}-{d[2][:30]}" for i, d in enumerate(ID_DAMAGES)])
def test_ids_of_the_wrong_type_are_reported_not_crashed_on(dataset, capsys, command, change, where, fragment):
    _edit(dataset, change)
    argv = ["check-dataset", str(dataset)] if command == "check-dataset" else ["eval", "--dataset", str(dataset), "-q"]
    assert cli_main(argv) == 1
    captured = capsys.readouterr()
    # check-dataset lists every problem on stdout; eval refuses the dataset on stderr, naming its first errors.
    text = captured.out if command == "check-dataset" else captured.err
    assert f"error: {dataset / ANNOTATIONS}: {where}: {fragment}" in text, text
    assert "Traceback" not in captured.err


IMAGE_785 = "images/000000000785.jpg"  # 640x425


def _as_gif(path: Path) -> None:
    from PIL import Image

    Image.open(path).save(path, "GIF")  # the .jpg name kept: formats are told by their bytes


def _with_comment_segments(path: Path) -> None:
    """A valid JPEG with 2000 comment segments before its frame header: Pillow
    walks them all, posepipe's reader stops at MAX_JPEG_SEGMENTS."""
    data = path.read_bytes()
    path.write_bytes(data[:2] + b"\xff\xfe\x00\x04ab" * 2000 + data[2:])


def _header_cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:200])  # ends before the frame header


HEADER_DAMAGES = [
    (_as_gif, "GIF images are not supported"),
    (_with_comment_segments, "more than 1024 marker segments"),
    (_header_cut, "no frame header (SOF)"),
]


@pytest.mark.parametrize("damage, fragment", HEADER_DAMAGES, ids=[d[1][:30] for d in HEADER_DAMAGES])
def test_headers_are_judged_as_the_pipeline_reads_them(dataset, damage, fragment):
    """eval checks headers only; a file the pipeline refuses is refused there
    too (with the same sentence as check-dataset's full decode), before any
    model loads, instead of being dropped during the run."""
    image = dataset / IMAGE_785
    damage(image)
    header_only, decoded = check_dataset(dataset, decode=False), check_dataset(dataset)
    assert [(p.file, p.where, p.message) for p in header_only.errors] == [(p.file, p.where, p.message) for p in decoded.errors]
    [problem] = header_only.errors
    assert (problem.file, problem.where) == (str(image), "image id 785") and fragment in problem.message
    with pytest.raises(DatasetError) as refused:
        load_dataset(dataset)
    assert f"{image}: image id 785: " in str(refused.value) and fragment in str(refused.value)


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF"])
def test_header_sizes_follow_exif_orientation_as_the_decoder_does(dataset, fmt, orientation):
    """OpenCV turns JPEG and PNG by their EXIF orientation (WebP: OpenCV 5 only); Pillow
    turns TIFF pages by their Orientation tag. The header-only check must
    agree with the decode, or eval would accept images the run then finds
    the wrong size."""
    from PIL import Image

    image = dataset / IMAGE_785
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.open(image).save(image, fmt, exif=exif.tobytes())
    header_only, decoded = check_dataset(dataset, decode=False), check_dataset(dataset)
    assert [(p.where, p.message) for p in header_only.errors] == [(p.where, p.message) for p in decoded.errors]
    turned = orientation in (6, 8)
    if fmt == "WEBP":  # OpenCV 4 keeps a WebP as stored, OpenCV 5 turns it: the installed one decides
        turned = turned and cv2.imread(str(image)).shape[:2] == (640, 425)
        with open(image, "rb") as f:  # so the header-only check decodes it
            size = image.stat().st_size
            assert probe.oriented_size(f, size, probe.read_header(f, size, str(image), 1 << 26)) is None
    assert header_only.usable is not turned  # turned: 425x640 against the annotated 640x425
