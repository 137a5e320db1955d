"""Inputs -> frames: what the user passed becomes BGR uint8 images, and every
failure names the input it came from.

Two steps, kept apart so the pipeline can decode the next images in a
background thread while the models run:
  iter_sources(input)        cheap: flattens lists, lists folders, opens nothing big
  read_frame(source, limits) the I/O and decoding, raising InputError

Headers are read first (probe.py: format, size, bounded structure) so that
absurd or crafted files are refused before any decoder parses them. Decoding
is `cv2.imdecode(..., cv2.IMREAD_COLOR)` on the file's bytes, the same call
PaddleX's ReadImage makes, so pixels (EXIF rotation included) are identical.
TIFF goes through Pillow page by page, as PaddleX's TIFFReader does; each page
of a multi-page TIFF is a source of its own, carrying its page index."""
from __future__ import annotations

import io
import itertools
import os
import stat
from dataclasses import dataclass
from typing import Any, Iterator, List, Optional, Union

import cv2
import numpy as np
from PIL import TiffImagePlugin

from . import probe
from .download import DownloadError, DownloadPolicy, fetch_bytes
from .errors import InputError
from .video import video_input_of

# PaddleX's ImageBatchSampler.IMG_SUFFIX: what a folder is searched for.
IMAGE_SUFFIXES = (
    "bmp", "dib", "jpeg", "jpg", "png", "webp", "pbm", "pgm", "ppm", "pnm", "sr", "ras", "tiff", "tif",
)
# PaddleX renders PDF pages; posepipe does not, but says so instead of skipping them silently.
_PDF_SUFFIX = "pdf"

_URL_SCHEMES = ("http://", "https://")
_TIFF_SUFFIXES = (".tif", ".tiff")


@dataclass(frozen=True)
class InputLimits:
    """Bounds that keep one hostile or mistaken input from exhausting the machine."""

    # 8192 x 8192 = 67 MP, about 200 MB once decoded to BGR: above any camera photo,
    # below Pillow's own decompression-bomb warning (89 MP).
    max_pixels: int = 8192 * 8192
    # Cap on a URL download, checked while streaming (not trusting Content-Length).
    max_bytes: int = 50 * 1024 * 1024
    # Seconds for a whole URL download (connect, headers and body together).
    url_timeout: float = 10.0


@dataclass(frozen=True, eq=False)
class Source:
    """One image to read, found by `iter_sources`; nothing is decoded yet."""

    name: str  # how errors name it: the path or URL as given, or "array input #2"
    input_path: Optional[str]  # the result's input_path: path or URL; None for arrays and bytes
    kind: str  # "array" | "bytes" | "file" | "url" | "video" | "invalid"
    data: Any = None  # the ndarray, the bytes, the video.Video, (kind "invalid") the problem text, or a file's path to read when it differs from input_path
    page: int = 0  # page of a multi-page TIFF file
    is_from_folder: bool = False
    page_count: int = 1  # pages of its file; results of multi-page files carry their page_index

    @property
    def page_index(self) -> Optional[int]:
        return self.page if self.page_count > 1 else None


@dataclass
class Frame:
    image: np.ndarray  # uint8 HxWx3 BGR, C-contiguous
    input_path: Optional[str]
    page_index: Optional[int] = None  # the page, for a page of a multi-page file


@dataclass
class InputFailure:
    """A source that could not be read, so a pipeline can report it and go on."""

    input_path: Optional[str]
    error: InputError
    page_index: Optional[int] = None


# --- expansion ---------------------------------------------------------------


def iter_sources(input: Any) -> Iterator[Source]:
    """The images `input` stands for, in order. Never raises for a bad element:
    it becomes an "invalid" Source whose read fails with the problem."""
    yield from _expand(input, itertools.count())  # the count: position in the flattened input, to name arrays


