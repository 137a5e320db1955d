"""Inputs -> frames: what the user passed becomes BGR uint8 images, and every
failure names the input it came from.

Two steps, kept apart so the pipeline can decode the next images in a
background thread while the models run:
  iter_sources(input)        cheap: flattens lists, lists folders, opens nothing big
  read_frame(source, limits) the I/O and decoding, raising InputError

Decoding is `cv2.imdecode(..., cv2.IMREAD_COLOR)` on the file's bytes, the same
call PaddleX's ReadImage makes, so pixels (EXIF rotation included) are identical.
TIFF goes through Pillow page by page, as PaddleX's TIFFReader does."""
from __future__ import annotations

import io
import itertools
import os
import threading
import time
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from typing import Any, BinaryIO, Iterator, List, Optional, Tuple, Union

import cv2
import numpy as np
from PIL import Image

from .errors import InputError
from .video import video_input_of

# PaddleX's ImageBatchSampler.IMG_SUFFIX: what a folder is searched for.
IMAGE_SUFFIXES = (
    "bmp", "dib", "jpeg", "jpg", "png", "webp", "pbm", "pgm", "ppm", "pnm", "sr", "ras", "tiff", "tif",
)
# PaddleX renders PDF pages; posepipe does not, but says so instead of skipping them silently.
_PDF_SUFFIX = "pdf"

_URL_SCHEMES = ("http://", "https://")
_TIFF_FORMATS = ("TIFF",)
_JPEG_FORMATS = ("JPEG", "MPO")


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
    data: Any = None  # the ndarray, the bytes, the video.Video, or (kind "invalid") the problem text
    page: int = 0  # page of a multi-page TIFF file
    is_from_folder: bool = False


@dataclass
class Frame:
    image: np.ndarray  # uint8 HxWx3 BGR, C-contiguous
    input_path: Optional[str]


@dataclass
class InputFailure:
    """A source that could not be read, so a pipeline can report it and go on."""

    input_path: Optional[str]
    error: InputError


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
    if text.lower().startswith(_URL_SCHEMES):
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
    # A multi-page TIFF gives one image per page, as in PaddleX; counting pages
    # reads only the TIFF directory. Any problem is left for read_frame to report.
    pages = 1
    if path.lower().endswith((".tif", ".tiff")):
        try:
            with open(path, "rb") as f:
                pages = _probe(f, path, limits=None)[2]
        except (OSError, InputError):
            pass
    for page in range(pages):
        yield Source(path, path, "file", page=page, is_from_folder=from_folder)


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
    if source.kind == "array":
        return Frame(_check_array(source.data, source.name), None)
    if source.kind == "bytes":
        return Frame(_decode(source.data, source.name, limits, 0), None)
    if source.kind == "url":
        return Frame(_decode(_download(source.name, limits), source.name, limits, 0), source.input_path)
    return Frame(_read_file(source.name, limits, source.page), source.input_path)


def try_read_frame(source: Source, limits: InputLimits = InputLimits()) -> Union[Frame, InputFailure]:
    """read_frame, with a failure returned instead of raised."""
    try:
        return read_frame(source, limits)
    except InputError as e:
        return InputFailure(source.input_path, e)


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


def _read_file(path: str, limits: InputLimits, page: int) -> np.ndarray:
    try:
        with open(path, "rb") as f:
            # The header first: refuse absurd sizes before reading or decoding the rest.
            fmt = _probe(f, path, limits)[0]
            f.seek(0)
            data = f.read()
    except FileNotFoundError:
        raise InputError(path, "no such file or directory") from None
    except IsADirectoryError:
        raise InputError(path, "is a directory") from None
    except PermissionError:
        raise InputError(path, "permission denied") from None
    except OSError as e:
        raise InputError(path, f"cannot read: {e.strerror or e}") from None
    return _decode_probed(data, path, fmt, page)


def _decode(data: bytes, name: str, limits: InputLimits, page: int) -> np.ndarray:
    return _decode_probed(data, name, _probe(io.BytesIO(data), name, limits)[0], page)


def _decode_probed(data: bytes, name: str, fmt: str, page: int) -> np.ndarray:
    """Decode bytes whose header `_probe` has already accepted."""
    if fmt in _TIFF_FORMATS:
        return _decode_tiff(data, name, page)
    if fmt in _JPEG_FORMATS and not _jpeg_is_complete(data):
        # OpenCV 4.x returns the top of a cut-off JPEG with the rest filled in,
        # silently; a file without its end-of-image marker is refused instead.
        raise InputError(name, "truncated or corrupt JPEG (the image data ends early)")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(name, f"cannot decode the {fmt} image: the file is truncated or corrupt")
    return image


