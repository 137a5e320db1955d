"""The one URL downloader: every http(s) fetch posepipe makes goes through
`fetch` here. Image URLs of the CLI and Python API (io.py), image URLs of the
HTTP server (serving/, with the address guard on) and official model tarballs
(models/official.py) differ only in their `DownloadPolicy`.

What every fetch gets:
* a deadline for the whole transfer (DNS, connect, TLS, every redirect,
  headers, body). A watchdog shuts the sockets down when it passes, so a
  server that drips a byte at a time cannot outlast it; `Deadline.cancel()`
  ends a fetch early the same way (the HTTP server does when its client goes).
* an idle timeout: the longest silence of the socket.
* a size cap, checked against Content-Length first, then while streaming.
* redirects, at most `max_redirects`; each hop's URL is checked again
  (scheme, host, and the address guard below).
* optionally the address guard: the host is resolved here, every address it
  resolves to is checked against the refused ranges, and the socket connects
  to a checked address, so a DNS answer that changes between check and
  connect cannot slip through. TLS still verifies the URL's host name.
  Servers turn it on; a local user fetches local URLs as PaddleX lets them.

Proxies from the environment (HTTP_PROXY, HTTPS_PROXY, NO_PROXY) are used as
urllib uses them, except with the guard on: a proxy would resolve the name
itself, past the check.

Only the standard library is used, so the CLI needs no HTTP package."""
from __future__ import annotations

import base64
import http.client
import ipaddress
import socket
import ssl
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

from . import __version__

_REDIRECTS = (301, 302, 303, 307, 308)
_CHUNK = 1 << 16

