"""posepipe.result and posepipe.draw: PaddleX's result fields, text, JSON, file
naming and skeleton drawing."""
from __future__ import annotations

import json
import math
import re

import cv2
import numpy as np
import pytest
from PIL import Image

from posepipe.draw import COCO_EDGES, PALETTE, draw_keypoints
from posepipe.result import KeypointResult, SaveNames

PHOTOS = ["000000014439.jpg", "000000087038.jpg", "000000570688.jpg", "hrnet_demo.jpg"]
CROWD = PHOTOS[0]  # 12 persons


@pytest.fixture(scope="module")
def reference(shared_dir):
    """PaddleX's own output on the shared photos, per file name."""
    return json.loads((shared_dir / "reference" / "paddlex_real_models.json").read_text())


@pytest.fixture(scope="module")
def reference_result(shared_dir, reference):
    def make(name: str, from_array: bool = False) -> KeypointResult:
        """A result built from PaddleX's output on a shared photo."""
        path = shared_dir / "photos" / name
        persons = reference[name]
        rows = np.array([[0, p["det_score"], *p["coordinate"]] for p in persons], np.float32)
        keypoints = np.array([p["keypoints"] for p in persons], np.float32)
        return KeypointResult.from_arrays(None if from_array else str(path), cv2.imread(str(path)), rows, keypoints)

    return make


# --- fields ---------------------------------------------------------------------


def test_fields_and_types_match_paddlex(reference_result, reference):
    result = reference_result(CROWD)
    assert list(result) == ["input_path", "input_img", "boxes"]
    assert result.error is None
    assert result["input_img"].shape == (404, 640, 3)
    assert len(result["boxes"]) == 12
    for box, ref in zip(result["boxes"], reference[CROWD]):
        assert list(box) == ["coordinate", "det_score", "keypoints", "kpt_score"]
        assert all(type(v) is float for v in box["coordinate"])
        assert type(box["det_score"]) is float and type(box["kpt_score"]) is float
        assert box["keypoints"].dtype == np.float32 and box["keypoints"].shape == (17, 3)
        # Exactly PaddleX's numbers: the kpt_score is its float32 mean of the joint scores.
        assert box["coordinate"] == ref["coordinate"]
        assert box["det_score"] == ref["det_score"] and box["kpt_score"] == ref["kpt_score"]


def test_border_coordinates_are_ints_as_paddlex_clips_them():
    # PaddleX's max(0, x1) / min(w, x2) leave ints where a box touches the border.
    image = np.zeros((480, 640, 3), np.uint8)
    rows = np.array([[0, 0.9, -3.5, 0.0, 700.0, 480.0], [0, 0.8, 10.5, 20.25, 30.0, 40.0]], np.float32)
    result = KeypointResult.from_arrays("x.jpg", image, rows, np.zeros((2, 17, 3), np.float32))
    assert [type(v) for v in result["boxes"][0]["coordinate"]] == [int] * 4
    assert result["boxes"][0]["coordinate"] == [0, 0, 640, 480]
    assert result["boxes"][1]["coordinate"] == [10.5, 20.25, 30.0, 40.0]
    assert '"coordinate": [0, 0, 640, 480]' in result.to_text(json_format=True, indent=None)


def test_no_persons():
    result = KeypointResult.from_arrays("x.jpg", np.zeros((4, 4, 3), np.uint8), np.zeros((0, 6)), np.zeros((0, 17, 3)))
    assert result["boxes"] == [] and result.json == {"res": {"input_path": "x.jpg", "boxes": []}}
    np.testing.assert_array_equal(np.asarray(result.img["res"]), np.zeros((4, 4, 3), np.uint8))


# --- text and JSON ----------------------------------------------------------------


def test_json_drops_the_image_and_round_trips(reference_result, reference):
    result = reference_result(CROWD)
    result.metadata["timings_s"] = {"det_infer": 0.01}
    data = result.json
    assert list(data) == ["res"] and list(data["res"]) == ["input_path", "boxes"]
    assert json.loads(json.dumps(data)) == data
    ref = reference[CROWD]
    assert [b["keypoints"] for b in data["res"]["boxes"]] == [p["keypoints"] for p in ref]
    assert "input_img" in result  # json and print leave it out; the result keeps it


