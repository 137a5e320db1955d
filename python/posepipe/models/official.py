"""Official model names -> a model directory on disk.

Order of preference: an explicit `model_dir`; PaddleX's own cache
(`$PADDLE_PDX_CACHE_HOME/official_models/<name>`, default `~/.paddlex/...`), so
models PaddleX already fetched are reused; posepipe's cache
(`$POSEPIPE_HOME/models/<name>`, default `~/.cache/posepipe/models/<name>`);
else the tarball PaddleX 3.7.2 downloads from its BOS hoster
(`<base>/<name>_infer.tar`, base overridable with `POSEPIPE_MODEL_BASE_URL`).
"""
from __future__ import annotations

import logging
import os
import posixpath
import shutil
import socket
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Dict, Optional, Union

from ..download import DownloadError, DownloadPolicy, fetch
from ..errors import ModelError
from .spec import DETECTOR, KEYPOINT, load_model_spec

log = logging.getLogger("posepipe")

# The official models of PaddleX's human_keypoint_detection pipeline, and their role.
OFFICIAL_MODELS = {
    "PP-YOLOE-S_human": DETECTOR,
    "PP-YOLOE-L_human": DETECTOR,
    "PP-TinyPose_128x96": KEYPOINT,
    "PP-TinyPose_256x192": KEYPOINT,
}
DEFAULT_BASE_URL = "https://paddle-model-ecology.bj.bcebos.com/paddlex/official_inference_model/paddle3.0.0"
# The largest of these tarballs is ~200 MB; the cap only stops a runaway server.
MAX_DOWNLOAD_BYTES = 1 << 30
# The whole download (200 MB at 1 MB/s takes 200 s), and the longest silence of the connection.
DOWNLOAD_DEADLINE_S = 1800.0
DOWNLOAD_IDLE_TIMEOUT_S = 60.0
# Work folders of downloads in progress: `.<name>.partial-<host>-<pid>-<random>` in the cache.
_PARTIAL = ".partial-"
# A work folder this old is left over whatever its process (other hosts sharing the cache included).
_PARTIAL_MAX_AGE_S = 24 * 3600.0
# Links one archive member may pass through before it is refused as a loop.
_MAX_LINK_HOPS = 40


def resolve_model_dir(
    model_name: str, model_dir: Union[str, os.PathLike, None], cache_dir: Union[str, os.PathLike, None] = None
) -> Path:
    """The directory to load `model_name` from, downloading it when needed.
    `cache_dir` replaces posepipe's model cache folder (it holds `<name>/`)."""
    if model_dir is not None:
        return Path(model_dir).expanduser()  # offline: load_model_spec checks it
    if model_name not in OFFICIAL_MODELS:
        raise ModelError(
            f"unknown model name {model_name!r}: posepipe can fetch {', '.join(OFFICIAL_MODELS)}; "
            "for any other model set model_dir to its exported directory"
        )
    for candidate in (paddlex_cache_dir() / model_name, _cache_root(cache_dir) / model_name):
        if _is_valid(candidate, model_name):
            log.info("posepipe: using cached model %s at %s", model_name, candidate)
            return candidate
    return download_model(model_name, _cache_root(cache_dir))


