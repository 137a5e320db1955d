"""The HTTP server against a fake, fast pipeline: wire format, every bad input,
limits, URL safety, batching, overload, readiness, metrics, logs, graceful
shutdown, and a bounded soak. Each server is a real uvicorn process on
127.0.0.1 (a free port), talked to over HTTP."""
from __future__ import annotations

import asyncio
import base64
import http.server
import io
import json
import signal
import struct
import subprocess
import sys
import threading
import time
import uuid
import zlib
from pathlib import Path
from typing import Any, Dict, List

import httpx
import numpy as np
import pytest
from PIL import Image

from posepipe.serving.schemas import ErrorResponse, InferResponse
from posepipe.serving.testing import ServerProcess

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
if not (SHARED / "photos").is_dir():
    raise RuntimeError(f"test assets missing: {SHARED}/photos (../shared next to the repo)")
PHOTO = SHARED / "photos" / "000000014439.jpg"
ENDPOINT = "/human-keypoint-detection"

MAX_BODY = 2 * 1024 * 1024
MAX_IMAGE = 1024 * 1024
URL_TIMEOUT = 1.0


# --- helpers -------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def encode(image: np.ndarray, fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image[..., ::-1]).save(buffer, fmt)
    return buffer.getvalue()


def random_image(seed: int, h: int = 48, w: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def gray_png(level: int, h: int = 16, w: int = 16) -> bytes:
    return encode(np.full((h, w, 3), level, np.uint8), "PNG")


def png_bomb(width: int, height: int) -> bytes:
    """A PNG that claims width x height: a valid header, a few bytes of pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def image_info(data) -> tuple:
    """(format, size) of an image file path or bytes, the file closed again."""
    with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as im:
        return im.format, im.size


def assert_envelope(response: httpx.Response, status: int, contains: str = "") -> Dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text[:500])
    body = response.json()
    ErrorResponse.model_validate(body)
    assert body["errorCode"] == status and set(body) == {"logId", "errorCode", "errorMsg"}
    assert contains in body["errorMsg"], body["errorMsg"]
    return body


def without_log_id(body: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in body.items() if k != "logId"}


def metric_samples(text: str, name: str) -> Dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith(name):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


async def post_many(url: str, bodies: List[Dict[str, Any]], concurrency: int, timeout: float = 30.0):
    """POST every body with at most `concurrency` in flight; (status, json, seconds) in order."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    results: List[Any] = [None] * len(bodies)
    semaphore = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:

        async def one(i: int, body: Dict[str, Any]) -> None:
            async with semaphore:
                t0 = time.perf_counter()
                r = await client.post(ENDPOINT, json=body)
                results[i] = (r.status_code, r.json(), time.perf_counter() - t0, r.headers)

        await asyncio.gather(*(one(i, b) for i, b in enumerate(bodies)))
    return results


async def wait_in_flight(url: str, count: int) -> None:
    """Until the server is handling `count` requests (besides the /metrics request asking)."""
    async with httpx.AsyncClient(timeout=10) as c:
        while True:
            metrics = (await c.get(url + "/metrics")).text
            if metric_samples(metrics, "posepipe_http_requests_in_flight")["posepipe_http_requests_in_flight"] > count:
                return
            await asyncio.sleep(0.02)


# --- an image host for URL inputs ----------------------------------------------------


class _ImageHandler(http.server.BaseHTTPRequestHandler):
    photo = PHOTO.read_bytes()

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes, headers: Dict[str, str] = {}) -> None:
        self.send_response(status)
        for k, v in {"Content-Length": str(len(body)), **headers}.items():
            self.send_header(k, v)
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:  # the server under test gave up on us (the timeout test)
            pass

    def do_GET(self) -> None:  # noqa: N802
        path = self.path
        if path == "/photo.jpg":
            self._send(200, self.photo, {"Content-Type": "image/jpeg"})
        elif path == "/slow.jpg":
            time.sleep(URL_TIMEOUT * 3)
            self._send(200, self.photo)
        elif path == "/big.jpg":  # declared too big
            self._send(200, b"\xff" * (MAX_IMAGE + 10))
        elif path == "/stream-big":  # no Content-Length; more than the cap
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            try:
                for _ in range(MAX_IMAGE // 65536 + 4):
                    self.wfile.write(b"\0" * 65536)
            except OSError:
                pass
            self.close_connection = True
        elif path == "/text":
            self._send(200, b"hello, not an image", {"Content-Type": "text/plain"})
        elif path == "/redirect":
            self._send(302, b"", {"Location": "/photo.jpg"})
        elif path == "/loop":
            self._send(302, b"", {"Location": "/loop"})
        elif path == "/to-ftp":
            self._send(302, b"", {"Location": "ftp://127.0.0.1/x.jpg"})
        elif path == "/bad-location":
            self._send(302, b"", {"Location": "http://[::1/x.jpg"})
        else:
            self._send(404, b"missing")


@pytest.fixture(scope="module")
def image_host():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ImageHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


# --- servers ------------------------------------------------------------------------------

FAKE_SETTINGS = {
    "max_batch": 8,
    "max_wait_ms": 5,
    "max_queue": 64,
    "max_body_bytes": MAX_BODY,
    "max_image_bytes": MAX_IMAGE,
    "max_pixels": 4096 * 4096,
    "url_timeout_s": URL_TIMEOUT,
    "max_redirects": 3,
    "allow_private_urls": True,  # the image host is on loopback
    "decode_threads": 2,
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("serving-logs")
    proc = ServerProcess.fake(log_dir, FAKE_SETTINGS, {"batch_delay_ms": 1, "image_delay_ms": 0.2, "fail_widths": [13]})
    with proc:
        yield proc


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def assert_healthy(client: httpx.Client) -> None:
    r = client.get("/health")
    assert r.status_code == 200 and r.json()["errorMsg"] == "Healthy"
    ok = client.post(ENDPOINT, json={"image": b64(gray_png(200)), "visualize": False})
    assert ok.status_code == 200 and len(ok.json()["result"]["persons"]) == 1


# --- wire format -------------------------------------------------------------------------------


def test_health_ready_and_openapi(client):
    health = client.get("/health").json()
    assert health["errorCode"] == 0 and health["errorMsg"] == "Healthy" and uuid.UUID(health["logId"])
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json()["errorMsg"] == "Ready"
    spec = client.get("/openapi.json").json()
    op = spec["paths"][ENDPOINT]["post"]
    assert op["operationId"] == "infer"
    schema_ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    request_schema = spec["components"]["schemas"][schema_ref]
    assert set(request_schema["properties"]) == {"image", "detThreshold", "visualize"}
    assert request_schema["required"] == ["image"]
    assert {"200", "400", "413", "422", "500", "503", "504"} <= set(op["responses"])
    assert {"/health", "/ready", "/metrics"} <= set(spec["paths"])


def test_round_trip_matches_paddlex_schema(client):
    photo = PHOTO.read_bytes()
    r = client.post(ENDPOINT, json={"image": b64(photo)})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    InferResponse.model_validate(body)
    assert list(body) == ["logId", "result", "errorCode", "errorMsg"]
    assert body["errorCode"] == 0 and body["errorMsg"] == "Success" and uuid.UUID(body["logId"])
    [person] = body["result"]["persons"]
    assert set(person) == {"bbox", "kpts", "detScore", "kptScore"}
    assert person["bbox"] == [0.0, 0.0, 640.0, 404.0] and len(person["kpts"]) == 17
    assert all(len(k) == 3 and all(isinstance(v, float) for v in k) for k in person["kpts"])
    # visualize defaults to true (PaddleX): a JPEG of the input's size
    assert image_info(base64.b64decode(body["result"]["image"])) == ("JPEG", (640, 404))

    # visualize false: no image key (PaddleX drops None fields); detThreshold filters
    r = client.post(ENDPOINT, json={"image": b64(photo), "visualize": False, "detThreshold": 0.99})
    assert r.status_code == 200 and r.json()["result"] == {"persons": []}
    # PaddleX's lax types: numeric string threshold, unknown fields ignored, data: URL accepted
    r = client.post(ENDPOINT, json={"image": "data:image/jpeg;base64," + b64(photo), "detThreshold": "0.1",
                                    "visualize": "false", "extra": [1, 2]})
    assert r.status_code == 200 and len(r.json()["result"]["persons"]) == 1 and "image" not in r.json()["result"]
    # line-wrapped base64 (as `base64` prints it) decodes as in PaddleX
    wrapped = "\n".join(b64(photo)[i : i + 76] for i in range(0, len(b64(photo)), 76))
    r = client.post(ENDPOINT, json={"image": wrapped, "visualize": False})
    assert r.status_code == 200 and len(r.json()["result"]["persons"]) == 1


PADDLEX_DOCS_CLIENT = '''
import base64
import requests

API_URL = "http://localhost:8080/human-keypoint-detection" # Service URL
image_path = "./demo.jpg"
output_image_path = "./out.jpg"

# Base64 encode the local image
with open(image_path, "rb") as file:
    image_bytes = file.read()
    image_data = base64.b64encode(image_bytes).decode("ascii")

payload = {"image": image_data}  # Base64 encoded file content or image URL

# Call the API
response = requests.post(API_URL, json=payload)

# Process the API response
assert response.status_code == 200
result = response.json()["result"]
with open(output_image_path, "wb") as file:
    file.write(base64.b64decode(result["image"]))
print(f"Output image saved at {output_image_path}")
print("\\nDetected persons:")
print(result["persons"])
'''


def run_paddlex_docs_client(url: str, photo: Path, workdir: Path) -> str:
    """PaddleX's documented Python client for this pipeline, unchanged but for the URL."""
    (workdir / "demo.jpg").write_bytes(photo.read_bytes())
    code = PADDLEX_DOCS_CLIENT.replace("http://localhost:8080", url)
    done = subprocess.run([sys.executable, "-c", code], cwd=workdir, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert image_info(workdir / "out.jpg")[1] == image_info(photo)[1]
    return done.stdout


def test_paddlex_docs_client_works_as_is(server, tmp_path):
    out = run_paddlex_docs_client(server.url, PHOTO, tmp_path)
    assert "Output image saved at ./out.jpg" in out and "'bbox': [0.0, 0.0, 640.0, 404.0]" in out


# --- bad input: the right status, the envelope, and the server stays healthy --------------------

photo_bytes = PHOTO.read_bytes()
BAD_JSON_BODIES = [
    ({}, "body.image"),
    ({"image": None}, "body.image"),
    ({"image": 42}, "string_type"),
    ({"image": ["a"]}, "string_type"),
    ({"image": "x", "detThreshold": "high"}, "body.detThreshold"),
    ({"image": "x", "detThreshold": [0.5]}, "body.detThreshold"),
    ({"image": "x", "detThreshold": {"v": 1}}, "body.detThreshold"),
    ({"image": "x", "visualize": "maybe"}, "body.visualize"),
    ({"image": "x", "visualize": 3}, "body.visualize"),
    # detThreshold is a score: 0..1, and a boolean is no number
    ({"image": "x", "detThreshold": -5}, "body.detThreshold"),
    ({"image": "x", "detThreshold": 1.5}, "body.detThreshold"),
    ({"image": "x", "detThreshold": True}, "body.detThreshold"),
    ({"image": "x", "detThreshold": "true"}, "body.detThreshold"),
    ([{"image": "x"}], "body"),
    ("just a string", "body"),
    (None, "body"),
]


@pytest.mark.parametrize("body,loc", BAD_JSON_BODIES, ids=[str(i) for i in range(len(BAD_JSON_BODIES))])
def test_wrong_json_types_and_missing_fields_are_422(client, body, loc):
    out = assert_envelope(client.post(ENDPOINT, json=body), 422)
    errors = json.loads(out["errorMsg"])  # PaddleX: a JSON list of {type, loc, msg}
    assert errors and all(set(e) == {"type", "loc", "msg"} for e in errors)
    assert any(loc in (e["loc"] + e["type"]) for e in errors), errors


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"", b'{"image": "x", "detThreshold": NaN}', b'{"image": "x", "detThreshold": Infinity}',
     b'{"image": "x",}', b"\xff\xfe{}"],
    ids=["broken", "empty", "nan", "inf", "trailing-comma", "not-utf8"],
)
def test_malformed_json_is_422(client, raw):
    r = client.post(ENDPOINT, content=raw, headers={"content-type": "application/json"})
    assert_envelope(r, 422)


def test_json_nested_too_deep_is_400(client):
    # FastAPI's own answer (so PaddleX's too): the parser gave up, not a schema error.
    raw = b"[" * 100_000 + b"]" * 100_000
    r = client.post(ENDPOINT, content=raw, headers={"content-type": "application/json"})
    assert_envelope(r, 400, "error parsing the body")


def test_error_replies_echo_the_clients_log_id_like_paddlex(client):
    out = assert_envelope(client.post(ENDPOINT, json={"image": 1, "logId": "client-123"}), 422)
    assert out["logId"] == "client-123"
    out = assert_envelope(client.post(ENDPOINT, json={"image": "!!", "logId": "client-456"}), 400)
    assert out["logId"] == "client-456"
    ok = client.post(ENDPOINT, json={"image": b64(gray_png(99)), "logId": "client-789"}).json()
    assert ok["errorCode"] == 0 and ok["logId"] != "client-789"  # success: the server's own, as PaddleX


@pytest.mark.parametrize(
    "image,status,message",
    [
        ("", 400, "empty"),
        ("   ", 400, "empty"),
        ("abc", 400, "valid base64"),
        ("é" * 8, 400, "valid base64"),
        (b64(b"hello, this is text and not an image"), 400, "not an image"),
        (b64(photo_bytes[: len(photo_bytes) // 2]), 400, "truncated"),
        (b64(photo_bytes[:600]), 400, "corrupt"),
        (b64(gray_png(10, 200, 200)[:300]), 400, "truncated or corrupt"),
        (b64(b"\xff\xd8\xff\xe0" + b"\0" * 100), 400, ""),
        (b64(png_bomb(100_000, 100_000)), 413, "too large"),
        (b64(png_bomb(4097, 4096)), 413, "the limit is 16777216 pixels"),
        (b64(b"\0" * (MAX_IMAGE + 100)), 413, "over the limit"),
        ("data:image/png,notbase64", 400, "data: URL"),
        ("ftp://127.0.0.1/x.jpg", 400, "only http:// and https://"),
        ("http://", 400, ""),
        ("https://exa mple.com/x.jpg", 400, ""),
        ("http://127.0.0.1:1/x.jpg", 400, "cannot reach the URL"),
    ],
    ids=["empty", "blank", "padding", "non-ascii", "text", "half-jpeg", "jpeg-header-cut", "cut-png", "jpeg-garbage",
         "pixel-bomb", "pixels-over-limit", "bytes-over-limit", "data-url-not-base64", "ftp", "no-host",
         "space-in-host", "connection-refused"],
)
def test_unusable_images_are_refused(client, image, status, message):
    assert_envelope(client.post(ENDPOINT, json={"image": image}), status, message)


def test_bad_inputs_leave_the_server_healthy(client):
    # run after the parametrized bad inputs (file order): the server still answers
    assert_healthy(client)


def test_tiny_and_odd_images_work(client):
    for image in [np.zeros((1, 1, 3), np.uint8), np.zeros((1, 3000, 3), np.uint8), random_image(1, 300, 2)]:
        r = client.post(ENDPOINT, json={"image": b64(encode(image, "PNG")), "visualize": True})
        assert r.status_code == 200, r.text
    # grayscale and RGBA PNGs decode to BGR, as PaddleX's cv2.imdecode does
    for mode in ["L", "RGBA", "P"]:
        buffer = io.BytesIO()
        Image.new(mode, (20, 10)).save(buffer, "PNG")
        r = client.post(ENDPOINT, json={"image": b64(buffer.getvalue()), "visualize": False})
        assert r.status_code == 200 and r.json()["result"]["persons"][0]["bbox"] == [0.0, 0.0, 20.0, 10.0]


# --- body limit -------------------------------------------------------------------------------------


def test_body_over_the_limit_is_413_before_reading_it(server):
    big = json.dumps({"image": "A" * (MAX_BODY + 10)}).encode()
    with httpx.Client(base_url=server.url, timeout=10) as c:
        r = c.post(ENDPOINT, content=big, headers={"content-type": "application/json"})
        out = assert_envelope(r, 413, f"the limit is {MAX_BODY} bytes")
        assert r.headers.get("connection") == "close" and uuid.UUID(out["logId"])

        # chunked (no Content-Length): read only up to the limit
        def chunks():
            for i in range(0, len(big), 65536):
                yield big[i : i + 65536]

        assert_envelope(c.post(ENDPOINT, content=chunks(), headers={"content-type": "application/json"}), 413)
        # a chunked body under the limit is fine
        small = json.dumps({"image": b64(gray_png(200)), "visualize": False}).encode()
        r = c.post(ENDPOINT, content=iter([small[:10], small[10:]]), headers={"content-type": "application/json"})
        assert r.status_code == 200


def test_declared_length_is_refused_without_sending_the_body(server):
    # Only headers go out: the 413 comes back although the body never arrives.
    import socket

    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(
            f"POST {ENDPOINT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {10 * MAX_BODY}\r\n\r\n".encode()
        )
        chunks = []
        while chunk := s.recv(65536):  # the server closes after the 413; headers and body may come apart
            chunks.append(chunk)
        reply = b"".join(chunks).decode()
    assert reply.startswith("HTTP/1.1 413") and '"errorCode":413' in reply


# --- URL inputs -----------------------------------------------------------------------------------------


def test_url_inputs(client, image_host):
    by_url = client.post(ENDPOINT, json={"image": f"{image_host}/photo.jpg", "visualize": False})
    by_b64 = client.post(ENDPOINT, json={"image": b64(photo_bytes), "visualize": False})
    assert by_url.status_code == 200 and without_log_id(by_url.json()) == without_log_id(by_b64.json())
    redirected = client.post(ENDPOINT, json={"image": f"{image_host}/redirect", "visualize": False})
    assert redirected.status_code == 200 and without_log_id(redirected.json()) == without_log_id(by_b64.json())

    assert_envelope(client.post(ENDPOINT, json={"image": f"{image_host}/missing.jpg"}), 400, "HTTP error 404 Not Found")
    assert_envelope(client.post(ENDPOINT, json={"image": f"{image_host}/text"}), 400, "not an image")
    assert_envelope(client.post(ENDPOINT, json={"image": f"{image_host}/big.jpg"}), 413, "the limit is 1048576")
    assert_envelope(client.post(ENDPOINT, json={"image": f"{image_host}/stream-big"}), 413, "over the limit")
    assert_envelope(client.post(ENDPOINT, json={"image": f"{image_host}/loop"}), 400, "redirected more than 3")
    assert_envelope(client.post(ENDPOINT, json={"image": f"{image_host}/to-ftp"}), 400, "only http and https")
    # A Location that is no URL at all is the remote host's fault: 400, not 500.
    assert_envelope(client.post(ENDPOINT, json={"image": f"{image_host}/bad-location"}), 400, "invalid URL")
    t0 = time.perf_counter()
    assert_envelope(client.post(ENDPOINT, json={"image": f"{image_host}/slow.jpg"}), 504, "timed out after 1 s")
    assert time.perf_counter() - t0 < URL_TIMEOUT + 1.0
    assert_healthy(client)


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory):
    """Default URL policy: private addresses refused."""
    proc = ServerProcess.fake(tmp_path_factory.mktemp("strict-logs"), {"url_timeout_s": 2.0}, name="strict")
    with proc:
        yield proc


@pytest.mark.parametrize(
    "url",
    [
        "{host}/photo.jpg",
        "http://localhost:{port}/photo.jpg",
        "http://[::1]:{port}/photo.jpg",
        "http://[::ffff:127.0.0.1]:{port}/photo.jpg",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.1.2.3/x.jpg",
        "http://192.168.0.1/x.jpg",
        "http://0.0.0.0:{port}/x.jpg",
        "http://2130706433:{port}/photo.jpg",  # 127.0.0.1 as one integer
        "http://100.64.0.1/x.jpg",
        "http://[fec0::1]/x.jpg",  # site-local, which Python's ipaddress calls global
    ],
)
def test_private_addresses_are_refused_by_default(strict_server, image_host, url):
    port = image_host.rsplit(":", 1)[1]
    url = url.format(host=image_host, port=port)
    with httpx.Client(base_url=strict_server.url, timeout=10) as c:
        out = assert_envelope(c.post(ENDPOINT, json={"image": url}), 400, "is not a public internet address")
        assert "--allow_private_urls" in out["errorMsg"]
    # What a name resolves to stays in the server's log, out of the reply.
    out = assert_envelope(httpx.post(strict_server.url + ENDPOINT, json={"image": f"http://localhost:{port}/x.jpg"},
                                     timeout=10), 400)
    assert "127.0.0.1" not in out["errorMsg"] and "::1" not in out["errorMsg"] and "loopback" not in out["errorMsg"]
    time.sleep(0.1)
    [line] = [r for r in strict_server.log_records() if r.get("logId") == out["logId"]]
    assert "127.0.0.1" in line["detail"] or "::1" in line["detail"]


def test_url_inputs_can_be_switched_off(tmp_path):
    with ServerProcess.fake(tmp_path, {"allow_url_inputs": False}) as proc:
        r = httpx.post(proc.url + ENDPOINT, json={"image": "http://example.com/x.jpg"}, timeout=10)
        assert_envelope(r, 400, "URL inputs are disabled")


# --- concurrency and batching -----------------------------------------------------------------------------


def test_concurrent_requests_are_batched_and_match_single_requests(server, client):
    images = [b64(encode(random_image(seed, 40 + seed, 60 + seed))) for seed in range(8)]
    single = [client.post(ENDPOINT, json={"image": im, "visualize": seed % 2 == 0}).json()
              for seed, im in enumerate(images)]
    before = metric_samples(client.get("/metrics").text, "posepipe_batch_size")
    bodies = [{"image": images[i % 8], "visualize": (i % 8) % 2 == 0} for i in range(64)]
    results = asyncio.run(post_many(server.url, bodies, concurrency=16))
    after = metric_samples(client.get("/metrics").text, "posepipe_batch_size")
    assert all(status == 200 for status, *_ in results)
    for i, (_, body, _, _) in enumerate(results):
        assert without_log_id(body) == without_log_id(single[i % 8])
    log_ids = [body["logId"] for _, body, _, _ in results]
    assert len(set(log_ids)) == len(log_ids)
    calls = after["posepipe_batch_size_count"] - before["posepipe_batch_size_count"]
    images_run = after["posepipe_batch_size_sum"] - before["posepipe_batch_size_sum"]
    assert images_run == 64 and calls < 64, (calls, images_run)  # several requests per pipeline call


def test_requests_with_different_thresholds_get_their_own(server):
    # FakePipeline: det_score = brightness; a person only if det_score >= detThreshold.
    levels = [40, 120, 220]
    thresholds = [None, 0.3, 0.6, 0.9]
    bodies = [{"image": b64(gray_png(level)), "detThreshold": t, "visualize": False}
              for level in levels for t in thresholds] * 4
    results = asyncio.run(post_many(server.url, bodies, concurrency=16))
    for body, (status, out, _, _) in zip(bodies, results):
        level = levels[[b64(gray_png(v)) for v in levels].index(body["image"])]
        expect = 1 if body["detThreshold"] is None or level / 255 >= body["detThreshold"] else 0
        assert status == 200 and len(out["result"]["persons"]) == expect


def test_a_failing_image_does_not_fail_its_batch(server, client):
    # The fake pipeline raises on width-13 images; batched with good ones, only it fails.
    bad = {"image": b64(encode(random_image(5, 20, 13), "PNG")), "visualize": False}
    good = [{"image": b64(encode(random_image(s, 20, 30), "PNG")), "visualize": False} for s in range(7)]
    results = asyncio.run(post_many(server.url, [bad] + good, concurrency=8))
    assert_status = [status for status, *_ in results]
    assert assert_status == [500] + [200] * 7
    assert results[0][1]["errorMsg"] == "Internal server error"
    assert_healthy(client)


def test_overload_is_answered_503_quickly(tmp_path):
    settings = {"max_batch": 2, "max_wait_ms": 0, "max_queue": 4, "retry_after_s": 2}
    with ServerProcess.fake(tmp_path, settings, {"batch_delay_ms": 300}) as proc:
        bodies = [{"image": b64(gray_png(100 + i)), "visualize": False} for i in range(40)]
        t0 = time.perf_counter()
        results = asyncio.run(post_many(proc.url, bodies, concurrency=40, timeout=30))
        total = time.perf_counter() - t0
        statuses = [status for status, *_ in results]
        rejected = [r for r in results if r[0] == 503]
        assert set(statuses) == {200, 503} and len(rejected) >= 20, statuses
        assert statuses.count(200) >= 4  # at least max_queue admitted
        for _, body, seconds, headers in rejected:
            assert body["errorCode"] == 503 and "busy" in body["errorMsg"]
            assert headers["retry-after"] == "2" and seconds < 1.0
        assert total < 15
        metrics = httpx.get(proc.url + "/metrics").text
        assert metric_samples(metrics, 'posepipe_rejected_requests_total{reason="queue_full"}')
        assert httpx.get(proc.url + "/health").json()["errorMsg"] == "Healthy"


def test_queue_is_bounded_in_decoded_pixels_too(tmp_path):
    # 100x100 images, room for 3 of them waiting: the rest are refused once decoded.
    # 3 are accepted when all arrive before the first batch starts, up to 6 when
    # the batcher takes some into the (150 ms) batch in between.
    settings = {"max_batch": 1, "max_wait_ms": 0, "max_queue": 64, "max_queue_pixels": 3 * 100 * 100}
    with ServerProcess.fake(tmp_path, settings, {"batch_delay_ms": 150}) as proc:
        bodies = [{"image": b64(encode(random_image(i, 100, 100), "PNG")), "visualize": False} for i in range(10)]
        results = asyncio.run(post_many(proc.url, bodies, concurrency=10, timeout=30))
        statuses = [status for status, *_ in results]
        assert 3 <= statuses.count(200) <= 6 and statuses.count(503) >= 4, statuses
        assert all("pixels" in body["errorMsg"] for status, body, *_ in results if status == 503)
        metrics = httpx.get(proc.url + "/metrics").text
        assert "posepipe_queue_pixels 0.0" in metrics and "posepipe_queue_depth 0.0" in metrics


def test_requests_wait_while_the_models_warm_up(tmp_path):
    # PaddleX's server listens only once ready, so its clients send at once;
    # here a request that comes first waits for readiness instead of a 503.
    proc = ServerProcess.fake(tmp_path, {}, {"first_call_delay_ms": 1500})
    proc.start(wait="health")
    try:
        ready = httpx.get(proc.url + "/ready")
        assert_envelope(ready, 503, "warming up")
        assert ready.headers["retry-after"] == "1"
        t0 = time.monotonic()
        r = httpx.post(proc.url + ENDPOINT, json={"image": b64(gray_png(9))}, timeout=30)
        assert r.status_code == 200 and time.monotonic() - t0 > 0.5
        assert httpx.get(proc.url + "/ready").status_code == 200
    finally:
        proc.stop()


def test_paddlex_docs_client_right_after_the_server_starts(tmp_path):
    proc = ServerProcess.fake(tmp_path, {}, {"first_call_delay_ms": 1500})
    proc.start(wait="health")
    try:
        assert httpx.get(proc.url + "/ready").status_code == 503
        out = run_paddlex_docs_client(proc.url, PHOTO, tmp_path)
        assert "Output image saved at ./out.jpg" in out
    finally:
        proc.stop()


def test_the_wait_for_readiness_is_bounded(tmp_path):
    proc = ServerProcess.fake(tmp_path, {"ready_wait_s": 0.5, "retry_after_s": 3}, {"first_call_delay_ms": 5000})
    proc.start(wait="health")
    try:
        t0 = time.monotonic()
        r = httpx.post(proc.url + ENDPOINT, json={"image": b64(gray_png(9))}, timeout=30)
        waited = time.monotonic() - t0
        assert_envelope(r, 503, "not ready: warming up")
        assert r.headers["retry-after"] == "3" and 0.4 < waited < 3.0
    finally:
        proc.stop()


# --- operations -----------------------------------------------------------------------------------------------


def test_metrics(server, client):
    client.post(ENDPOINT, json={"image": "!!"})
    client.post(ENDPOINT, json={"image": b64(gray_png(1)), "visualize": False})
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert metric_samples(text, f'posepipe_http_requests_total{{method="POST",path="{ENDPOINT}",status="200"}}')
    assert metric_samples(text, 'posepipe_http_errors_total{code="400"}')[
        'posepipe_http_errors_total{code="400"}'] >= 1
    assert f'posepipe_http_request_duration_seconds_bucket{{le="0.005",path="{ENDPOINT}"}}' in text
    for family in ["posepipe_batch_size_bucket", "posepipe_queue_depth", "posepipe_queue_wait_seconds_bucket",
                   "posepipe_batch_duration_seconds_bucket", "posepipe_http_requests_in_flight", "posepipe_ready 1.0"]:
        assert family in text, family
    assert metric_samples(text, "posepipe_queue_depth")["posepipe_queue_depth"] == 0


def test_structured_logs_carry_the_log_id(server, client):
    out = client.post(ENDPOINT, json={"image": "bad!"}).json()
    ok = client.post(ENDPOINT, json={"image": b64(gray_png(3)), "visualize": False}).json()
    time.sleep(0.2)
    records = {r.get("logId"): r for r in server.log_records() if r.get("logger") == "posepipe.access"}
    assert records[out["logId"]]["status"] == 400 and "base64" in records[out["logId"]]["error"]
    line = records[ok["logId"]]
    assert line["status"] == 200 and line["method"] == "POST" and line["path"] == ENDPOINT
    assert line["duration_ms"] > 0 and {"ts", "level", "msg"} <= set(line)


def test_graceful_shutdown_finishes_in_flight_requests(tmp_path):
    proc = ServerProcess.fake(tmp_path, {"max_batch": 2, "max_wait_ms": 0}, {"batch_delay_ms": 400}).start()
    bodies = [{"image": b64(gray_png(50 + i)), "visualize": False} for i in range(4)]

    async def scenario():
        task = asyncio.ensure_future(post_many(proc.url, bodies, concurrency=4))
        await wait_in_flight(proc.url, 4)  # all four in the server; the first batch is running
        proc.process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        refused = False
        try:
            async with httpx.AsyncClient(timeout=2) as c:
                await c.get(proc.url + "/health")
        except httpx.TransportError:
            refused = True
        return await task, refused

    try:
        results, refused = asyncio.run(scenario())
        code = proc.process.wait(timeout=15)  # the one SIGTERM; another would find Python's default handler
    finally:
        proc.stop()
    assert [status for status, *_ in results] == [200, 200, 200, 200]
    assert refused  # no new connections once shutting down
    assert code == 0
    log = proc.log_text()
    assert "Finished server process" in log and '"msg": "stopped"' in log


def test_yaml_serving_section_sets_the_visualize_default(tmp_path):
    # PaddleX's rule: request.visualize, else the pipeline YAML's Serving.visualize, else true.
    from posepipe.serving import ServingSettings, create_app

    base = (Path(__file__).resolve().parents[1] / "examples" / "shared_real_models.yaml").read_text()
    off, plain = tmp_path / "off.yaml", tmp_path / "plain.yaml"
    off.write_text(base + "Serving:\n  visualize: False\n")
    plain.write_text(base)
    assert create_app(str(off)).state.posepipe.visualize_default is False
    assert create_app(str(plain)).state.posepipe.visualize_default is True
    assert create_app(str(off), ServingSettings(visualize=True)).state.posepipe.visualize_default is True


def test_cli_refuses_a_bad_pipeline_config_at_once(tmp_path):
    missing = tmp_path / "nope.yaml"
    done = subprocess.run([sys.executable, "-m", "posepipe", "serve", "--pipeline", str(missing), "--port", "0"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "nope.yaml" in done.stderr
    done = subprocess.run([sys.executable, "-m", "posepipe", "serve", "--max_batch", "0"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--max_batch" in done.stderr


# --- soak ---------------------------------------------------------------------------------------------------------


def test_soak_2000_requests_no_5xx_no_memory_growth(server):
    images = [b64(encode(random_image(seed))) for seed in range(16)]
    bodies = [{"image": images[i % 16], "visualize": i % 10 == 0, "detThreshold": None if i % 3 else 0.3}
              for i in range(2000)]
    asyncio.run(post_many(server.url, bodies[:300], concurrency=16))  # warm: pools, caches, allocator
    rss_before = server.rss_bytes()
    t0 = time.perf_counter()
    results = asyncio.run(post_many(server.url, bodies, concurrency=16))
    seconds = time.perf_counter() - t0
    rss_after = server.rss_bytes()
    statuses = [status for status, *_ in results]
    print(f"\nsoak: 2000 requests at concurrency 16 in {seconds:.1f} s ({2000 / seconds:.0f}/s); "
          f"server RSS {rss_before / 2**20:.1f} MiB -> {rss_after / 2**20:.1f} MiB")
    assert statuses == [200] * 2000
    assert rss_after - rss_before < 32 * 2**20
    depth = metric_samples(httpx.get(server.url + "/metrics").text, "posepipe_queue_depth")
    assert depth["posepipe_queue_depth"] == 0


# --- the batcher on its own ---------------------------------------------------------------------------------------


class _Stages:
    """The scheduler's view of a pipeline: frames are ints, frame i has i % 4 persons."""

    def __init__(self):
        self.detect_calls = []
        self.keypoint_calls = []

    def predict_boxes(self, frames, threshold):
        self.detect_calls.append((list(frames), threshold))
        time.sleep(0.01)
        return [np.full((f % 4, 5), f, np.float32) for f in frames]

    def estimate_keypoints(self, frames, boxes):
        self.keypoint_calls.append([len(b) for b in boxes])
        return [np.zeros((len(b), 17, 3), np.float32) for b in boxes]

    def build_result(self, frame, boxes, keypoints):
        return (frame, len(boxes), len(keypoints))


def test_batcher_groups_by_threshold_caps_batches_and_drains_on_close():
    from concurrent.futures import ThreadPoolExecutor

    from posepipe.serving.batching import Batcher, Closed

    stages = _Stages()

    async def scenario():
        pool = ThreadPoolExecutor(1)
        batcher = Batcher(stages, pool, max_batch=3, max_wait_s=0.05, max_queue=100, max_batch_persons=4)
        batcher.start()
        jobs = []
        for i in range(10):
            batcher.try_reserve()
            jobs.append(asyncio.ensure_future(batcher.submit(i, 0.5 if i % 2 else None)))
        results = await asyncio.gather(*jobs)
        assert batcher.depth == 0 and batcher.queued_persons == 0
        await batcher.close()
        with pytest.raises(Closed):
            batcher.try_reserve()
        pool.shutdown()
        return results

    results = asyncio.run(scenario())
    assert results == [(i, i % 4, i % 4) for i in range(10)]  # each its own answer, every person estimated
    calls = stages.detect_calls
    assert all(len(frames) <= 3 for frames, _ in calls)
    assert all(all((f % 2 == 1) == (t == 0.5) for f in frames) for frames, t in calls)  # one threshold per call
    assert len(calls) == 4  # 5 + 5 frames in batches of at most 3: 2 + 2 calls
    assert sorted(f for frames, _ in calls for f in frames) == list(range(10))
    assert all(sum(step) <= 4 for step in stages.keypoint_calls)  # persons per keypoint step
    assert sum(sum(step) for step in stages.keypoint_calls) == sum(i % 4 for i in range(10))