def _expand(item: Any, counter: Iterator[int]) -> Iterator[Source]:
    video = video_input_of(item)  # video files, camera indices, streams: read frame by frame (video.py)
    if video is not None:
        next(counter)
        yield Source(video.name, video.input_path, "video", video)
    elif isinstance(item, Source):  # already expanded (e.g. the CLI counts sources first)
        next(counter)
        yield item
    elif isinstance(item, (list, tuple)):
        for element in item:
            yield from _expand(element, counter)
    elif isinstance(item, np.ndarray):
        yield Source(f"array input #{next(counter)}", None, "array", item)
    elif isinstance(item, (bytes, bytearray, memoryview)):
        yield Source(f"bytes input #{next(counter)}", None, "bytes", bytes(item))
    elif isinstance(item, (str, os.PathLike)):
        next(counter)
        yield from _expand_path(os.fspath(item))
    else:
        index = next(counter)
        problem = (
            f"unsupported input type {type(item).__name__}: give a numpy image, a file or folder path, "
            "an http(s) URL, encoded image bytes, or a list of these"
        )
        yield _invalid(f"input #{index}", None, problem)


def _expand_path(text: str) -> Iterator[Source]:
    if not text.strip():
        yield _invalid(f'"{text}"', None, "empty input: give an image file, a folder or an http(s) URL")
    elif text.lower().startswith(_URL_SCHEMES):
        yield Source(text, text, "url")
    elif "://" in text:
        yield _invalid(text, text, "only http:// and https:// URLs are supported")
    elif os.path.isdir(text):
        files = _list_folder(text)
        if not files:
            looked_for = ", ".join("." + s for s in IMAGE_SUFFIXES)
            yield _invalid(text, text, f"folder contains no image files (looked for {looked_for})")
        for path in files:
            yield from _file_sources(path, from_folder=True)
    elif os.path.exists(text):
        yield from _file_sources(text, from_folder=False)
    else:
        yield _invalid(text, text, "no such file or directory")


def _list_folder(folder: str) -> List[str]:
    """PaddleX's rule: walk subfolders too, match the suffix case-insensitively,
    sort the full paths."""
    found = []
    for root, _dirs, files in os.walk(folder):
        for name in files:
            suffix = name.rsplit(".", 1)[-1].lower() if "." in name else ""
            if suffix in IMAGE_SUFFIXES or suffix == _PDF_SUFFIX:
                found.append(os.path.join(root, name))
    return sorted(found)


def _file_sources(path: str, from_folder: bool) -> Iterator[Source]:
    if path.lower().endswith("." + _PDF_SUFFIX):
        yield _invalid(path, path, "PDF input is not supported: convert the pages to images first", from_folder)
        return
    # A multi-page TIFF gives one image per page, as in PaddleX (which also
    # goes by the suffix); counting pages reads only the chain of page
    # directories. Other problems are left for read_frame to report.
    pages = 1
    if path.lower().endswith(_TIFF_SUFFIXES):
        try:
            with open(path, "rb") as f:
                info = os.fstat(f.fileno())
                if stat.S_ISREG(info.st_mode):
                    pages = probe.count_tiff_pages(f, info.st_size, path)
        except OSError:
            pass
        except InputError as e:
            yield _invalid(path, path, e.problem, from_folder)
            return
    for page in range(pages):
        name = path if pages == 1 else f"{path} (page {page})"
        yield Source(name, path, "file", page=page, is_from_folder=from_folder, page_count=pages)


def _invalid(name: str, input_path: Optional[str], problem: str, from_folder: bool = False) -> Source:
    """A source whose read fails with `problem`."""
    return Source(name, input_path, "invalid", problem, is_from_folder=from_folder)


# --- reading -----------------------------------------------------------------


def read_frame(source: Source, limits: InputLimits = InputLimits()) -> Frame:
    """Decode one source into a BGR uint8 image, or raise InputError naming it."""
    if source.kind == "invalid":
        raise InputError(source.name, source.data)
    if source.kind == "video":
        raise InputError(source.name, "a video is read frame by frame by the pipeline's predict, not as one image")
    # Arrays and bytes have no path, unless their Source names one (posepipe.ray's dataset rows).
    if source.kind == "array":
        return Frame(_check_array(source.data, source.name), source.input_path)
    if source.kind == "bytes":
        return Frame(_decode(source.data, source.name, limits), source.input_path)
    if source.kind == "url":
        return Frame(_decode(_download(source.name, limits), source.name, limits), source.input_path)
    image = _read_file(source.data or source.input_path, source.name, limits, source.page)
    return Frame(image, source.input_path, source.page_index)