def paddlex_cache_dir() -> Path:
    """Where PaddleX keeps the official models it downloaded."""
    home = os.environ.get("PADDLE_PDX_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".paddlex")
    return Path(home) / "official_models"


def posepipe_cache_dir() -> Path:
    home = os.environ.get("POSEPIPE_HOME")
    return Path(home) / "models" if home else Path.home() / ".cache" / "posepipe" / "models"


def model_url(model_name: str) -> str:
    base = os.environ.get("POSEPIPE_MODEL_BASE_URL") or DEFAULT_BASE_URL
    return f"{base.rstrip('/')}/{model_name}_infer.tar"


def download_model(model_name: str, cache_root: Path) -> Path:
    """Fetch, unpack and check `<name>_infer.tar`, then move it into
    `cache_root/<name>` with one rename, so a reader never sees half a model
    and two processes downloading at once both end with the same good copy."""
    url = model_url(model_name)
    final = cache_root / model_name
    try:
        cache_root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ModelError(f"cannot create the model cache {cache_root}: {e}; set POSEPIPE_HOME or model_dir") from None
    _sweep_partials(cache_root)
    log.info("posepipe: downloading %s from %s", model_name, url)
    # Removed below on any error or Ctrl-C; a process killed outright leaves it
    # behind, and the next download in this cache sweeps it away.
    work = Path(tempfile.mkdtemp(prefix=f".{model_name}{_PARTIAL}{socket.gethostname()}-{os.getpid()}-", dir=cache_root))
    try:
        archive = work / "model.tar"
        _fetch(url, archive)
        unpacked = work / "unpacked"
        safe_extract(archive, unpacked)
        found = _find_model_dir(unpacked, url)
        spec = load_model_spec(found)
        if spec.model_name != model_name:
            raise ModelError(f"{url}: the archive holds {spec.model_name!r}, not {model_name!r}")
        if final.exists() and not _is_valid(final, model_name):
            _move_aside(final, work)
        try:
            os.rename(found, final)
        except OSError:
            # Another process put a model there first; use it if it is good.
            if not _is_valid(final, model_name):
                raise ModelError(f"{final}: could not move the downloaded model into place") from None
        return final
    finally:
        shutil.rmtree(work, ignore_errors=True)


def safe_extract(archive: Path, dest: Path) -> None:
    """Unpack a tar archive of files, folders and links that stay inside `dest`.
    Absolute names, `..`, devices and fifos are refused, and so is any member
    whose path or link target leads outside once the archive's own symlinks
    are followed (a chain of links each harmless on its own included), all
    before anything is written."""
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            symlinks: Dict[str, str] = {}
            total = 0
            for m in members:
                _check_member(m, symlinks, archive)
                total += max(m.size, 0)
            if total > MAX_DOWNLOAD_BYTES * 4:
                raise ModelError(f"{archive}: unpacks to {total} bytes, more than posepipe accepts")
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 / 3.12: a second line of defence
                tar.extractall(root, members=members, filter="data")
            else:
                tar.extractall(root, members=members)
    except (tarfile.TarError, EOFError) as e:
        raise ModelError(f"{archive}: not a valid tar archive ({e})") from None


def _check_member(m: tarfile.TarInfo, symlinks: Dict[str, str], archive: Path) -> None:
    """Refuse `m` unless it, and any link it is, stays inside the target
    folder. `symlinks` holds the archive's symlinks seen so far (member path
    -> target), which later members' paths are resolved through."""

    def refuse(why: str):
        raise ModelError(f"{archive}: refusing archive member {m.name!r}: {why}")

    if not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
        refuse("not a regular file, folder or link (device or fifo)")
    if os.path.isabs(m.name) or m.name.startswith(("/", "\\")):
        refuse("absolute path")
    if ".." in Path(m.name).parts:
        refuse("'..' in the path")
    name = posixpath.normpath(m.name.replace("\\", "/"))
    # Where the member is written: its folder through the links before it
    # (extraction writes a file through a link of the same name, too).
    written = _resolve_inside(name, symlinks, follow_last=not (m.issym() or m.islnk()))
    if written is None:
        refuse("it would be written outside the target folder (through a link)")
    if m.issym() or m.islnk():
        if os.path.isabs(m.linkname) or m.linkname.startswith(("/", "\\")):
            refuse("link to an absolute path")
        # Symlinks resolve from their own folder; hard links from the archive root.
        base = posixpath.dirname(name) if m.issym() else ""
        target = posixpath.join(base, m.linkname.replace("\\", "/"))
        if _resolve_inside(target, symlinks, follow_last=True) is None:
            refuse(f"link to {m.linkname!r} leads outside the target folder")
        if m.issym():
            symlinks[name] = m.linkname.replace("\\", "/")


def _resolve_inside(path: str, symlinks: Dict[str, str], follow_last: bool, hops: int = 0) -> Optional[str]:
    """`path` (relative to the archive root) with the archive's symlinks
    followed component by component, or None when it leaves the root (or
    loops). The target folder is new and empty, so these are the only links."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    resolved: list = []
    for i, part in enumerate(parts):
        if part == "..":
            if not resolved:
                return None
            resolved.pop()
            continue
        candidate = "/".join(resolved + [part])
        last = i == len(parts) - 1
        if candidate in symlinks and (follow_last or not last):
            hops += 1
            if hops > _MAX_LINK_HOPS:
                return None
            target = symlinks[candidate]
            if target.startswith("/"):
                return None
            inner = _resolve_inside(posixpath.join("/".join(resolved), target), symlinks, True, hops)
            if inner is None:
                return None
            resolved = [p for p in inner.split("/") if p]
        else:
            resolved.append(part)
    return "/".join(resolved)


def _fetch(url: str, target: Path) -> None:
    hint = "set model_dir in the pipeline config to a local model directory, or POSEPIPE_MODEL_BASE_URL to a mirror"
    policy = DownloadPolicy(
        timeout_s=DOWNLOAD_DEADLINE_S,
        idle_timeout_s=DOWNLOAD_IDLE_TIMEOUT_S,
        max_bytes=MAX_DOWNLOAD_BYTES,
        accept="*/*",
    )
    bar = _NoBar()

    def started(length: Optional[int]) -> None:
        nonlocal bar
        bar = _progress(length or 0, url)

    def write(chunk: bytes) -> None:
        out.write(chunk)
        bar.update(len(chunk))

    try:
        with open(target, "wb") as out:
            try:
                fetch(url, policy, write, on_length=started)
            finally:
                bar.close()
    except DownloadError as e:
        raise ModelError(f"could not download {url}: {e.problem}; {hint}") from None
    except OSError as e:  # writing the archive
        raise ModelError(f"could not download {url}: cannot write {target} ({e.strerror or e})") from None


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, url: str):
    """A tqdm bar on stderr for big downloads on a terminal; nothing otherwise."""
    if total < (8 << 20) or not sys.stderr.isatty():
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1], file=sys.stderr)


def _find_model_dir(unpacked: Path, url: str) -> Path:
    # Official tarballs hold `<name>_infer/`; accept any single folder with an inference.yml.
    found = sorted(p.parent for p in unpacked.rglob("inference.yml"))
    if len(found) != 1:
        raise ModelError(f"{url}: expected one model directory (with inference.yml) in the archive, found {len(found)}")
    return found[0]


def _is_valid(path: Path, model_name: str) -> bool:
    if not path.is_dir():
        return False
    try:
        return load_model_spec(path).model_name == model_name
    except ModelError as e:
        log.warning("posepipe: ignoring the cached model at %s: %s", path, e)
        return False


def _cache_root(cache_dir: Optional[Union[str, os.PathLike]]) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else posepipe_cache_dir()


def _move_aside(path: Path, work: Path) -> None:
    """Clear a broken cached copy without a window where a half-deleted folder sits at `path`."""
    try:
        os.rename(path, work / "old")
    except OSError as e:
        raise ModelError(f"{path}: a broken cached model is in the way and cannot be moved ({e}); remove it") from None


def _sweep_partials(cache_root: Path) -> None:
    """Remove the work folders of downloads whose process is gone (killed
    before it could clean up), and any older than a day."""
    here = socket.gethostname()
    for entry in cache_root.glob(f".*{_PARTIAL}*"):
        host_pid = entry.name.split(_PARTIAL, 1)[1].rsplit("-", 1)[0]
        host, _, pid_text = host_pid.rpartition("-")
        try:
            old = time.time() - entry.stat().st_mtime > _PARTIAL_MAX_AGE_S
        except OSError:
            continue
        gone = host == here and pid_text.isdigit() and not _process_alive(int(pid_text))
        if old or gone:
            log.info("posepipe: removing the leftover download folder %s", entry)
            shutil.rmtree(entry, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True  # another thread of this process may be downloading
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process
        return True
    return True
