"""posepipe.download, the one URL downloader (CLI/API image URLs, the
server's image URLs, model tarballs), against local HTTP servers on
127.0.0.1: deadlines that hold against servers that drip, cancellation,
redirects, the address guard and its ranges, proxies from the environment."""
from __future__ import annotations

import http.server
import ipaddress
import random
import socket
import threading
import time
from typing import Any, Dict

import pytest

from posepipe.download import Deadline, DownloadError, DownloadPolicy, fetch_bytes, refused_address
from posepipe.errors import InputError
from posepipe.io import InputLimits, iter_sources, read_frame

BODY = bytes(range(256)) * 64  # 16 KiB


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list = []  # request lines (the proxy test reads them)

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        type(self).seen.append(self.requestline)
        try:
            self._respond()
        except (ConnectionError, OSError):  # the client under test gave up first
            pass

    def _send(self, status: int, body: bytes = b"", headers: Dict[str, str] = {}) -> None:
        self.send_response(status)
        for k, v in {"Content-Length": str(len(body)), **headers}.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _respond(self) -> None:
        path = self.path.split("?", 1)[0]
        if path.startswith("http://"):  # as a proxy: the absolute URL of the target
            self._send(200, b"via proxy " + self.path.encode())
        elif path == "/body":
            self._send(200, BODY)
        elif path == "/drip-body":  # a byte every 0.1 s: no single read ever times out
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            for _ in range(100000):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.1)
        elif path == "/drip-headers":
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            for _ in range(1000):
                self.wfile.write(b"X-Slow: y\r\n")
                self.wfile.flush()
                time.sleep(0.1)
        elif path == "/stall":
            time.sleep(5)
            self._send(200, BODY)
        elif path == "/bad-location":
            self._send(302, headers={"Location": "http://[::1/broken"})
        elif path == "/bad-port":
            self._send(302, headers={"Location": "http://127.0.0.1:99999/x"})
        elif path == "/to-localhost":
            self._send(302, headers={"Location": f"http://localhost:{self.server.server_address[1]}/body"})
        elif path == "/loop":
            self._send(302, headers={"Location": "/loop"})
        elif path == "/to-file":
            self._send(302, headers={"Location": "file:///etc/passwd"})
        else:
            self._send(404, b"missing")


class _QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:  # clients that give up are the point here
        pass


@pytest.fixture(scope="module")
def host():
    handler = type("Handler", (_Handler,), {"seen": []})
    server = _QuietServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def failure(url: str, policy: DownloadPolicy = DownloadPolicy(), deadline=None) -> DownloadError:
    with pytest.raises(DownloadError) as info:
        fetch_bytes(url, policy, deadline)
    return info.value


# --- deadlines --------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/drip-body", "/drip-headers", "/stall"])
def test_the_deadline_holds_against_servers_that_drip(host, path):
    url = host[0] + path
    started = time.monotonic()
    error = failure(url, DownloadPolicy(timeout_s=1.0))
    assert error.kind == "timeout" and error.problem == "download timed out after 1 s"
    assert time.monotonic() - started < 1.8


def test_the_cli_url_deadline_holds_too(host):
    # The CLI and Python API go through the same downloader.
    [source] = list(iter_sources(host[0] + "/drip-body"))
    started = time.monotonic()
    with pytest.raises(InputError, match="download timed out after 1 s"):
        read_frame(source, InputLimits(url_timeout=1.0))
    assert time.monotonic() - started < 1.8


def test_an_idle_timeout_ends_a_stalled_download_before_the_deadline(host):
    started = time.monotonic()
    error = failure(host[0] + "/stall", DownloadPolicy(timeout_s=30.0, idle_timeout_s=0.5))
    assert error.kind == "timeout" and "no data for 0.5 s" in error.problem
    assert time.monotonic() - started < 1.5


def test_cancel_ends_a_download_at_once(host):
    deadline = Deadline(30.0)
    threading.Timer(0.3, deadline.cancel).start()
    started = time.monotonic()
    error = failure(host[0] + "/drip-body", deadline=deadline)
    assert error.kind == "aborted" and time.monotonic() - started < 1.0


# --- redirects and URLs --------------------------------------------------------------


@pytest.mark.parametrize(
    "path, kind, message",
    [
        ("/bad-location", "invalid", "the URL redirected to an invalid URL"),
        ("/bad-port", "invalid", "the URL redirected to an invalid URL"),
        ("/loop", "http", "redirected more than 3 times"),
        ("/to-file", "invalid", "redirected to a file: URL; only http and https"),
        ("/missing", "http", "HTTP error 404 Not Found"),
    ],
)
def test_redirect_and_status_problems(host, path, kind, message):
    error = failure(host[0] + path, DownloadPolicy(max_redirects=3))
    assert error.kind == kind and message in error.problem


@pytest.mark.parametrize("url", ["ftp://example.com/x.jpg", "http://", "http://exa mple.com/x.jpg", "http://[::1/x"])
def test_unusable_urls(url):
    assert failure(url).kind == "invalid"


def test_size_cap_and_body(host):
    assert fetch_bytes(host[0] + "/body", DownloadPolicy()) == BODY
    error = failure(host[0] + "/body", DownloadPolicy(max_bytes=1000))
    assert error.kind == "too_large" and error.problem == f"download is too large: {len(BODY)} bytes, the limit is 1000"


# --- the address guard ------------------------------------------------------------------