def test_print_formats(capsys, reference_result):
    result = reference_result(CROWD, from_array=True)
    result.print()
    text = capsys.readouterr().err
    assert "\x1b[" not in text  # colour only on a terminal
    # PaddleX's print: the dict repr under 'res', arrays shortened to their corners.
    assert text.startswith("{'res': {'input_path': None, 'boxes': [{'coordinate': [328.1390380859375, ")
    assert "'keypoints': array([[" in text and "...," in text and "shape=(17, 3), dtype=float32)" in text
    assert "input_img" not in text
    assert np.get_printoptions()["threshold"] == 1000  # numpy's settings are left alone

    result.print(json_format=True, indent=2)
    text = capsys.readouterr().err
    assert text.startswith('{\n  "res": {\n    "input_path": null,')
    assert json.loads(text) == result.json

    assert result.str == {"res": {k: v for k, v in result.items() if k != "input_img"}}


def test_non_ascii_paths_are_kept_unless_asked(tmp_path):
    result = KeypointResult.from_arrays("фото.jpg", np.zeros((4, 4, 3), np.uint8), np.zeros((0, 6)), np.zeros((0, 17, 3)))
    assert '"input_path": "фото.jpg"' in result.to_text(json_format=True)
    assert "\\u0444" in result.to_text(json_format=True, ensure_ascii=True)
    saved = result.save_to_json(tmp_path)
    assert saved.name == "фото_res.json" and "фото.jpg" in saved.read_text(encoding="utf-8")


# --- saving ----------------------------------------------------------------------


def test_save_to_folder_uses_input_name_and_suffix(tmp_path, reference_result):
    result = reference_result(CROWD)
    out = tmp_path / "out" / "nested"  # created as needed, as PaddleX does
    assert result.save_to_json(out) == out / "000000014439_res.json"
    assert result.save_to_img(out) == out / "000000014439_res.jpg"
    saved = json.loads((out / "000000014439_res.json").read_text())
    assert saved == result.json["res"]
    with Image.open(out / "000000014439_res.jpg") as im:
        assert im.format == "JPEG" and im.size == (640, 404)


def test_save_to_explicit_file_paths(tmp_path, reference_result):
    result = reference_result(CROWD)
    result.save_to_json(tmp_path / "my.json", indent=2)
    assert (tmp_path / "my.json").read_text().startswith('{\n  "input_path"')
    result.save_to_img(tmp_path / "drawn.png")
    with Image.open(tmp_path / "drawn.png") as im:
        assert im.format == "PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drawn.png", "my.json"]


def test_arrays_are_named_by_time_and_random_number_and_saved_as_png(tmp_path, reference_result):
    result = reference_result(CROWD, from_array=True)
    json_path, img_path = result.save_to_json(tmp_path), result.save_to_img(tmp_path)
    assert re.fullmatch(r"\d{10}_\d{4}_res\.json", json_path.name)
    assert img_path.name == json_path.name.replace(".json", ".png")  # one name per result


def test_url_and_non_image_input_names(tmp_path):
    image, none = np.zeros((4, 4, 3), np.uint8), (np.zeros((0, 6)), np.zeros((0, 17, 3)))
    url = KeypointResult.from_arrays("https://example.com/a/person.webp?size=2#x", image, *none)
    assert url.save_to_img(tmp_path).name == "person_res.webp"
    odd = KeypointResult.from_arrays("/data/frame.dat", image, *none)
    assert odd.save_to_img(tmp_path).name == "frame_res.png"
    assert odd.save_to_json(tmp_path).name == "frame_res.json"


