"""models/official.py: name -> directory, against a local HTTP server that
serves a tarball built from a shared model (no internet needed)."""
from __future__ import annotations

import functools
import http.server
import io
import os
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from posepipe.errors import ModelError
from posepipe.models import official
from posepipe.models.official import resolve_model_dir, safe_extract
from posepipe.models.spec import load_model_spec

NAME = "PP-TinyPose_128x96"


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests: list = []

    def do_GET(self):
        type(self).requests.append(self.path)
        if self.path.startswith("/drip/"):  # a tarball that never finishes arriving
            self.send_response(200)
            self.send_header("Content-Length", str(64 << 20))
            self.end_headers()
            try:
                while True:
                    self.wfile.write(b"\0" * 1024)
                    self.wfile.flush()
                    time.sleep(0.05)
            except OSError:
                pass
            return
        super().do_GET()

    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture(scope="module")
def served(shared_dir, tmp_path_factory):
    """An HTTP server on 127.0.0.1 whose `/official/` holds `<NAME>_infer.tar`
    laid out as PaddleX's hoster has it."""
    root = tmp_path_factory.mktemp("served")
    (root / "official").mkdir()
    with tarfile.open(root / "official" / f"{NAME}_infer.tar", "w") as tar:
        tar.add(shared_dir / "models/official_arch" / NAME, arcname=f"{NAME}_infer")
    handler = type("Handler", (_Handler,), {"requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


@pytest.fixture
def env(tmp_path, monkeypatch, served):
    """Empty PaddleX and posepipe caches, the local server as the model host."""
    root, url, handler = served
    monkeypatch.setenv("PADDLE_PDX_CACHE_HOME", str(tmp_path / "paddlex"))
    monkeypatch.setenv("POSEPIPE_HOME", str(tmp_path / "posepipe"))
    monkeypatch.setenv("POSEPIPE_MODEL_BASE_URL", f"{url}/official")
    handler.requests.clear()
    return tmp_path, root, url, handler


def _host_elsewhere(env, monkeypatch) -> Path:
    """A fresh folder on the server, made the model host; tests put their own archives there."""
    tmp, root, url, _ = env
    folder = root / tmp.name
    folder.mkdir()
    monkeypatch.setenv("POSEPIPE_MODEL_BASE_URL", f"{url}/{tmp.name}")
    return folder


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_download_unpack_and_reuse(env, shared_dir):
    tmp, _, _, handler = env
    path = resolve_model_dir(NAME, None)
    assert path == tmp / "posepipe" / "models" / NAME
    assert handler.requests == [f"/official/{NAME}_infer.tar"]
    assert load_model_spec(path).model_name == NAME
    original = shared_dir / "models/official_arch" / NAME
    for name in ("inference.json", "inference.pdiparams", "inference.yml"):
        assert (path / name).read_bytes() == (original / name).read_bytes()
    # Nothing but the model is left in the cache (temp files cleaned up).
    assert os.listdir(path.parent) == [NAME]
    # Second time: from the cache, no request.
    assert resolve_model_dir(NAME, None) == path
    assert len(handler.requests) == 1


def test_cache_dir_argument(env):
    tmp = env[0]
    assert resolve_model_dir(NAME, None, cache_dir=tmp / "elsewhere") == tmp / "elsewhere" / NAME


def test_concurrent_downloads_end_with_one_good_copy(env):
    tmp = env[0]
    with ThreadPoolExecutor(3) as pool:
        paths = list(pool.map(lambda _: resolve_model_dir(NAME, None), range(3)))
    assert set(paths) == {tmp / "posepipe" / "models" / NAME}
    assert load_model_spec(paths[0]).model_name == NAME
    assert os.listdir(paths[0].parent) == [NAME]


def test_paddlex_cache_is_reused(env, shared_dir, monkeypatch):
    tmp, _, _, handler = env
    cached = tmp / "paddlex" / "official_models" / NAME
    cached.parent.mkdir(parents=True)
    cached.symlink_to(shared_dir / "models/official_arch" / NAME)
    monkeypatch.setenv("POSEPIPE_MODEL_BASE_URL", f"http://127.0.0.1:{_closed_port()}")
    assert resolve_model_dir(NAME, None) == cached
    assert handler.requests == []


def test_broken_caches_are_skipped(env):
    tmp, _, _, handler = env
    (tmp / "paddlex" / "official_models" / NAME).mkdir(parents=True)  # empty: not a model
    broken = tmp / "posepipe" / "models" / NAME
    broken.mkdir(parents=True)
    (broken / "inference.yml").write_text("not: [a model")
    path = resolve_model_dir(NAME, None)
    assert path == broken and load_model_spec(path).model_name == NAME
    assert len(handler.requests) == 1


def test_model_dir_wins_and_unknown_names(tmp_path):
    assert resolve_model_dir("anything", str(tmp_path)) == tmp_path
    with pytest.raises(ModelError, match="unknown model name 'PP-Nope'.*PP-YOLOE-S_human.*PP-TinyPose_256x192"):
        resolve_model_dir("PP-Nope", None)


def test_default_url_is_paddlex_bos(monkeypatch):
    monkeypatch.delenv("POSEPIPE_MODEL_BASE_URL", raising=False)
    assert official.model_url("PP-YOLOE-S_human") == (
        "https://paddle-model-ecology.bj.bcebos.com/paddlex/official_inference_model/paddle3.0.0/PP-YOLOE-S_human_infer.tar"
    )


def test_http_404_names_url_and_fix(env, monkeypatch):
    url = env[2]
    monkeypatch.setenv("POSEPIPE_MODEL_BASE_URL", url + "/missing")
    with pytest.raises(ModelError) as info:
        resolve_model_dir(NAME, None)
    message = str(info.value)
    assert f"{url}/missing/{NAME}_infer.tar" in message and "HTTP error 404" in message and "model_dir" in message


def test_unreachable_host_names_url_and_fix(env, monkeypatch):
    url = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("POSEPIPE_MODEL_BASE_URL", url)
    with pytest.raises(ModelError) as info:
        resolve_model_dir(NAME, None)
    message = str(info.value)
    assert f"{url}/{NAME}_infer.tar" in message and "model_dir" in message and "POSEPIPE_MODEL_BASE_URL" in message


def test_archive_with_the_wrong_model_is_refused(env, shared_dir, monkeypatch):
    folder = _host_elsewhere(env, monkeypatch)
    other = "PP-TinyPose_256x192"
    with tarfile.open(folder / f"{other}_infer.tar", "w") as tar:
        tar.add(shared_dir / "models/official_arch" / NAME, arcname=f"{other}_infer")  # mislabelled
    with pytest.raises(ModelError, match=f"holds '{NAME}', not '{other}'"):
        resolve_model_dir(other, None)


# --- hostile archives ---------------------------------------------------------


def _tar(path: Path, *members: tarfile.TarInfo) -> Path:
    with tarfile.open(path, "w") as tar:
        for m in members:
            tar.addfile(m, io.BytesIO(b"x" * m.size) if m.isfile() else None)
    return path


def _file(name: str) -> tarfile.TarInfo:
    m = tarfile.TarInfo(name)
    m.size = 1
    return m


def _link(name: str, target: str, kind=tarfile.SYMTYPE) -> tarfile.TarInfo:
    m = tarfile.TarInfo(name)
    m.type, m.linkname = kind, target
    return m


def _device(name: str) -> tarfile.TarInfo:
    m = tarfile.TarInfo(name)
    m.type = tarfile.CHRTYPE
    return m


@pytest.mark.parametrize(
    "member, why",
    [
        (_file("../evil.txt"), "'..'"),
        (_file("m/../../evil.txt"), "'..'"),
        (_file("/tmp/evil.txt"), "absolute path"),
        (_link("m/link", "../../outside"), "leads outside"),
        (_link("m/link", "/etc/passwd"), "absolute path"),
        (_link("m/hard", "../outside", tarfile.LNKTYPE), "leads outside"),
        (_device("m/dev"), "device"),
    ],
)
def test_hostile_members_are_refused(tmp_path, member, why):
    archive = _tar(tmp_path / "bad.tar", _file("m/inference.yml"), member)
    dest = tmp_path / "out" / "dest"
    with pytest.raises(ModelError, match=f"refusing archive member.*{why}"):
        safe_extract(archive, dest)
    assert not (dest / "m").exists()  # checked before anything is written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tar", "out"]


def test_links_inside_the_archive_are_fine(tmp_path):
    archive = _tar(tmp_path / "ok.tar", _file("m/a.txt"), _link("m/b.txt", "a.txt"))
    safe_extract(archive, tmp_path / "out")
    assert (tmp_path / "out/m/b.txt").read_bytes() == b"x"


def test_hostile_download_is_refused(env, monkeypatch):
    tmp = env[0]
    _tar(_host_elsewhere(env, monkeypatch) / f"{NAME}_infer.tar", _file(f"{NAME}_infer/inference.yml"), _file("../../escaped.txt"))
    with pytest.raises(ModelError, match="refusing archive member '../../escaped.txt'"):
        resolve_model_dir(NAME, None)
    assert not list(tmp.rglob("escaped.txt"))
    assert os.listdir(tmp / "posepipe" / "models") == []


def test_not_a_tarball(env, monkeypatch):
    (_host_elsewhere(env, monkeypatch) / f"{NAME}_infer.tar").write_bytes(b"<html>captive portal</html>")
    with pytest.raises(ModelError, match="not a valid tar archive"):
        resolve_model_dir(NAME, None)


# --- link chains ---------------------------------------------------------------


@pytest.mark.parametrize(
    "members, culprit",
    [
        # Each link alone stays inside; followed through the first, the second leaves.
        ([_link("m/up", ".."), _link("m/out", "up/..")], "m/out"),
        ([_link("m/up", ".."), _link("m/out", "up/../..")], "m/out"),
        # A file written through a folder link that leaves.
        ([_link("m/up", ".."), _link("m/out", "up/.."), _file("m/out/evil.txt")], "m/out"),
        # A hard link whose target path passes through a symlink that leaves.
        ([_link("m/up", ".."), _link("m/h", "m/up/../../etc/passwd", tarfile.LNKTYPE)], "m/h"),
        # Links that point at each other.
        ([_link("m/a", "b"), _link("m/b", "a"), _file("m/a/x")], "m/a/x"),
    ],
)
def test_link_chains_that_leave_are_refused_before_extraction(tmp_path, members, culprit):
    archive = _tar(tmp_path / "chain.tar", _file("m/inference.yml"), *members)
    dest = tmp_path / "out" / "dest"
    with pytest.raises(ModelError, match=f"refusing archive member '{culprit}'"):
        safe_extract(archive, dest)
    assert not (dest / "m").exists()


def test_links_that_resolve_inside_through_other_links_are_fine(tmp_path):
    archive = _tar(
        tmp_path / "ok.tar", _file("m/sub/a.txt"), _link("m/s", "sub"), _link("m/b.txt", "s/a.txt"), _link("m/up", ".")
    )
    safe_extract(archive, tmp_path / "out")
    assert (tmp_path / "out/m/b.txt").read_bytes() == b"x"


# --- deadline and interruption ------------------------------------------------------


def _partials(cache: Path) -> list:
    return sorted(p.name for p in cache.glob(".*partial*")) if cache.is_dir() else []


def test_a_download_that_never_ends_stops_at_the_deadline(env, monkeypatch):
    tmp, _, url, _ = env
    monkeypatch.setenv("POSEPIPE_MODEL_BASE_URL", f"{url}/drip")
    monkeypatch.setattr(official, "DOWNLOAD_DEADLINE_S", 1.0)
    started = time.monotonic()
    with pytest.raises(ModelError, match=r"could not download .*: download timed out after 1 s; set model_dir"):
        resolve_model_dir(NAME, None)
    assert time.monotonic() - started < 3.0
    assert os.listdir(tmp / "posepipe" / "models") == []


_DOWNLOADER = "from posepipe.models.official import resolve_model_dir; resolve_model_dir({name!r}, None)"


def _start_download_subprocess(env) -> subprocess.Popen:
    tmp, _, url, _ = env
    child_env = dict(os.environ, POSEPIPE_MODEL_BASE_URL=f"{url}/drip")
    # A shell's background job starts with SIGINT ignored, and Python then
    # keeps it ignored: give the child a terminal's default, as Ctrl-C meets it.
    proc = subprocess.Popen([sys.executable, "-c", _DOWNLOADER.format(name=NAME)], env=child_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    cache = tmp / "posepipe" / "models"
    deadline = time.monotonic() + 60
    while not any((cache / p / "model.tar").exists() for p in _partials(cache)):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    return proc


def test_ctrl_c_during_a_download_leaves_no_folder_behind(env):
    proc = _start_download_subprocess(env)
    proc.send_signal(signal.SIGINT)
    try:
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode != 0 and b"KeyboardInterrupt" in stderr
    assert _partials(env[0] / "posepipe" / "models") == []


def test_a_killed_download_is_swept_by_the_next_one(env, monkeypatch):
    tmp, _, url, handler = env
    proc = _start_download_subprocess(env)
    proc.kill()
    proc.communicate(timeout=30)
    cache = tmp / "posepipe" / "models"
    assert len(_partials(cache)) == 1  # nothing could clean up after SIGKILL
    monkeypatch.setenv("POSEPIPE_MODEL_BASE_URL", f"{url}/official")
    assert resolve_model_dir(NAME, None) == cache / NAME
    assert os.listdir(cache) == [NAME]
