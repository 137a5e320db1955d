"""posepipe eval on ../shared/eval/coco_mini with the real models: its numbers
are pycocotools' on the detections it scored (pycocotools run here directly
on the files eval wrote), its detections are what the pipeline's public API
gives, and the dataset layouts it reads and refuses."""
from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

import posepipe
from posepipe.cli import main as cli_main
from posepipe.errors import ConfigError, DatasetError
from posepipe.evaluation import EvalSettings, evaluate
from posepipe.evaluation.dataset import locate
from posepipe.evaluation.modes import keypoint_results, person_score
from posepipe.io import iter_frames

STATS = {
    "keypoints": ["AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl"],
    "keypoints_gt_boxes": ["AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl"],
    "detection": ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"],
}
IOU_TYPE = {"keypoints": "keypoints", "keypoints_gt_boxes": "keypoints", "detection": "bbox"}


@pytest.fixture(scope="module")
def coco_mini(shared_dir) -> Path:
    return shared_dir / "eval" / "coco_mini"


@pytest.fixture(scope="module")
def annotation_file(coco_mini) -> Path:
    return coco_mini / "annotations" / "person_keypoints_val.json"


@pytest.fixture(scope="module")
def pipeline(real_config):
    return posepipe.create_pipeline(config=real_config, device="cpu", cpu_threads=2)