def test_page_results_carry_page_index_and_paddlex_page_names(tmp_path):
    """PaddleX names a page's files `{stem}_{page}_res.*` (BaseCVResult._get_input_fn)."""
    image, none = np.zeros((4, 4, 3), np.uint8), (np.zeros((0, 6)), np.zeros((0, 17, 3)))
    page = KeypointResult.from_arrays("/scans/doc.tif", image, *none, page_index=2)
    assert list(page) == ["input_path", "page_index", "input_img", "boxes"]
    assert page.json == {"res": {"input_path": "/scans/doc.tif", "page_index": 2, "boxes": []}}
    assert page.save_to_json(tmp_path).name == "doc_2_res.json"
    assert page.save_to_img(tmp_path).name == "doc_2_res.tif"
    failed = KeypointResult.failed("/scans/doc.tif", "doc.tif (page 1): broken", page_index=1)
    assert failed.json["res"] == {"input_path": "/scans/doc.tif", "page_index": 1, "boxes": [], "error": "doc.tif (page 1): broken"}
    single = KeypointResult.from_arrays("/scans/one.tif", image, *none)
    assert "page_index" not in single and single.save_to_json(tmp_path).name == "one_res.json"


def test_names_of_one_run_never_clash(tmp_path, caplog):
    """Results of one run (one predict call, one CLI run) get PaddleX's
    `{stem}_res.*` unless an earlier result of the run has that stem (any
    case): then `{stem}-2`, `{stem}-3`, ..., with a warning when saved."""
    image, none = np.zeros((4, 4, 3), np.uint8), (np.zeros((0, 6)), np.zeros((0, 17, 3)))
    names = SaveNames()
    paths = ["/a/x.jpg", "/b/x.jpg", "/c/x.png", "/img.bmp", "/img.webp", "/X.jpg", "/x-2.jpg", "https://h/p/x.jpg?q=1"]
    results = [names.claim(KeypointResult.from_arrays(p, image, *none)) for p in paths]
    results += [names.claim(KeypointResult.from_arrays(None, image, *none)) for _ in range(50)]  # arrays: random names
    results.append(names.claim(KeypointResult.failed("/d/x.jpg", "/d/x.jpg: broken")))
    saved = [r.save_to_json(tmp_path).name for r in results]
    assert saved[:8] == [
        "x_res.json", "x-2_res.json", "x-3_res.json", "img_res.json", "img-2_res.json", "X-4_res.json",
        "x-2-2_res.json", "x-5_res.json",
    ]
    assert saved[-1] == "x-6_res.json"  # failed inputs keep their place too: names do not depend on which fail
    assert len({n.lower() for n in saved}) == len(saved) == len(list(tmp_path.iterdir()))
    assert [r.save_to_img(tmp_path).name for r in results[:5]] == ["x_res.jpg", "x-2_res.jpg", "x-3_res.png", "img_res.bmp", "img-2_res.webp"]
    renamed = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and not r.getMessage().startswith("array")]
    assert renamed[0] == "/b/x.jpg: saved as x-2_res.* since x_res.* is /a/x.jpg's in this run"
    assert renamed[3] == "/X.jpg: saved as X-4_res.* since x_res.* is /a/x.jpg's in this run"
    assert len(renamed) == 7  # once per renamed result, not per file (the failed one included)
    # Without a run (a result made by hand), PaddleX's name as is.
    assert KeypointResult.from_arrays("/b/x.jpg", image, *none).save_to_json(tmp_path / "solo").name == "x_res.json"


