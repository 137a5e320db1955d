"""The request's `image` string -> a decoded BGR frame.

`image` is an http(s) URL or base64 (PaddleX's rule: a string that starts with
http:// or https:// and has a host is a URL; anything else is base64, decoded
leniently as PaddleX does, so line-wrapped base64 works). A `data:...;base64,`
prefix is accepted too.

URLs are fetched asynchronously (the event loop never blocks on a slow host)
with a whole-download deadline and a size cap. Unless the operator allows it,
a URL whose host resolves to a private, loopback, link-local, multicast,
reserved or otherwise non-global address is refused. The check runs inside the
HTTP client's connect step on every resolved address of every hop (redirects
included), and the socket is opened to the address that was checked, so a DNS
answer that changes between check and connect cannot slip through.

Decoding the bytes is posepipe.io's (header probe with the pixel limit before
decoding, truncated-JPEG check, PaddleX's cv2.imdecode call)."""
from __future__ import annotations

import base64
import binascii
import ipaddress
import socket
import ssl
from typing import Iterable, List, Optional, Tuple

import anyio
import httpcore
import httpx
import numpy as np

from ..errors import InputError
from ..io import InputLimits, Source, read_frame
from .errors import ApiError

FIELD = "image"
_URL_PREFIXES = ("http://", "https://")
_REDIRECTS = (301, 302, 303, 307, 308)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


# --- which addresses a URL may reach ------------------------------------------


def refused_address(address: str) -> Optional[str]:
    """Why `address` (an IP literal) must not be fetched, or None if it may."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        return "not an IP address"
    embedded: List[ipaddress.IPv4Address] = []
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            embedded.append(ip.ipv4_mapped)
        if ip.sixtofour is not None:
            embedded.append(ip.sixtofour)
        if ip.teredo is not None:
            embedded.extend(ip.teredo)
        if ip in _NAT64:
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    for candidate in [*embedded, ip]:  # the embedded IPv4 first: it names the real target
        for test, name in (
            ("is_loopback", "loopback"),
            ("is_link_local", "link-local"),
            ("is_multicast", "multicast"),
            ("is_unspecified", "unspecified"),
            ("is_reserved", "reserved"),
            ("is_private", "private"),
        ):
            if getattr(candidate, test):
                return name
        if not candidate.is_global:
            return "non-global"
    return None


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves the host itself, refuses disallowed addresses, then connects to
    the checked address (TLS still verifies the host name: httpcore passes the
    URL's host as server_hostname)."""

    def __init__(self, allow_private: bool):
        self._inner = httpcore.AnyIOBackend()
        self._allow_private = allow_private

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: Optional[float] = None,
        local_address: Optional[str] = None,
        socket_options: Optional[Iterable] = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError, OSError) as e:
            raise ApiError(400, f"{FIELD}: cannot resolve the URL's host {host!r} ({e})") from None
        addresses: List[str] = []
        for info in infos:
            address = str(info[4][0])
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            raise ApiError(400, f"{FIELD}: the URL's host {host!r} has no address")
        if not self._allow_private:
            for address in addresses:
                reason = refused_address(address)
                if reason:
                    raise ApiError(
                        400,
                        f"{FIELD}: refused to fetch the URL: its host {host!r} resolves to a {reason} "
                        f"address ({address}); the server operator can allow this with --allow_private_urls",
                    )
        error: Optional[BaseException] = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as e:
                error = e
        assert error is not None
        raise error

    async def connect_unix_socket(self, path: str, timeout: Optional[float] = None, socket_options=None):
        raise ApiError(400, f"{FIELD}: unix sockets are not fetched")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def _ssl_context() -> ssl.SSLContext:
    try:
        import certifi

        return ssl.create_default_context(cafile=certifi.where())
    except ImportError:  # pragma: no cover - httpx depends on certifi
        return ssl.create_default_context()


class UrlFetcher:
    """GETs image URLs: deadline, size cap, redirects, address guard."""

    def __init__(self, *, allow_private: bool, timeout_s: float, max_bytes: int, max_redirects: int, user_agent: str):
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self.max_redirects = max_redirects
        self._user_agent = user_agent.encode("ascii", "replace")
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=_ssl_context(),
            max_connections=64,
            keepalive_expiry=5.0,
            network_backend=_GuardedBackend(allow_private),
        )

    async def aclose(self) -> None:
        await self._pool.aclose()

    async def fetch(self, text: str) -> bytes:
        try:
            with anyio.fail_after(self.timeout_s):
                return await self._fetch(text)
        except TimeoutError:
            raise ApiError(504, f"{FIELD}: the URL download did not finish within {self.timeout_s:g} s") from None

    async def _fetch(self, text: str) -> bytes:
        url = _parse_url(text)
        for _hop in range(self.max_redirects + 1):
            request_url = httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path)
            headers = [
                (b"Host", url.netloc),
                (b"User-Agent", self._user_agent),
                (b"Accept", b"image/*, */*;q=0.5"),
                (b"Accept-Encoding", b"identity"),
            ]
            try:
                async with self._pool.stream("GET", request_url, headers=headers) as response:
                    if response.status in _REDIRECTS:
                        location = _header(response.headers, b"location")
                        if not location:
                            raise ApiError(400, f"{FIELD}: the URL redirected (HTTP {response.status}) without a Location")
                        url = _parse_url(str(url.join(location.decode("latin-1"))), redirected=True)
                        continue
                    if not 200 <= response.status < 300:
                        raise ApiError(400, f"{FIELD}: fetching the URL failed with HTTP {response.status}")
                    return await self._read_body(response)
            except ApiError:
                raise
            except httpcore.TimeoutException:
                raise TimeoutError from None
            except (httpcore.ConnectError,) as e:
                raise ApiError(400, f"{FIELD}: cannot connect to the URL's host ({e or type(e).__name__})") from None
            except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol) as e:
                raise ApiError(400, f"{FIELD}: fetching the URL failed ({e or type(e).__name__})") from None
        raise ApiError(400, f"{FIELD}: the URL redirected more than {self.max_redirects} times")

    async def _read_body(self, response: httpcore.Response) -> bytes:
        length = _header(response.headers, b"content-length")
        if length is not None and length.strip().isdigit() and int(length) > self.max_bytes:
            raise ApiError(413, f"{FIELD}: the URL's content is {int(length)} bytes, over the limit of {self.max_bytes}")
        chunks: List[bytes] = []
        total = 0
        async for chunk in response.aiter_stream():
            total += len(chunk)
            if total > self.max_bytes:
                raise ApiError(413, f"{FIELD}: the URL's content is over the limit of {self.max_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)


def _header(headers: List[Tuple[bytes, bytes]], name: bytes) -> Optional[bytes]:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def _parse_url(text: str, redirected: bool = False) -> httpx.URL:
    what = "the URL redirected to" if redirected else "the URL is"
    try:
        url = httpx.URL(text)
    except (httpx.InvalidURL, ValueError, TypeError) as e:
        raise ApiError(400, f"{FIELD}: {what} not a valid URL ({e})") from None
    if url.scheme not in ("http", "https"):
        raise ApiError(400, f"{FIELD}: {what} {url.scheme}:, only http and https URLs are fetched")
    if not url.host:
        raise ApiError(400, f"{FIELD}: {what} without a host")
    return url


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


def image_from_base64(text: str, limits: InputLimits) -> np.ndarray:
    return decode_image(decode_base64(text, limits.max_bytes), limits)