def test_the_guard_refuses_local_hosts_without_telling_their_address(host):
    url, _ = host
    port = url.rsplit(":", 1)[1]
    guarded = DownloadPolicy(allow_private=False)
    error = failure(f"http://localhost:{port}/body", guarded)
    assert error.kind == "refused" and "'localhost'" in error.problem
    assert "127.0.0.1" not in error.problem and "::1" not in error.problem and "loopback" not in error.problem
    assert "127.0.0.1" in error.detail or "::1" in error.detail  # for the operator's log
    # Off by default: a local user fetches local URLs, as PaddleX lets them.
    assert fetch_bytes(f"{url}/to-localhost", DownloadPolicy()) == BODY


def _python_special_networks():
    """Every network Python's ipaddress module itself treats as special."""
    for constants in (ipaddress._IPv4Constants, ipaddress._IPv6Constants):
        for name, value in vars(constants).items():
            if name.startswith("__") or name == "_public_network":
                continue
            for item in value if isinstance(value, list) else [value]:
                yield ipaddress.ip_network(item) if not isinstance(item, ipaddress._BaseNetwork) else item


def _samples(net):
    yield net.network_address
    yield net.broadcast_address
    yield net.network_address + net.num_addresses // 2


def test_the_guard_refuses_every_range_python_calls_special():
    networks = list(_python_special_networks())
    assert len(networks) > 30  # the private constants exist on this Python
    for net in networks:
        for address in _samples(net):
            assert refused_address(str(address)), (str(net), str(address))


@pytest.mark.parametrize(
    "network",
    ["fec0::/10", "3fff::/20", "64:ff9b:1::/48", "192.88.99.0/24", "192.0.0.0/24", "198.18.0.0/15", "100.64.0.0/10",
     "5f00::/16", "2001:db8::/32", "100::/64"],
)
def test_the_guard_refuses_special_ranges_python_may_call_global(network):
    for address in _samples(ipaddress.ip_network(network)):
        assert refused_address(str(address)), str(address)
    assert refused_address("fec0::1") == "site-local"


def test_the_guard_agrees_with_python_on_random_addresses():
    rng = random.Random(0)
    for _ in range(20000):
        if rng.random() < 0.5:
            ip = ipaddress.IPv4Address(rng.getrandbits(32))
        else:
            ip = ipaddress.IPv6Address(rng.getrandbits(128))
        flags = (ip.is_private or ip.is_reserved or ip.is_loopback or ip.is_link_local or ip.is_multicast
                 or ip.is_unspecified or not ip.is_global or getattr(ip, "is_site_local", False))
        if flags:
            assert refused_address(str(ip)), str(ip)


@pytest.mark.parametrize(
    "address,reason",
    [("8.8.8.8", None), ("1.1.1.1", None), ("2606:4700:4700::1111", None), ("2001:4860:4860::8888", None),
     ("127.0.0.1", "loopback"), ("::1", "loopback"), ("10.0.0.1", "private"), ("172.16.5.4", "private"),
     ("fd00::1", "private"), ("fe80::1%eth0", "link-local"), ("169.254.1.1", "link-local"),
     ("224.0.0.1", "multicast"), ("0.0.0.0", "unspecified"), ("::ffff:10.0.0.1", "private"),
     ("2002:0a00:0001::", "private"), ("64:ff9b::7f00:1", "loopback"), ("240.0.0.1", "reserved"),
     ("100.64.1.1", "non-global"), ("fec0::1", "site-local"), ("3fff::1", "special-purpose")],
)
def test_address_policy(address, reason):
    assert refused_address(address) == reason


# --- proxies ---------------------------------------------------------------------------


def test_environment_proxies_are_used_unless_the_guard_is_on(host, monkeypatch):
    proxy_url, handler = host
    with socket.socket() as s:  # a port with nothing behind it: only the proxy can answer
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    target = f"http://127.0.0.1:{port}/image.jpg"
    monkeypatch.setenv("http_proxy", proxy_url)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    handler.seen.clear()
    assert fetch_bytes(target, DownloadPolicy()) == b"via proxy " + target.encode()
    assert handler.seen == [f"GET {target} HTTP/1.1"]
    # With the guard on, the proxy is not used (it would resolve names past the check).
    assert failure(target, DownloadPolicy(allow_private=False)).kind == "refused"


def test_every_redirect_hop_is_checked(host, monkeypatch):
    # Pretend 127.0.0.1 is public and 127.0.0.2 is not: a redirect from the
    # first to the second must be refused at the second hop.
    import posepipe.download

    url, _ = host
    port = url.rsplit(":", 1)[1]
    real = posepipe.download.refused_address
    monkeypatch.setattr(posepipe.download, "refused_address", lambda a: None if a == "127.0.0.1" else real(a))
    guarded = DownloadPolicy(allow_private=False)
    assert fetch_bytes(f"{url}/body", guarded) == BODY  # the first hop alone is allowed

    class Hop(_Handler):
        def _respond(self) -> None:
            self._send(302, headers={"Location": f"http://127.0.0.2:{port}/body"})

    hop = _QuietServer(("127.0.0.1", 0), Hop)
    threading.Thread(target=hop.serve_forever, daemon=True).start()
    try:
        error = failure(f"http://127.0.0.1:{hop.server_address[1]}/start", guarded)
        assert error.kind == "refused" and "127.0.0.2" in error.problem  # the URL's own host, an IP literal
    finally:
        hop.shutdown()
        hop.server_close()


def test_the_callers_own_write_errors_come_back_unchanged(host):
    from posepipe.download import fetch

    def full_disk(chunk: bytes) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left on device"):
        fetch(host[0] + "/body", DownloadPolicy(), full_disk)