@pytest.fixture(scope="module")
def evaluated(pipeline, coco_mini, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    return evaluate(pipeline, coco_mini, save_path=out), out


def pycocotools_stats(annotation_file: Path, results, iou_type: str, image_ids=None):
    """COCOeval straight from the annotation file, as its README shows."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(annotation_file))
        ev = COCOeval(gt, gt.loadRes(results), iouType=iou_type)
        if image_ids is not None:
            ev.params.imgIds = sorted(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def test_eval_json_has_the_three_objects_and_stat_names(evaluated):
    report, out = evaluated
    saved = json.loads((out / "eval.json").read_text())
    assert list(saved) == ["keypoints", "keypoints_gt_boxes", "detection"]
    for mode, names in STATS.items():
        assert list(saved[mode]) == names
        assert all(isinstance(v, float) for v in saved[mode].values())
    assert saved == report.to_json()


@pytest.mark.parametrize("mode", list(STATS))
def test_stats_are_pycocotools_on_the_same_detections(evaluated, annotation_file, mode):
    """The results files eval wrote, scored by pycocotools directly: all stats to 1e-6."""
    report, out = evaluated
    results = json.loads((out / f"{mode}_results.json").read_text())
    assert results == report.results[mode] and results, mode
    expected = pycocotools_stats(annotation_file, results, IOU_TYPE[mode])
    saved = json.loads((out / "eval.json").read_text())[mode]
    np.testing.assert_allclose([saved[n] for n in STATS[mode]], expected, atol=1e-6, rtol=0)


def _predict_results(pipeline, coco_mini, det_threshold=None):
    gt = json.loads((coco_mini / "annotations/person_keypoints_val.json").read_text())
    ids = {img["file_name"]: img["id"] for img in gt["images"]}
    paths = sorted(str(p) for p in (coco_mini / "images").iterdir())
    out = []
    for result in pipeline.predict(paths, det_threshold=det_threshold):
        out += keypoint_results(ids[Path(result["input_path"]).name], 1, result, 17)
    return out


def _assert_same_persons(ours, theirs):
    by_image = lambda rs: sorted(rs, key=lambda r: (r["image_id"], -r["score"]))  # noqa: E731
    ours, theirs = by_image(ours), by_image(theirs)
    assert [r["image_id"] for r in ours] == [r["image_id"] for r in theirs]
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(np.reshape(a["keypoints"], (17, 3))[:, :2], np.reshape(b["keypoints"], (17, 3))[:, :2], atol=1e-3)
        assert abs(a["score"] - b["score"]) < 1e-5


def test_end_to_end_is_what_predict_gives(evaluated, pipeline, coco_mini):
    """The end-to-end detections are predict()'s, persons and keypoints, at the pipeline's threshold."""
    report, _ = evaluated
    assert report.e2e_threshold == pipeline.det_threshold == 0.5
    _assert_same_persons(report.results["keypoints"], _predict_results(pipeline, coco_mini))


def test_predict_boxes_is_predicts_detector_stage(pipeline, coco_mini):
    paths = sorted(str(p) for p in (coco_mini / "images").iterdir())
    frames = [next(iter_frames(p)) for p in paths]
    boxes = pipeline.predict_boxes(frames)
    for b, result in zip(boxes, pipeline.predict(paths)):
        assert b.dtype == np.float32 and b.shape == (len(result["boxes"]), 5)
        np.testing.assert_array_equal(b[:, :4], [p["coordinate"] for p in result["boxes"]])
        np.testing.assert_array_equal(b[:, 4], np.float32([p["det_score"] for p in result["boxes"]]))
    assert sum(len(b) for b in pipeline.predict_boxes(frames, det_threshold=0.0)) == 400
    assert pipeline.predict_boxes([]) == []
    with pytest.raises(ValueError, match="det_threshold must be a number"):
        pipeline.predict_boxes(frames, det_threshold="high")


def test_det_threshold_sets_the_end_to_end_threshold(pipeline, coco_mini):
    report = evaluate(pipeline, coco_mini, det_threshold=0.3, modes=["keypoints"])
    assert list(report.stats) == ["keypoints"]
    theirs = _predict_results(pipeline, coco_mini, det_threshold=0.3)
    assert len(theirs) > 7  # more persons than at 0.5: the threshold took effect
    _assert_same_persons(report.results["keypoints"], theirs)


def test_ground_truth_box_mode_scores_every_labelled_person(evaluated, annotation_file):
    report, _ = evaluated
    gt = json.loads(annotation_file.read_text())
    labelled = [a for a in gt["annotations"] if a["num_keypoints"] > 0 and not a["iscrowd"]]
    results = report.results["keypoints_gt_boxes"]
    assert sorted(r["image_id"] for r in results) == sorted(a["image_id"] for a in labelled)
    # On its own boxes the real keypoint model lands on the labelled joints.
    assert report.stats["keypoints_gt_boxes"]["AP50"] > 0.8


def test_detection_mode_scores_every_box_of_the_detector(evaluated, pipeline, coco_mini):
    report, _ = evaluated
    detections = report.results["detection"]
    e2e = list(pipeline.predict(sorted(str(p) for p in (coco_mini / "images").iterdir())))
    # NanoDet's in-graph NMS keeps 100 boxes per image; all of them are ranked.
    assert len(detections) == 400
    for result in e2e:
        image_id = int(Path(result["input_path"]).stem)
        strong = sorted((d for d in detections if d["image_id"] == image_id and d["score"] > 0.5), key=lambda d: -d["score"])
        assert len(strong) == len(result["boxes"])
        for d, person in zip(strong, sorted(result["boxes"], key=lambda b: -b["det_score"])):
            x, y, w, h = d["bbox"]
            np.testing.assert_allclose([x, y, x + w, y + h], person["coordinate"], atol=1e-3)
    assert report.stats["detection"]["AR100"] >= report.stats["detection"]["AR10"]


def test_person_score_is_paddledetections_rescoring():
    joints = np.array([0.9, 0.1, 0.5, 0.2, 0.3], np.float32)
    assert person_score(0.8, joints) == pytest.approx(0.8 * (0.9 + 0.5 + 0.3) / 3)
    assert person_score(0.8, np.full(17, 0.1, np.float32)) == 0.0


def test_worst_images_are_listed_and_drawn(evaluated):
    report, out = evaluated
    worst = report.worst(5)
    assert len(worst) == 4  # every image has persons
    recalls = [r.recall("keypoints") for r in worst]
    assert recalls == sorted(recalls)
    drawn = sorted(out.glob("worst_*.jpg"))
    assert [p.name.split("_", 2)[2] for p in drawn] == [r.image.file_name for r in worst]
    assert all(p.stat().st_size > 10_000 for p in drawn)
    text = "\n".join(report.lines())
    assert "fine-tune first:" in text and worst[0].image.file_name in text


def test_cli_eval(coco_mini, real_config, evaluated, tmp_path, capsys):
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(yaml.safe_dump(real_config))
    out = tmp_path / "out"
    args = ["eval", "--pipeline", str(cfg), "--dataset", str(coco_mini), "--save_path", str(out), "-q", "--modes", "keypoints_gt_boxes"]
    assert cli_main(args) == 0
    printed = capsys.readouterr().out
    assert "on ground-truth boxes" in printed and "end to end" not in printed
    saved = json.loads((out / "eval.json").read_text())
    assert list(saved) == ["keypoints_gt_boxes"]
    np.testing.assert_allclose(list(saved["keypoints_gt_boxes"].values()), list(evaluated[0].stats["keypoints_gt_boxes"].values()), atol=1e-9)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--modes", "pose"], "modes are a comma-separated list"),
        (["--det_threshold", "1.5"], "det_threshold must be a number between 0 and 1"),
        ([], "--dataset"),
    ],
)
def test_cli_eval_bad_arguments(args, fragment, coco_mini, capsys):
    base = [] if "--dataset" in fragment else ["--dataset", str(coco_mini)]
    assert cli_main(["eval", *base, *args]) == 2
    assert fragment in capsys.readouterr().err


def test_settings_are_checked():
    with pytest.raises(ConfigError, match="det_threshold"):
        EvalSettings(det_threshold=-0.1)
    with pytest.raises(ConfigError, match="modes"):
        EvalSettings(modes=("keypoints", "pose"))
    assert EvalSettings(modes=["detection"]).modes == ("detection",)


# --- layouts -----------------------------------------------------------------


def _copy(coco_mini: Path, root: Path, annotation_names, image_folder="images") -> Path:
    shutil.copytree(coco_mini / "images", root / image_folder)
    (root / "annotations").mkdir()
    for name in annotation_names:
        shutil.copy(coco_mini / "annotations/person_keypoints_val.json", root / "annotations" / name)
    return root


def test_paddlex_keypoint_layout(coco_mini, tmp_path, pipeline, evaluated):
    """PaddleX's check_dataset reads annotations/instance_{train,val}.json and images/; val is evaluated."""
    root = _copy(coco_mini, tmp_path / "pdx", ["instance_train.json", "instance_val.json"])
    files = locate(root)
    assert (files.annotations.name, files.layout, files.images) == ("instance_val.json", "PaddleX", root / "images")
    report = evaluate(pipeline, root, modes=["keypoints_gt_boxes"])
    assert report.stats["keypoints_gt_boxes"] == evaluated[0].stats["keypoints_gt_boxes"]


def test_coco_download_layout_and_splits(coco_mini, tmp_path):
    """COCO's own unpacking: annotations/person_keypoints_val2017.json next to val2017/; train is not evaluated."""
    root = _copy(coco_mini, tmp_path / "coco", ["person_keypoints_train2017.json", "person_keypoints_val2017.json"], "val2017")
    files = locate(root)
    assert (files.annotations.name, files.images, files.layout) == ("person_keypoints_val2017.json", root / "val2017", "COCO")


def test_ambiguous_folder_is_refused_and_annotations_picks(coco_mini, tmp_path):
    root = _copy(coco_mini, tmp_path / "both", ["person_keypoints_val.json", "instance_val.json"])
    with pytest.raises(DatasetError, match=r"2 annotation files could be the one to evaluate \(person_keypoints_val.json, instance_val.json\); pick one with --annotations"):
        locate(root)
    assert locate(root, annotations="instance_val.json").layout == "PaddleX"
    assert locate(root, annotations=root / "annotations/person_keypoints_val.json").layout == "COCO"
    with pytest.raises(DatasetError, match="annotation file not found"):
        locate(root, annotations="nope.json")


@pytest.mark.parametrize(
    "setup, fragment",
    [
        (lambda r: None, "no annotations/ folder"),
        (lambda r: (r / "annotations").mkdir(), "no keypoint annotation file (found no .json files"),
        (lambda r: ((r / "annotations").mkdir(), (r / "annotations/instances_val2017.json").write_text("{}")), "found instances_val2017.json"),
    ],
)
def test_folders_without_a_dataset_say_what_is_missing(tmp_path, setup, fragment):
    root = tmp_path / "d"
    root.mkdir()
    setup(root)
    with pytest.raises(DatasetError) as info:
        locate(root)
    assert fragment in str(info.value) and str(root) in str(info.value)


def test_missing_image_folder(coco_mini, tmp_path):
    root = _copy(coco_mini, tmp_path / "noimg", ["person_keypoints_val2017.json"], "pictures")
    with pytest.raises(DatasetError, match=r"no image folder \(looked for images/ and val2017/\)"):
        locate(root)


# --- damaged datasets ----------------------------------------------------------


def test_unreadable_image_is_left_out_and_the_rest_scored(coco_mini, tmp_path, pipeline, annotation_file, capsys):
    """A JPEG cut short passes the header check and fails to decode: the
    evaluation names it, scores the other images (as pycocotools does on
    them) and the command exits 1."""
    root = _copy(coco_mini, tmp_path / "cut", ["person_keypoints_val.json"])
    victim = root / "images/000000040083.jpg"
    victim.write_bytes(victim.read_bytes()[:20_000])
    report = evaluate(pipeline, root, modes=["keypoints_gt_boxes"])
    assert [name for name, _ in report.failed] == [str(victim)]
    assert "truncated" in report.failed[0][1]
    kept = {785, 196141, 197388}
    assert {r["image_id"] for r in report.results["keypoints_gt_boxes"]} == kept
    expected = pycocotools_stats(annotation_file, report.results["keypoints_gt_boxes"], "keypoints", kept)
    np.testing.assert_allclose(list(report.stats["keypoints_gt_boxes"].values()), expected, atol=1e-6)

    cfg = tmp_path / "p.yaml"
    cfg.write_text(yaml.safe_dump(pipeline.config.to_dict()))
    assert cli_main(["eval", "--pipeline", str(cfg), "--dataset", str(root), "-q", "--modes", "keypoints_gt_boxes"]) == 1
    captured = capsys.readouterr()
    assert "left out (unreadable)" in captured.out and "000000040083.jpg" in captured.out
    assert "1 image(s) could not be read" in captured.err


def test_unusable_dataset_is_refused_before_the_pipeline_is_built(coco_mini, tmp_path):
    root = _copy(coco_mini, tmp_path / "bad", ["person_keypoints_val.json"])
    (root / "images/000000000785.jpg").unlink()
    with pytest.raises(DatasetError, match=r"cannot be evaluated: error: .*000000000785.jpg: image id 785: image file not found"):
        evaluate(lambda: pytest.fail("the pipeline was built for an unusable dataset"), root)


@pytest.mark.parametrize("quiet", [False, True])
def test_eval_stderr_is_posepipe_lines_each_once(coco_mini, tmp_path, quiet):
    """Run as a user runs it (a fresh process, where Paddle's import puts an
    INFO handler on the root logger): posepipe's own lines only, each once;
    -q leaves only the error. A truncated image gives eval its one warning."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    root = _copy(coco_mini, tmp_path / "cut", ["person_keypoints_val.json"])
    victim = root / "images/000000040083.jpg"
    data = victim.read_bytes()[:20_000]
    victim.unlink()
    victim.write_bytes(data)
    argv = ["eval", "--pipeline", "examples/shared_real_models.yaml", "--dataset", str(root), "--device", "cpu",
            "--cpu_threads", "1", "--modes", "keypoints_gt_boxes", *(["-q"] if quiet else [])]
    proc = subprocess.run([sys.executable, "-m", "posepipe", *argv], cwd=repo, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr
    assert "left out (unreadable)" in proc.stdout
    lines = [ln for ln in proc.stderr.replace("\r", "\n").splitlines() if ln.strip()]
    messages = [ln for ln in lines if ln.startswith("posepipe: ")]
    failure = "posepipe: error: eval: 1 image(s) could not be read and were left out (listed above)"
    if quiet:
        assert lines == [failure], proc.stderr
        return
    assert len(messages) == len(set(messages)), proc.stderr
    assert [m for m in messages if "warning" in m and "000000040083.jpg" in m] != [], proc.stderr
    assert messages[-1] == failure
    others = [ln for ln in lines if not ln.startswith("posepipe: ")]
    assert all("img/s" in ln or "img]" in ln or "%|" in ln for ln in others), others  # the progress bar only
