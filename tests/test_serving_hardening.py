"""The HTTP server against careless and hostile clients, on the fake pipeline:
idle and slow connections, bodies that never finish, clients that leave,
compressed bodies, crowded images, slow image URLs, oversized
visualizations, forged log lines, and what its log may contain. Each server
is a real uvicorn process on 127.0.0.1 (a free port), except where the
event loop itself is watched."""
from __future__ import annotations

import asyncio
import base64
import gzip
import http.server
import io
import json
import socket
import threading
import time
from typing import Any, List, Optional

import httpx
import numpy as np
import pytest
from PIL import Image

from posepipe.serving import ServingSettings
from posepipe.serving.testing import ServerProcess
from test_serving import ENDPOINT, assert_envelope, b64, encode, gray_png, metric_samples, post_many, random_image


def raw_request(port: int, data: bytes, wait: float = 10.0, close_after: Optional[float] = None) -> bytes:
    """Send `data` as is, then read until the server closes (or `wait` passes);
    with `close_after`, hang up that many seconds after sending instead."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        if data:
            s.sendall(data)
        if close_after is not None:
            time.sleep(close_after)
            return b""
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except socket.timeout:
            chunks.append(b"<still open>")
        return b"".join(chunks)


def post_head(length: int, extra: str = "") -> bytes:
    return (f"POST {ENDPOINT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n{extra}\r\n").encode()


def json_body(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def images_run(url: str) -> float:
    return metric_samples(httpx.get(url + "/metrics").text, "posepipe_images_total").get("posepipe_images_total", 0.0)


def wait_for_metric(url: str, name: str, at_least: float, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while metric_samples(httpx.get(url + "/metrics").text, name).get(name, 0.0) < at_least:
        assert time.monotonic() < deadline, f"{name} never reached {at_least}"
        time.sleep(0.02)


def access_lines(proc: ServerProcess) -> List[dict]:
    return [r for r in proc.log_records() if r.get("logger") == "posepipe.access"]


# --- slow and idle clients ----------------------------------------------------------------


@pytest.fixture(scope="module")
def timeouts_server(tmp_path_factory):
    settings = {"header_timeout_s": 1.0, "body_timeout_s": 1.0}
    with ServerProcess.fake(tmp_path_factory.mktemp("timeouts"), settings, name="timeouts") as proc:
        yield proc


@pytest.mark.parametrize(
    "data",
    [b"", b"POST /human-keypoint-detection HTTP/1.1\r\nHost: x\r\n"],
    ids=["nothing-sent", "half-the-headers"],
)
def test_connections_without_complete_headers_are_dropped(timeouts_server, data):
    t0 = time.monotonic()
    reply = raw_request(timeouts_server.port, data)
    assert b"<still open>" not in reply and time.monotonic() - t0 < 4.0
    assert reply == b"" or reply.startswith(b"HTTP/1.1 408")


def test_half_headers_after_a_keep_alive_request_are_dropped_too(timeouts_server):
    with socket.create_connection(("127.0.0.1", timeouts_server.port), timeout=10) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        first = b""
        while b"Healthy" not in first:  # headers and body may come apart
            first += s.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        s.sendall(b"GET /health HTTP/1.1\r\nHo")
        t0 = time.monotonic()
        rest = b""
        while chunk := s.recv(65536):
            rest += chunk
        assert time.monotonic() - t0 < 8.0  # header timeout + keep-alive, then closed
        assert rest == b"" or rest.startswith(b"HTTP/1.1 408")


def test_a_body_that_stops_coming_gets_408(timeouts_server):
    t0 = time.monotonic()
    reply = raw_request(timeouts_server.port, post_head(1000) + b'{"image": "')
    assert time.monotonic() - t0 < 4.0
    assert reply.startswith(b"HTTP/1.1 408") and b"did not arrive within 1 s" in reply
    assert b'"errorCode":408' in reply


def test_a_client_that_leaves_mid_body_is_not_a_parse_error(timeouts_server):
    errors_before = metric_samples(httpx.get(timeouts_server.url + "/metrics").text, 'posepipe_http_errors_total{code="400"}')
    raw_request(timeouts_server.port, post_head(1000) + b'{"image": "', close_after=0.2)
    time.sleep(0.5)
    line = access_lines(timeouts_server)[-1]
    assert line["status"] == 499 and "parsing" not in line.get("error", "")
    errors_after = metric_samples(httpx.get(timeouts_server.url + "/metrics").text, 'posepipe_http_errors_total{code="400"}')
    assert errors_after == errors_before


def test_connections_are_capped_by_default(tmp_path):
    assert ServingSettings().limit_concurrency == 256
    with ServerProcess.fake(tmp_path, {"limit_concurrency": 3}) as proc:
        idle = [socket.create_connection(("127.0.0.1", proc.port)) for _ in range(3)]
        try:
            time.sleep(0.2)
            assert httpx.get(proc.url + "/health").status_code == 503
        finally:
            for s in idle:
                s.close()
        time.sleep(0.2)
        assert httpx.get(proc.url + "/health").status_code == 200


# --- bodies --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plain_server(tmp_path_factory):
    with ServerProcess.fake(tmp_path_factory.mktemp("plain"), {"allow_private_urls": True}, name="plain") as proc:
        yield proc


@pytest.mark.parametrize("encoding", ["gzip", "br", "deflate"])
def test_compressed_bodies_are_415_naming_the_encoding(plain_server, encoding):
    body = gzip.compress(json_body(image=b64(gray_png(9))))
    r = httpx.post(plain_server.url + ENDPOINT, content=body,
                   headers={"content-type": "application/json", "content-encoding": encoding})
    assert_envelope(r, 415, f"Content-Encoding: {encoding}")


def test_a_huge_visualization_is_scaled_to_fit_a_jpeg(plain_server):
    # JPEG stops at 65,500 pixels a side; the drawing is scaled down to fit.
    image = np.full((2, 70000, 3), 200, np.uint8)
    r = httpx.post(plain_server.url + ENDPOINT, json={"image": b64(encode(image, "PNG")), "visualize": True}, timeout=60)
    assert r.status_code == 200, r.text[:300]
    with Image.open(io.BytesIO(base64.b64decode(r.json()["result"]["image"]))) as drawn:
        assert drawn.format == "JPEG" and drawn.size == (65500, 2)
    assert r.json()["result"]["persons"][0]["bbox"] == [0.0, 0.0, 70000.0, 2.0]  # the answer is in input pixels


# --- admission: a full server, clients that left -------------------------------------------


def test_a_full_server_answers_503_without_reading_the_body(tmp_path):
    settings = {"max_batch": 1, "max_wait_ms": 0, "max_queue": 1}
    with ServerProcess.fake(tmp_path, settings, {"batch_delay_ms": 1500}) as proc:
        statuses = []

        def send(level: int) -> None:
            r = httpx.post(proc.url + ENDPOINT, json={"image": b64(gray_png(level)), "visualize": False}, timeout=30)
            statuses.append(r.status_code)

        filling = [threading.Thread(target=send, args=(level,)) for level in (10, 11)]
        filling[0].start()
        while True:  # until the first is on the pipeline: in flight, no longer in the queue
            metrics = httpx.get(proc.url + "/metrics").text
            if (metric_samples(metrics, "posepipe_http_requests_in_flight")["posepipe_http_requests_in_flight"] > 1
                    and metric_samples(metrics, "posepipe_queue_depth")["posepipe_queue_depth"] == 0):
                break
            time.sleep(0.02)
        filling[1].start()
        wait_for_metric(proc.url, "posepipe_queue_depth", 1)  # the second waits: the queue is full
        t0 = time.monotonic()
        reply = raw_request(proc.port, post_head(30 * 1024 * 1024), wait=5)  # only the headers are sent
        assert reply.startswith(b"HTTP/1.1 503") and b"busy" in reply and time.monotonic() - t0 < 1.0
        for thread in filling:
            thread.join()
        assert statuses == [200, 200]


def test_requests_whose_client_left_are_not_run(tmp_path):
    settings = {"max_batch": 1, "max_wait_ms": 0}
    with ServerProcess.fake(tmp_path, settings, {"batch_delay_ms": 1500}) as proc:
        before = images_run(proc.url)
        body = json_body(image=b64(gray_png(50)), visualize=False)
        running = threading.Thread(target=lambda: httpx.post(proc.url + ENDPOINT, content=body, timeout=30))
        running.start()
        time.sleep(0.3)  # the first request is on the pipeline
        leavers = [threading.Thread(target=raw_request, args=(proc.port, post_head(len(body)) + body),
                                    kwargs={"close_after": 0.2}) for _ in range(3)]
        for t in leavers:
            t.start()
        for t in leavers:
            t.join()
        running.join()
        time.sleep(1.0)
        assert images_run(proc.url) - before == 1
        inference = [line["status"] for line in access_lines(proc) if line["path"] == ENDPOINT]
        assert sorted(inference) == [200, 499, 499, 499]


# --- crowded images --------------------------------------------------------------------------


def test_a_crowded_image_does_not_hold_up_the_others(tmp_path):
    # detThreshold 0 on this fake finds 100 persons at 20 ms each: 2 s of keypoint work.
    settings = {"max_batch": 4, "max_wait_ms": 0, "max_batch_persons": 4}
    with ServerProcess.fake(tmp_path, settings, {"person_delay_ms": 20, "noise_persons": 100}) as proc:
        crowded = {}

        def send_crowded():
            t0 = time.monotonic()
            r = httpx.post(proc.url + ENDPOINT, json={"image": b64(gray_png(120)), "detThreshold": 0, "visualize": False},
                           timeout=60)
            crowded.update(status=r.status_code, persons=len(r.json()["result"]["persons"]), seconds=time.monotonic() - t0)

        thread = threading.Thread(target=send_crowded)
        thread.start()
        wait_for_metric(proc.url, "posepipe_keypoint_step_persons_count", 1)  # detected, keypoints under way
        small = []
        with httpx.Client(base_url=proc.url, timeout=60) as c:
            for i in range(5):
                t0 = time.monotonic()
                r = c.post(ENDPOINT, json={"image": b64(gray_png(100 + i)), "visualize": False})
                assert r.status_code == 200 and len(r.json()["result"]["persons"]) == 1
                small.append(time.monotonic() - t0)
        thread.join()
        assert crowded["status"] == 200 and crowded["persons"] == 100 and crowded["seconds"] > 1.9
        assert max(small) < 1.0, small  # a step or two of 4 persons (80 ms each), not the whole 2 s


def test_persons_per_image_are_capped_to_the_top_scoring(tmp_path):
    with ServerProcess.fake(tmp_path, {"max_persons": 10}, {"noise_persons": 100}) as proc:
        r = httpx.post(proc.url + ENDPOINT, json={"image": b64(gray_png(120)), "detThreshold": 0, "visualize": False})
        scores = [p["detScore"] for p in r.json()["result"]["persons"]]
        assert r.status_code == 200 and len(scores) == 10
        assert min(scores) > 0.89  # the fake's scores run 0.99, 0.98, ...: these are its best ten


def test_keypoint_work_waiting_counts_when_admitting(tmp_path):
    settings = {"max_batch_persons": 4, "max_queue_persons": 50, "retry_after_s": 2}
    with ServerProcess.fake(tmp_path, settings, {"person_delay_ms": 30, "noise_persons": 100}) as proc:
        thread = threading.Thread(target=lambda: httpx.post(
            proc.url + ENDPOINT, json={"image": b64(gray_png(120)), "detThreshold": 0}, timeout=60))
        thread.start()
        wait_for_metric(proc.url, "posepipe_keypoint_step_persons_count", 1)  # detected: over 50 persons wait
        r = httpx.post(proc.url + ENDPOINT, json={"image": b64(gray_png(100))})
        assert_envelope(r, 503, "persons")
        assert r.headers["retry-after"] == "2"
        thread.join()
        assert httpx.post(proc.url + ENDPOINT, json={"image": b64(gray_png(100))}).status_code == 200


# --- slow image URLs ------------------------------------------------------------------------


class _SlowHost(http.server.BaseHTTPRequestHandler):
    photo = gray_png(77)

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        time.sleep(3)
        try:
            self.send_response(200)
            self.send_header("Content-Length", str(len(self.photo)))
            self.end_headers()
            self.wfile.write(self.photo)
        except OSError:
            pass


def test_slow_url_downloads_hold_no_queue_slot(tmp_path):
    host = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowHost)
    host.daemon_threads = True
    threading.Thread(target=host.serve_forever, daemon=True).start()
    settings = {"max_queue": 3, "max_downloads": 3, "url_timeout_s": 10, "allow_private_urls": True}
    try:
        with ServerProcess.fake(tmp_path, settings) as proc:
            url = f"http://127.0.0.1:{host.server_address[1]}/slow.png"

            async def scenario():
                downloads = asyncio.ensure_future(post_many(proc.url, [{"image": url, "visualize": False}] * 3, 3))
                await asyncio.get_running_loop().run_in_executor(
                    None, wait_for_metric, proc.url, "posepipe_downloads_in_progress", 3
                )
                async with httpx.AsyncClient(timeout=30) as c:
                    extra = await c.post(proc.url + ENDPOINT, json={"image": url})
                base64_results = await post_many(
                    proc.url, [{"image": b64(gray_png(30 + i)), "visualize": False} for i in range(8)], 3
                )
                return await downloads, extra, base64_results

            downloaded, extra, others = asyncio.run(scenario())
            assert [r[0] for r in others] == [200] * 8  # the queue was free for them
            assert_envelope(extra, 503, "downloads")
            assert [r[0] for r in downloaded] == [200] * 3
    finally:
        host.shutdown()
        host.server_close()


# --- logs ------------------------------------------------------------------------------------


def test_every_line_of_the_json_log_is_json(tmp_path):
    with ServerProcess.fake(tmp_path, {}, {"warning": "a library complains"}) as proc:
        assert httpx.post(proc.url + ENDPOINT, json={"image": b64(gray_png(9))}).status_code == 200
        httpx.post(proc.url + ENDPOINT, json={"image": "!!"})
    lines = [line for line in proc.log_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # raises on any other line
    assert any(r["logger"] == "py.warnings" and "a library complains" in r["msg"] for r in records)


def test_text_log_lines_cannot_be_forged(tmp_path):
    with ServerProcess.fake(tmp_path, {"log_format": "text"}) as proc:
        forged = "2026-01-01T00:00:00.000Z INFO    posepipe.access: FORGED"
        httpx.get(proc.url + "/nothing%0d%0a" + forged.replace(" ", "%20"))
        httpx.post(proc.url + ENDPOINT, json={"image": "!!", "logId": "x\r\n" + forged})
        time.sleep(0.2)
    text = proc.log_text()
    assert "FORGED" in text  # logged, on the request's own line
    assert not any(line.startswith("2026-01-01") or line.startswith("FORGED") for line in text.splitlines())
    assert "\\n" + forged in text or "\\r\\n" + forged in text


# --- shutdown ----------------------------------------------------------------------------------


def test_shutdown_keeps_the_event_loop_running_while_work_finishes():
    from posepipe.serving.app import ServingRuntime
    from posepipe.serving.engine import LocalEngine
    from posepipe.serving.testing import FakePipeline
    from posepipe.io import Frame

    async def scenario():
        settings = ServingSettings(decode_threads=1, warmup=False)
        runtime = ServingRuntime(LocalEngine(FakePipeline(batch_delay_ms=800), settings), settings)
        await runtime.start()
        while not runtime.ready:
            await asyncio.sleep(0.01)
        loop = asyncio.get_running_loop()
        slow_decode = loop.run_in_executor(runtime.decode_pool, time.sleep, 0.8)
        batcher = runtime.engine.batcher
        batcher.try_reserve()
        request = asyncio.ensure_future(batcher.submit(Frame(random_image(1), None), None))
        await asyncio.sleep(0.1)
        gaps: List[float] = []

        async def tick():
            last = time.monotonic()
            while True:
                await asyncio.sleep(0.01)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        ticker = asyncio.ensure_future(tick())
        await runtime.stop()
        ticker.cancel()
        result = await request
        await slow_decode
        return gaps, result

    gaps, result = asyncio.run(scenario())
    assert len(result["boxes"]) == 1  # the in-flight request was answered
    assert max(gaps) < 0.4, max(gaps)  # the batch and the decode take 0.7 s more
