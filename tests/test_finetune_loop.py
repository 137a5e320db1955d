"""The README's fine-tuning loop, as a user runs it: `posepipe eval`, read
which module fails, point the pipeline YAML's model_dir at another export,
`posepipe eval` again. Swapping a model for its Paddle 2.x twin (PaddleX
naming or PaddleDetection's layout) must not move a number; swapping in a
worse module must lower that module's AP and turn the advice to it."""
from __future__ import annotations

import copy
import json

import pytest
import yaml

from posepipe.cli import main as cli_main


@pytest.fixture(scope="module")
def run_eval(real_config, shared_dir, tmp_path_factory):
    work = tmp_path_factory.mktemp("loop")

    def run(name: str, det: str = None, kpt: str = None):
        config = copy.deepcopy(real_config)
        if det:
            config["SubModules"]["ObjectDetection"]["model_dir"] = str(shared_dir / "models" / det)
        if kpt:
            config["SubModules"]["KeypointDetection"]["model_dir"] = str(shared_dir / "models" / kpt)
        (work / f"{name}.yaml").write_text(yaml.safe_dump(config))
        out = work / name
        args = ["eval", "--pipeline", str(work / f"{name}.yaml"), "--dataset", str(shared_dir / "eval/coco_mini"), "--save_path", str(out), "-q"]
        return cli_main(args), json.loads((out / "eval.json").read_text())

    return run


@pytest.fixture(scope="module")
def baseline(run_eval):
    code, stats = run_eval("pir")
    assert code == 0
    return stats


@pytest.mark.parametrize("kpt", ["legacy/keypoint_movenet_thunder", "legacy/keypoint_movenet_thunder_ppdet"])
def test_swapping_in_the_legacy_twin_changes_nothing(run_eval, baseline, kpt):
    code, stats = run_eval(kpt.replace("/", "_"), kpt=kpt)
    assert code == 0
    for mode in baseline:
        assert stats[mode] == pytest.approx(baseline[mode], abs=1e-9), mode


def test_a_worse_keypoint_model_shows_in_its_own_mode(run_eval, baseline, capsys):
    code, stats = run_eval("synthetic_kpt", kpt="official_arch/PP-TinyPose_256x192")
    assert code == 0
    assert stats["keypoints_gt_boxes"]["AP"] < baseline["keypoints_gt_boxes"]["AP"] - 0.3
    assert stats["keypoints"]["AP"] < baseline["keypoints"]["AP"] - 0.3
    assert stats["detection"] == baseline["detection"]  # same detector, same boxes
    assert "fine-tune first: the keypoint model" in capsys.readouterr().out


def test_a_worse_detector_shows_in_its_own_mode(run_eval, baseline, capsys):
    code, stats = run_eval("synthetic_det", det="official_arch/PP-YOLOE-S_human")
    assert code == 0
    assert stats["detection"]["AP"] < baseline["detection"]["AP"] - 0.3
    assert stats["keypoints"]["AP"] < baseline["keypoints"]["AP"] - 0.2
    assert stats["keypoints_gt_boxes"] == baseline["keypoints_gt_boxes"]  # same keypoint model, same boxes
    assert "fine-tune first: the person detector" in capsys.readouterr().out