def _decode_tiff(data: bytes, name: str, page: int) -> np.ndarray:
    try:
        with _open_image(io.BytesIO(data)) as im:
            im.seek(page)
            rgb = np.asarray(im.convert("RGB"))
    except (OSError, ValueError, EOFError) as e:
        raise InputError(name, f"cannot decode the TIFF image (page {page}): {e}") from None
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


# Pillow warns (or, above twice its limit, raises) from Image.open about huge
# images. posepipe applies its own limit, so the warning is silenced around the
# header read only. warnings.catch_warnings is process-wide before Python 3.14;
# the lock keeps our own threads from interleaving it (which could leak the filter).
_pil_warning_lock = threading.Lock()


def _open_image(f: BinaryIO) -> Image.Image:
    """Image.open (the header only), without Pillow's size warning."""
    with _pil_warning_lock, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(f)


def _probe(f: BinaryIO, name: str, limits: Optional[InputLimits]) -> Tuple[str, Tuple[int, int], int]:
    """(format, (w, h), pages) from the image header alone, or InputError.
    Without limits, only whether the header can be read is checked."""
    if not f.read(1):
        raise InputError(name, "empty: no image data")
    f.seek(0)
    try:
        with _open_image(f) as im:
            fmt, size = im.format or "unknown", im.size
            pages = getattr(im, "n_frames", 1) if fmt in _TIFF_FORMATS else 1
    except Image.DecompressionBombError as e:  # above twice Pillow's limit; its message has the size
        limit = f", the limit is {limits.max_pixels} pixels" if limits else ""
        raise InputError(name, f"image is too large{limit} ({e})") from None
    except Image.UnidentifiedImageError:
        raise InputError(name, "not an image posepipe can read (unknown format, or a corrupt header)") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        # Pillow raises these for headers it recognises but cannot parse.
        raise InputError(name, f"corrupt image header ({e})") from None
    w, h = size
    if w <= 0 or h <= 0:
        raise InputError(name, f"image has zero size ({w}x{h})")
    if limits is not None and w * h > limits.max_pixels:
        raise InputError(name, f"image is too large: {w}x{h} pixels, the limit is {limits.max_pixels} pixels")
    return fmt, size, pages


def _jpeg_is_complete(data: bytes) -> bool:
    """True when the JPEG has its end-of-image marker after the first scan.

    Walks the marker segments by their lengths up to the first start-of-scan
    (so an EXIF thumbnail's own markers, inside APP1, are skipped), then looks
    for FF D9: inside entropy-coded data every 0xFF byte is followed by 00 or a
    restart marker, so FF D9 there is the real end. Bytes after it (e.g. the
    video of a motion photo) are allowed."""
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return True  # not a marker: malformed in a way this check does not judge; leave it to the decoder
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif marker == 0xDA:  # start of scan
            # From the end: the marker is almost always there, so this is O(1).
            return data.rfind(b"\xff\xd9", i) != -1
        elif 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            i += 2
        else:
            i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return False


def _download(url: str, limits: InputLimits) -> bytes:
    from . import __version__

    request = urllib.request.Request(url, headers={"User-Agent": f"posepipe/{__version__}"})
    deadline = time.monotonic() + limits.url_timeout
    try:
        with urllib.request.urlopen(request, timeout=limits.url_timeout) as response:
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > limits.max_bytes:
                raise InputError(url, f"download is too large: {int(length)} bytes, the limit is {limits.max_bytes}")
            chunks, total = [], 0
            while True:
                chunk = response.read(1 << 16)
                if not chunk:
                    break
                total += len(chunk)
                if total > limits.max_bytes:
                    raise InputError(url, f"download is too large: over the limit of {limits.max_bytes} bytes")
                if time.monotonic() > deadline:
                    raise InputError(url, f"download timed out after {limits.url_timeout:g} s")
                chunks.append(chunk)
    except InputError:
        raise
    except urllib.error.HTTPError as e:
        e.close()  # it holds the open response; unclosed, its socket leaks until collected
        raise InputError(url, f"HTTP error {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        if isinstance(e.reason, TimeoutError):
            raise InputError(url, f"download timed out after {limits.url_timeout:g} s") from None
        raise InputError(url, f"cannot reach the URL ({e.reason})") from None
    except TimeoutError:
        raise InputError(url, f"download timed out after {limits.url_timeout:g} s") from None
    except (OSError, ValueError) as e:  # connection reset, malformed URL, bad HTTP response
        raise InputError(url, f"download failed ({e})") from None
    return b"".join(chunks)