def try_read_frame(source: Source, limits: InputLimits = InputLimits()) -> Union[Frame, InputFailure]:
    """read_frame, with a failure returned instead of raised."""
    try:
        return read_frame(source, limits)
    except InputError as e:
        return InputFailure(source.input_path, e, source.page_index)


def iter_frames(input: Any, limits: InputLimits = InputLimits()) -> Iterator[Union[Frame, InputFailure]]:
    """Every image of `input` decoded, in order; bad ones as InputFailure."""
    for source in iter_sources(input):
        yield try_read_frame(source, limits)


def _check_array(array: np.ndarray, name: str) -> np.ndarray:
    if array.dtype != np.uint8:
        raise InputError(name, f"unsupported array dtype {array.dtype}: expected uint8 (an image as OpenCV reads it)")
    shape = array.shape
    if array.ndim not in (2, 3) or (array.ndim == 3 and shape[2] not in (1, 3, 4)):
        raise InputError(name, f"unsupported array shape {shape}: expected HxW, HxWx1, HxWx3 (BGR) or HxWx4 (BGRA)")
    if shape[0] == 0 or shape[1] == 0:
        raise InputError(name, f"image has zero size {shape}")
    if array.ndim == 2 or shape[2] == 1:
        return cv2.cvtColor(array, cv2.COLOR_GRAY2BGR)
    if shape[2] == 4:
        return cv2.cvtColor(array, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(array)  # no copy when it already is


def _read_file(path: str, name: str, limits: InputLimits, page: int) -> np.ndarray:
    try:
        with open(path, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise InputError(name, "not a regular file")
            # The header first: refuse absurd sizes before reading or decoding the rest.
            header = probe.read_header(f, info.st_size, name, limits.max_pixels, page)
            f.seek(0)
            data = f.read()
    except FileNotFoundError:
        raise InputError(name, "no such file or directory") from None
    except IsADirectoryError:
        raise InputError(name, "is a directory") from None
    except PermissionError:
        raise InputError(name, "permission denied") from None
    except OSError as e:
        raise InputError(name, f"cannot read: {e.strerror or e}") from None
    return _decode_probed(data, name, header)


def _decode(data: bytes, name: str, limits: InputLimits) -> np.ndarray:
    """Encoded bytes (an upload, a download): the first page, as PaddleX's reader."""
    header = probe.read_header(io.BytesIO(data), len(data), name, limits.max_pixels)
    return _decode_probed(data, name, header)


def _decode_probed(data: bytes, name: str, header: probe.Header) -> np.ndarray:
    """Decode bytes whose header `probe.read_header` has accepted."""
    if header.format == "TIFF":
        return _decode_tiff(probe.tiff_page_first(data, header), name)
    if header.format == "JPEG":
        probe.check_jpeg_body(data, name)
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as e:
        raise InputError(name, f"OpenCV cannot decode this {header.format} image ({_cv2_reason(e)})") from None
    if image is None:
        raise InputError(name, f"cannot decode the {header.format} image: the file is truncated or corrupt")
    return image


def _cv2_reason(error: Exception) -> str:
    """The sentence inside an OpenCV error, without its source-file prefix."""
    text = str(error).strip()
    return text.split(" error: ", 1)[-1] if " error: " in text else text


def _decode_tiff(data: bytes, name: str) -> np.ndarray:
    """The first page of `data` (probe.tiff_page_first put the wanted one there).
    The plugin class directly, not Image.open: the header is already checked
    against posepipe's limit, and Image.open would also apply Pillow's own."""
    try:
        with TiffImagePlugin.TiffImageFile(io.BytesIO(data)) as im:
            rgb = np.asarray(im.convert("RGB"))
    except Exception as e:  # noqa: BLE001 -- Pillow raises many types on malformed files (struct.error, KeyError, ...)
        raise InputError(name, f"cannot decode the TIFF image: {e or type(e).__name__}") from None
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


def _download(url: str, limits: InputLimits) -> bytes:
    policy = DownloadPolicy(timeout_s=limits.url_timeout, max_bytes=limits.max_bytes)
    try:
        return fetch_bytes(url, policy)
    except DownloadError as e:
        raise InputError(url, e.problem) from None
