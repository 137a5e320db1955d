"""Fixtures shared by all test files. Keep this small: a fixture used by one
file belongs in that file."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """`../shared` next to the repo: the test models, photos and references.
    Its absence is a broken checkout, so it fails the test instead of skipping."""
    path = REPO.parent / "shared"
    if not (path / "models").is_dir():
        pytest.fail(f"test assets missing: {path} (with models/ and photos/) must sit next to the repo at {REPO}")
    return path


def _listing(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


@pytest.fixture(scope="session", autouse=True)
def shared_stays_untouched(shared_dir):
    """No test may write into ../shared, whether or not its files are writable
    (CI's copy has no write bits but runs as root; a user's copy is writable)."""
    before = _listing(shared_dir)
    yield
    after = _listing(shared_dir)
    added = sorted(set(after) - set(before))
    changed = sorted(k for k in before if k in after and after[k] != before[k])
    removed = sorted(set(before) - set(after))
    assert not (added or changed or removed), f"the tests wrote into {shared_dir}: added {added[:5]}, changed {changed[:5]}, removed {removed[:5]}"


def real_models_config(shared_dir: Path) -> dict:
    """PaddleX's pipeline config for the real models in ../shared/models/real,
    with the official names those models stand in for."""
    root = shared_dir / "models" / "real"
    return {
        "pipeline_name": "human_keypoint_detection",
        "SubModules": {
            "ObjectDetection": {
                "module_name": "object_detection",
                "model_name": "PP-YOLOE-S_human",
                "model_dir": str(root / "person_detector_nanodet"),
                "batch_size": 1,
                "threshold": None,
                "img_size": None,
            },
            "KeypointDetection": {
                "module_name": "keypoint_detection",
                "model_name": "PP-TinyPose_256x192",
                "model_dir": str(root / "keypoint_movenet_thunder"),
                "batch_size": 1,
                "flip": False,
                "use_udp": None,
            },
        },
    }


@pytest.fixture(scope="session")
def real_config(shared_dir) -> dict:
    return real_models_config(shared_dir)


@pytest.fixture(scope="session", autouse=True)
def session_posepipe_home(tmp_path_factory):
    """posepipe's caches for the whole run (ONNX conversions, compiled models,
    measured threads / batch sizes / backends): a temporary folder, never the
    user's ~/.cache. Measured decisions are cached however busy the machine
    is, so that a test's second start reads what its first measured."""
    from posepipe.runtime import timing

    home = tmp_path_factory.mktemp("posepipe_session_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("POSEPIPE_HOME", str(home))
        mp.setattr(timing, "BUSY_SHARE", float("inf"))
        yield home


@pytest.fixture(scope="module")
def posepipe_home(tmp_path_factory):
    """A fresh POSEPIPE_HOME for one test module: ONNX conversions, TensorRT
    engines and use_hpip decisions go there, not to ~/.cache or ../shared
    (read-only), and the module's first use_hpip selection is measured."""
    home = tmp_path_factory.mktemp("posepipe_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("POSEPIPE_HOME", str(home))
        yield home