def test_save_all_writes_json_and_image(tmp_path, reference_result):
    reference_result("hrnet_demo.jpg").save_all(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hrnet_demo_res.jpg", "hrnet_demo_res.json"]


# --- failed inputs ---------------------------------------------------------------


def test_failed_result(tmp_path, capsys):
    result = KeypointResult.failed("bad.jpg", "bad.jpg: not an image")
    assert result.error == "bad.jpg: not an image" and result["boxes"] == []
    assert result.json == {"res": {"input_path": "bad.jpg", "boxes": [], "error": "bad.jpg: not an image"}}
    result.print()
    assert capsys.readouterr().err == "{'res': {'input_path': 'bad.jpg', 'boxes': [], 'error': 'bad.jpg: not an image'}}\n"
    assert result.img == {}
    assert result.save_to_img(tmp_path) is None
    assert list(tmp_path.iterdir()) == []


# --- drawing -----------------------------------------------------------------------


def paddlex_drawing(image: np.ndarray, skeletons: np.ndarray, threshold: float = 0.1) -> np.ndarray:
    """PaddleX 3.7.2's keypoint drawing, re-implemented: joints, then for each
    limb a whole-image copy, the ellipse filled in, and a 0.4/0.6 blend."""
    canvas = image.copy()
    for i in range(skeletons.shape[1]):
        for person in skeletons:
            if person[i, 2] < threshold:
                continue
            cv2.circle(canvas, tuple(int(v) for v in person[i, 0:2].astype("int32")), 2, PALETTE[i], thickness=-1)
    for i, (a, b) in enumerate(COCO_EDGES):
        for person in skeletons:
            if person[a, 2] < threshold or person[b, 2] < threshold:
                continue
            layer = canvas.copy()
            ys, xs = [person[a, 1], person[b, 1]], [person[a, 0], person[b, 0]]
            length = ((ys[0] - ys[1]) ** 2 + (xs[0] - xs[1]) ** 2) ** 0.5
            angle = math.degrees(math.atan2(ys[0] - ys[1], xs[0] - xs[1]))
            polygon = cv2.ellipse2Poly(
                (int(np.mean(xs)), int(np.mean(ys))), (int(length / 2), 1), int(angle), 0, 360, 1
            )
            cv2.fillConvexPoly(layer, polygon, PALETTE[i])
            canvas = cv2.addWeighted(canvas, 0.4, layer, 0.6, 0)
    return canvas


@pytest.mark.parametrize("name", PHOTOS)
def test_drawing_matches_paddlex(name, reference, shared_dir):
    image = cv2.imread(str(shared_dir / "photos" / name))
    skeletons = np.array([p["keypoints"] for p in reference[name]], np.float32)
    ours, theirs = draw_keypoints(image, skeletons), paddlex_drawing(image, skeletons)
    # Only the limb's box is blended, limb by limb in PaddleX's order: the same pixels.
    assert np.abs(ours.astype(int) - theirs.astype(int)).mean() < 0.01
    np.testing.assert_array_equal(ours, theirs)


def test_limbs_are_drawn_where_the_keypoints_are():
    image = np.full((100, 120, 3), 128, np.uint8)
    person = np.zeros((1, 17, 3), np.float32)
    person[0, :, 2] = 0.05  # all below threshold ...
    person[0, 5] = (20, 30, 0.9)  # ... but the left shoulder
    person[0, 7] = (80, 70, 0.9)  # and the left elbow: limb 4 of COCO_EDGES (5, 7)
    drawn = draw_keypoints(image, person)
    np.testing.assert_array_equal(image, np.full((100, 120, 3), 128, np.uint8))  # input untouched
    changed = np.argwhere((drawn != 128).any(axis=2))
    limb_color = np.array(PALETTE[COCO_EDGES.index((5, 7))])
    # The midpoint of the limb is blended 60% towards the limb's colour.
    np.testing.assert_allclose(drawn[50, 50], np.round(0.4 * 128 + 0.6 * limb_color), atol=1)
    # Nothing away from the segment between the two joints.
    ys, xs = changed[:, 0], changed[:, 1]
    assert xs.min() >= 20 - 3 and xs.max() <= 80 + 3 and ys.min() >= 30 - 3 and ys.max() <= 70 + 3
    # Joints get a filled circle of their own colour (then the limb blended over it).
    assert (drawn[30, 20] != 128).all() and (drawn[70, 80] != 128).all()


def test_below_threshold_and_off_image_points_draw_nothing():
    image = np.zeros((50, 50, 3), np.uint8)
    low = np.full((2, 17, 3), 0.05, np.float32)
    np.testing.assert_array_equal(draw_keypoints(image, low), image)
    off = np.zeros((1, 17, 3), np.float32)
    off[0, :, :2] = (500, 500)
    off[0, :, 2] = 0.9
    np.testing.assert_array_equal(draw_keypoints(image, off), image)
    np.testing.assert_array_equal(draw_keypoints(image, np.zeros((0, 17, 3), np.float32)), image)
