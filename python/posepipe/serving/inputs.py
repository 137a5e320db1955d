"""The request's `image` string -> a decoded BGR frame.

`image` is an http(s) URL or base64 (PaddleX's rule: a string that starts with
http:// or https:// and has a host is a URL; anything else is base64, decoded
leniently as PaddleX does, so line-wrapped base64 works). A `data:...;base64,`
prefix is accepted too.

URLs are fetched by posepipe.download with the server's policy (deadline,
size cap, redirects, and unless the operator allows it, the address guard
that refuses private, loopback, link-local, multicast, reserved and other
non-global addresses); `download_error` says how each failure is answered.

Decoding the bytes is posepipe.io's (header probe with the pixel limit before
decoding, truncated-JPEG check, PaddleX's cv2.imdecode call)."""
from __future__ import annotations

import base64
import binascii

import numpy as np

from ..download import DownloadError
from ..errors import InputError
from ..io import InputLimits, Source, read_frame
from .errors import ApiError

FIELD = "image"
_URL_PREFIXES = ("http://", "https://")
_DOWNLOAD_STATUS = {"too_large": 413, "timeout": 504}


def download_error(error: DownloadError) -> ApiError:
    """The reply to a URL that could not be fetched: 413 over the size cap,
    504 past the deadline, 400 otherwise."""
    message = f"{FIELD}: {error.problem}"
    if error.kind == "refused":
        message += "; the server operator can allow this with --allow_private_urls"
    return ApiError(_DOWNLOAD_STATUS.get(error.kind, 400), message)


def is_url(text: str) -> bool:
    """PaddleX's test (case-insensitive scheme): http(s):// and something after it."""
    head = text[:8].lower()
    return head.startswith(_URL_PREFIXES) and len(text) > len("http://")


# --- base64 and decoding --------------------------------------------------------


def decode_base64(text: str, max_bytes: int) -> bytes:
    if text.startswith("data:"):
        head, sep, rest = text.partition(",")
        if not sep or not head.endswith(";base64"):
            raise ApiError(400, f"{FIELD}: a data: URL must be base64 (data:<type>;base64,<data>)")
        text = rest
    if not text.strip():
        raise ApiError(400, f"{FIELD}: empty: no image data")
    scheme, sep, _ = text[:32].partition("://")
    if sep and scheme.isalpha():  # ':' is not a base64 character: this was meant as a URL
        raise ApiError(400, f"{FIELD}: {scheme}:// URLs are not fetched; only http:// and https://")
    if len(text) // 4 * 3 > max_bytes + 3:
        raise ApiError(413, f"{FIELD}: the base64 image is about {len(text) // 4 * 3} bytes, over the limit of {max_bytes}")
    try:
        # Lenient like PaddleX (characters outside the alphabet are skipped).
        data = base64.b64decode(text)
    except (binascii.Error, ValueError) as e:
        raise ApiError(400, f"{FIELD}: neither an http(s) URL nor valid base64 ({e})") from None
    if not data:
        raise ApiError(400, f"{FIELD}: empty: no image data")
    if len(data) > max_bytes:
        raise ApiError(413, f"{FIELD}: the image is {len(data)} bytes, over the limit of {max_bytes}")
    return data


def decode_image(data: bytes, limits: InputLimits) -> np.ndarray:
    """Encoded image bytes -> BGR uint8, or ApiError (413 for the pixel limit)."""
    try:
        return read_frame(Source(FIELD, None, "bytes", data), limits).image
    except InputError as e:
        status = 413 if e.problem.startswith("image is too large") else 400
        raise ApiError(status, str(e)) from None
