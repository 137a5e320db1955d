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


def load_image(path: Path):
    """A PIL image read fully, its file closed (an unclosed one warns later, in another test)."""
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        return image.copy()


def break_tiff_page(path: Path, page: int) -> None:
    """Gives page `page` of a little-endian TIFF an unknown compression (12345):
    its directory stays readable, its pixels cannot be decoded."""
    import struct

    data = bytearray(path.read_bytes())
    offset = struct.unpack_from("<I", data, 4)[0]
    for _ in range(page):
        offset = struct.unpack_from("<I", data, offset + 2 + 12 * struct.unpack_from("<H", data, offset)[0])[0]
    for i in range(struct.unpack_from("<H", data, offset)[0]):
        entry = offset + 2 + 12 * i
        if struct.unpack_from("<H", data, entry)[0] == 259:  # Compression
            struct.pack_into("<H", data, entry + 8, 12345)
    path.write_bytes(bytes(data))


def local_ray():
    """A local Ray for one test module: 2 CPUs, no dashboard. Ray has no
    loopback-only mode (it binds the machine's own address, which the kernel
    routes locally); Serve's HTTP proxy is put on 127.0.0.1 by the tests."""
    import logging

    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    return ray


def kill_processes(title: str) -> list:
    """SIGKILL this test process's descendants whose command line contains
    `title` (Ray names its worker processes after their actor, e.g.
    "ray::ServeReplica:app:pipeline"); their pids."""
    import os
    import signal

    killed = []
    for pid in processes(title):
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except ProcessLookupError:
            pass
    return killed


def processes(title: str) -> list:
    """Pids of this process's descendants whose command line contains `title`."""
    import os

    parents = {}
    titles = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
                titles[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except (OSError, ValueError, IndexError):
                pass

    def descends(pid: int) -> bool:
        seen = set()
        while pid in parents and pid not in seen:
            seen.add(pid)
            pid = parents[pid]
            if pid == os.getpid():
                return True
        return False

    return [pid for pid, text in titles.items() if title in text and descends(pid)]
