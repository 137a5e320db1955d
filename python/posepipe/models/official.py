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
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional, Union

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
DOWNLOAD_TIMEOUT_S = 30.0
_CHUNK = 1 << 20


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
    log.info("posepipe: downloading %s from %s", model_name, url)
    work = Path(tempfile.mkdtemp(prefix=f".{model_name}-", dir=cache_root))
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
    Absolute names, `..`, links leading outside, devices and fifos are refused
    before anything is written."""
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            total = 0
            for m in members:
                _check_member(m, root, archive)
                total += max(m.size, 0)
            if total > MAX_DOWNLOAD_BYTES * 4:
                raise ModelError(f"{archive}: unpacks to {total} bytes, more than posepipe accepts")
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 / 3.12: a second line of defence
                tar.extractall(dest, members=members, filter="data")
            else:
                tar.extractall(dest, members=members)
    except (tarfile.TarError, EOFError) as e:
        raise ModelError(f"{archive}: not a valid tar archive ({e})") from None


def _check_member(m: tarfile.TarInfo, root: Path, archive: Path) -> None:
    def refuse(why: str):
        raise ModelError(f"{archive}: refusing archive member {m.name!r}: {why}")

    if not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
        refuse("not a regular file, folder or link (device or fifo)")
    if os.path.isabs(m.name) or m.name.startswith(("/", "\\")):
        refuse("absolute path")
    if ".." in Path(m.name).parts:
        refuse("'..' in the path")
    if not _inside(root, root / m.name):
        refuse("it would be written outside the target folder")
    if m.issym() or m.islnk():
        if os.path.isabs(m.linkname):
            refuse("link to an absolute path")
        # Symlinks resolve from their own folder; hard links from the archive root.
        base = (root / m.name).parent if m.issym() else root
        if not _inside(root, base / m.linkname):
            refuse(f"link to {m.linkname!r} leads outside the target folder")


def _inside(root: Path, path: Path) -> bool:
    return os.path.commonpath([root, os.path.normpath(path)]) == str(root)


def _fetch(url: str, target: Path) -> None:
    hint = "set model_dir in the pipeline config to a local model directory, or POSEPIPE_MODEL_BASE_URL to a mirror"
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp, open(target, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0)
            if total > MAX_DOWNLOAD_BYTES:
                raise ModelError(f"{url}: {total} bytes is more than posepipe downloads ({MAX_DOWNLOAD_BYTES})")
            done = 0
            with _progress(total, url) as bar:
                while True:
                    chunk = resp.read(_CHUNK)
                    if not chunk:
                        break
                    done += len(chunk)
                    if done > MAX_DOWNLOAD_BYTES:
                        raise ModelError(f"{url}: larger than {MAX_DOWNLOAD_BYTES} bytes; stopped")
                    out.write(chunk)
                    bar.update(len(chunk))
            if total and done != total:
                raise ModelError(f"could not download {url}: got {done} of {total} bytes; {hint}")
    except urllib.error.HTTPError as e:
        e.close()  # it holds the open connection
        raise ModelError(f"could not download {url}: HTTP {e.code} {e.reason}; {hint}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ModelError(f"could not download {url}: {reason}; {hint}") from None


class _NoBar:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n: int) -> None:
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