# Special-purpose address blocks that are not globally reachable (IANA's IPv4
# and IPv6 special-purpose registries), refused by the guard in addition to
# what Python's ipaddress flags as non-global. Python's own lists differ
# between versions (3.11 calls fec0::/10 and 3fff::/20 global), so the guard
# does not rely on them alone.
_REFUSED_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in (
        # IPv4
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
        "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15",
        "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4", "255.255.255.255/32",
        # IPv6 (IPv4-mapped, 6to4, Teredo and NAT64 addresses are also judged by the IPv4 address they carry)
        "::/96", "::ffff:0:0:0/96", "64:ff9b:1::/48", "100::/64", "100:0:0:1::/64", "2001::/23",
        "2001:db8::/32", "3fff::/20", "5f00::/16", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_TEREDO = ipaddress.ip_network("2001::/32")


class DownloadError(Exception):
    """A URL that could not be fetched. `kind` says how callers should report it:
    "invalid" (not a usable URL), "refused" (the address guard), "unreachable",
    "http" (an error status or a redirect problem), "too_large", "timeout",
    "aborted" (cancelled by the caller). `problem` is the user-facing sentence;
    `detail` what only an operator should see (a refused address)."""

    def __init__(self, kind: str, problem: str, detail: str = ""):
        super().__init__(problem)
        self.kind = kind
        self.problem = problem
        self.detail = detail


@dataclass(frozen=True)
class DownloadPolicy:
    timeout_s: float = 10.0  # the whole transfer, redirects included
    max_bytes: int = 50 * 1024 * 1024
    max_redirects: int = 5
    allow_private: bool = True  # False: the address guard is on
    idle_timeout_s: Optional[float] = None  # longest silence of the socket; None: timeout_s
    user_agent: str = f"posepipe/{__version__}"
    accept: str = "image/*, */*;q=0.5"

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ValueError(f"DownloadPolicy.timeout_s must be > 0, got {self.timeout_s!r}")
        if self.idle_timeout_s is not None and not self.idle_timeout_s > 0:
            raise ValueError(f"DownloadPolicy.idle_timeout_s must be > 0, got {self.idle_timeout_s!r}")
        if not isinstance(self.max_redirects, int) or self.max_redirects < 0:
            raise ValueError(f"DownloadPolicy.max_redirects must be >= 0, got {self.max_redirects!r}")


class Deadline:
    """When a fetch must be over. Expires by itself `seconds` after `start()`,
    or at once on `cancel()` (from any thread); either way the sockets
    registered with it are shut down, which wakes a thread blocked on them."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._end: Optional[float] = None
        self._lock = threading.Lock()
        self._sockets: List[socket.socket] = []
        self._timer: Optional[threading.Timer] = None
        self.reason: Optional[str] = None  # "timeout" | "aborted" once expired

    def start(self) -> "Deadline":
        with self._lock:
            if self._end is None:
                self._end = time.monotonic() + self.seconds
                self._timer = threading.Timer(self.seconds, self._expire, ("timeout",))
                self._timer.daemon = True
                self._timer.start()
        return self

    def stop(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._sockets.clear()

    def cancel(self) -> None:
        self._expire("aborted")

    def remaining(self) -> float:
        if self.reason is not None:
            return 0.0
        return max(0.0, (self._end if self._end is not None else time.monotonic() + self.seconds) - time.monotonic())

    def register(self, sock: socket.socket) -> None:
        with self._lock:
            if self.reason is None:
                self._sockets.append(sock)
                return
        _shutdown(sock)

    def check(self) -> None:
        if self.reason is not None:
            raise self.error()

    def error(self) -> DownloadError:
        if self.reason == "aborted":
            return DownloadError("aborted", "download cancelled")
        return DownloadError("timeout", f"download timed out after {self.seconds:g} s")

    def _expire(self, reason: str) -> None:
        with self._lock:
            if self.reason is not None:
                return
            self.reason = reason
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # not connected yet, or already closed
        pass


# --- the address guard ----------------------------------------------------------


def refused_address(address: str) -> Optional[str]:
    """Why the guard refuses `address` (an IP literal), or None if it may be
    fetched: loopback, link-local, site-local, multicast, unspecified,
    reserved, private, special-purpose or non-global."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        return "not an IP address"
    candidates: List[ipaddress._BaseAddress] = []
    if isinstance(ip, ipaddress.IPv6Address):
        # The IPv4 address such an IPv6 address carries names the real target.
        if ip.ipv4_mapped is not None:
            candidates.append(ip.ipv4_mapped)
        if ip.sixtofour is not None:
            candidates.append(ip.sixtofour)
        if ip in _TEREDO and ip.teredo is not None:
            candidates.extend(ip.teredo)
        if ip in _NAT64:
            candidates.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    candidates.append(ip)
    for candidate in candidates:
        for flag, name in (
            ("is_loopback", "loopback"),
            ("is_link_local", "link-local"),
            ("is_site_local", "site-local"),
            ("is_multicast", "multicast"),
            ("is_unspecified", "unspecified"),
            ("is_reserved", "reserved"),
            ("is_private", "private"),
        ):
            if getattr(candidate, flag, False):
                return name
        if not candidate.is_global:
            return "non-global"
        if any(candidate in net for net in _REFUSED_NETWORKS if net.version == candidate.version):
            return "special-purpose"
    return None


# --- fetching ----------------------------------------------------------------------


def fetch_bytes(url: str, policy: DownloadPolicy, deadline: Optional[Deadline] = None) -> bytes:
    """The body of `url`, or DownloadError."""
    chunks: List[bytes] = []
    fetch(url, policy, chunks.append, deadline=deadline)
    return b"".join(chunks)


def fetch(
    url: str,
    policy: DownloadPolicy,
    write: Callable[[bytes], object],
    *,
    deadline: Optional[Deadline] = None,
    on_length: Optional[Callable[[Optional[int]], None]] = None,
) -> int:
    """Stream the body of `url` into `write`, chunk by chunk; the number of
    bytes. `on_length` hears the declared length (None if not declared) once
    the final response starts. Raises DownloadError, nothing else."""
    deadline = deadline or Deadline(policy.timeout_s)
    deadline.start()
    try:
        return _fetch(url, policy, write, deadline, on_length)
    except DownloadError:
        raise
    except _SinkError as e:  # the caller's own failure (a full disk, say), not the download's
        raise e.__cause__ from None  # type: ignore[misc]
    except (OSError, http.client.HTTPException, ValueError) as e:
        if deadline.reason is not None:
            raise deadline.error() from None
        if isinstance(e, (socket.timeout, TimeoutError)):
            if policy.idle_timeout_s is None or deadline.remaining() < 0.1:
                # The socket's timeout and the watchdog both end at the deadline; either may come first.
                raise deadline.error() from None
            raise DownloadError("timeout", f"download stalled: no data for {policy.idle_timeout_s:g} s") from None
        if isinstance(e, (ssl.SSLError, ssl.CertificateError)):
            raise DownloadError("unreachable", f"cannot reach the URL (TLS: {e})") from None
        if isinstance(e, (ConnectionError, socket.gaierror)) or isinstance(e, OSError) and e.errno is not None:
            raise DownloadError("unreachable", f"cannot reach the URL ({e.strerror or e})") from None
        raise DownloadError("unreachable", f"download failed ({type(e).__name__}: {e})") from None
    finally:
        deadline.stop()


class _SinkError(Exception):
    """Carries an exception raised by the caller's `write` (its __cause__) past the download's own handling."""


@dataclass(frozen=True)
class _Target:
    url: str
    scheme: str
    host: str  # without brackets
    port: int
    path: str  # path and query, as sent


def parse_url(text: str, redirected: bool = False) -> _Target:
    invalid = "the URL redirected to an invalid URL" if redirected else "not a valid URL"
    try:
        parts = urllib.parse.urlsplit(text)
        port = parts.port
        host = parts.hostname
    except ValueError as e:
        raise DownloadError("invalid", f"{invalid} ({e})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        kind = f"{scheme}: URL" if scheme else "URL without a scheme"
        where = "the URL redirected to a" if redirected else "a"
        raise DownloadError("invalid", f"{where} {kind}; only http and https URLs are fetched")
    if not host:
        raise DownloadError("invalid", f"{invalid} (no host)")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise DownloadError("invalid", f"{invalid} (it contains spaces or control characters)")
    try:
        host.encode("idna")
    except UnicodeError as e:
        raise DownloadError("invalid", f"{invalid} (host: {e})") from None
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return _Target(text, scheme, host, port or (443 if scheme == "https" else 80), path)


def _fetch(
    url: str,
    policy: DownloadPolicy,
    write: Callable[[bytes], object],
    deadline: Deadline,
    on_length: Optional[Callable[[Optional[int]], None]],
) -> int:
    target = parse_url(url)
    for _hop in range(policy.max_redirects + 1):
        conn = _connection(target, policy, deadline)
        response: Optional[http.client.HTTPResponse] = None
        try:
            request_path = target.url if getattr(conn, "_posepipe_via_proxy", False) else target.path
            conn.request("GET", request_path, headers=_headers(policy, conn))
            response = conn.getresponse()
            if response.status in _REDIRECTS:
                location = response.getheader("Location")
                if not location:
                    raise DownloadError("http", f"the URL redirected (HTTP {response.status}) without a Location")
                try:
                    next_url = urllib.parse.urljoin(target.url, location.strip())
                except ValueError as e:
                    raise DownloadError("invalid", f"the URL redirected to an invalid URL ({e})") from None
                target = parse_url(next_url, redirected=True)
                continue
            if not 200 <= response.status < 300:
                raise DownloadError("http", f"HTTP error {response.status} {response.reason}".rstrip())
            return _read_body(response, policy, write, deadline, on_length)
        finally:
            if response is not None:
                response.close()  # it holds the socket when the server asked to close the connection
            conn.close()
    raise DownloadError("http", f"the URL redirected more than {policy.max_redirects} times")


def _headers(policy: DownloadPolicy, conn: http.client.HTTPConnection) -> dict:
    headers = {"User-Agent": policy.user_agent, "Accept": policy.accept, "Accept-Encoding": "identity"}
    headers.update(getattr(conn, "_posepipe_proxy_headers", {}))
    return headers


def _read_body(
    response: http.client.HTTPResponse,
    policy: DownloadPolicy,
    write: Callable[[bytes], object],
    deadline: Deadline,
    on_length: Optional[Callable[[Optional[int]], None]],
) -> int:
    declared = response.getheader("Content-Length")
    length = int(declared) if declared is not None and declared.strip().isdigit() else None
    if length is not None and length > policy.max_bytes:
        raise DownloadError("too_large", f"download is too large: {length} bytes, the limit is {policy.max_bytes}")
    if on_length is not None:
        on_length(length)
    total = 0
    while True:
        chunk = response.read1(_CHUNK)  # one recv at most: the deadline and idle timeout stay exact
        if not chunk:
            break
        total += len(chunk)
        if total > policy.max_bytes:
            raise DownloadError("too_large", f"download is too large: over the limit of {policy.max_bytes} bytes")
        try:
            write(chunk)
        except Exception as e:  # noqa: BLE001 - handed back to the caller as it is
            raise _SinkError() from e
    deadline.check()  # the watchdog's shutdown can look like the end of the body
    if length is not None and total != length:
        raise DownloadError("unreachable", f"download failed: got {total} of {length} bytes")
    return total


# --- connections -------------------------------------------------------------------


def _connection(target: _Target, policy: DownloadPolicy, deadline: Deadline) -> http.client.HTTPConnection:
    idle = min(policy.idle_timeout_s or policy.timeout_s, policy.timeout_s)
    opener = _SocketOpener(policy.allow_private, deadline, idle)
    proxy = _proxy_for(target) if policy.allow_private else None
    context = ssl.create_default_context() if target.scheme == "https" else None
    if proxy is None:
        if context is not None:
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                target.host, target.port, timeout=idle, context=context
            )
        else:
            conn = http.client.HTTPConnection(target.host, target.port, timeout=idle)
    else:
        proxy_host, proxy_port, auth = proxy
        if context is not None:
            conn = http.client.HTTPSConnection(proxy_host, proxy_port, timeout=idle, context=context)
            conn.set_tunnel(target.host, target.port, headers=auth)
        else:
            conn = http.client.HTTPConnection(proxy_host, proxy_port, timeout=idle)
            conn._posepipe_via_proxy = True  # type: ignore[attr-defined]
            conn._posepipe_proxy_headers = auth  # type: ignore[attr-defined]
    # http.client opens its socket through this hook (HTTPS and proxy tunnels
    # included), which is where the guard resolves, checks and connects.
    conn._create_connection = opener  # type: ignore[attr-defined]
    return conn


def _proxy_for(target: _Target) -> Optional[Tuple[str, int, dict]]:
    """(host, port, auth headers) of the environment's proxy for this URL, or None."""
    proxy = urllib.request.getproxies().get(target.scheme)
    if not proxy or urllib.request.proxy_bypass(target.host):
        return None
    parts = urllib.parse.urlsplit(proxy if "://" in proxy else "http://" + proxy)
    if not parts.hostname:
        return None
    headers = {}
    if parts.username:
        token = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        headers["Proxy-Authorization"] = "Basic " + base64.b64encode(token.encode()).decode("ascii")
    return parts.hostname, parts.port or 8080, headers


class _SocketOpener:
    """socket.create_connection's stand-in: resolves within the deadline,
    applies the guard, registers the socket with the deadline's watchdog."""

    def __init__(self, allow_private: bool, deadline: Deadline, idle_timeout: float):
        self.allow_private = allow_private
        self.deadline = deadline
        self.idle_timeout = idle_timeout

    def __call__(self, address: Tuple[str, int], timeout=None, source_address=None) -> socket.socket:
        host, port = address
        infos = _resolve(host, port, self.deadline)
        if not self.allow_private:
            for info in infos:
                reason = refused_address(str(info[4][0]))
                if reason:
                    raise DownloadError(
                        "refused",
                        f"refused to fetch the URL: its host {host!r} is not a public internet address",
                        detail=f"{host} resolves to {info[4][0]} ({reason})",
                    )
        error: Optional[OSError] = None
        for family, kind, proto, _name, sockaddr in infos:
            sock = socket.socket(family, kind, proto)
            self.deadline.register(sock)
            try:
                sock.settimeout(max(0.001, min(self.idle_timeout, self.deadline.remaining())))
                sock.connect(sockaddr)
                return sock
            except OSError as e:
                sock.close()
                self.deadline.check()
                error = e
        assert error is not None
        raise error


def _resolve(host: str, port: int, deadline: Deadline) -> list:
    """getaddrinfo, given no longer than the deadline (the OS resolver has no timeout of its own)."""
    try:  # IP literals need no lookup
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except socket.gaierror:
        pass
    answer: list = []
    done = threading.Event()

    def lookup() -> None:
        try:
            answer.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except (OSError, UnicodeError) as e:
            answer.append(e)
        done.set()

    threading.Thread(target=lookup, name="posepipe-dns", daemon=True).start()
    if not done.wait(deadline.remaining()):
        deadline.check()
        raise deadline.error()
    result = answer[0]
    if isinstance(result, BaseException):
        raise DownloadError("unreachable", f"cannot reach the URL (cannot resolve its host {host!r}: {result})")
    if not result:
        raise DownloadError("unreachable", f"cannot reach the URL (its host {host!r} has no address)")
    return result
