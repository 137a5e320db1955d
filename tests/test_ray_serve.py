"""The Ray Serve application (posepipe.ray.serve) on a local Ray: real HTTP
requests through Ray's proxy on 127.0.0.1, answered exactly as `posepipe
serve` answers them (compared with the local app, request by request),
readiness, a killed replica, and `posepipe serve --ray` on the real models."""
from __future__ import annotations

import base64
import gzip
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import ray
from PIL import Image
from ray import serve

import posepipe.ray
from conftest import REPO, local_ray, processes, real_models_config
from posepipe.serving import ServingSettings
from posepipe.serving.schemas import ErrorResponse, InferResponse
from posepipe.serving.testing import FakePipeline, ServerProcess, free_port

ENDPOINT = "/human-keypoint-detection"
# Small limits, so that each can be hit with a small request.
LIMITS = dict(max_batch=4, max_body_bytes=600_000, max_image_bytes=300_000, max_pixels=1_000_000, access_log=False,
              log_level="warning")
SETTINGS = ServingSettings(**LIMITS)


@pytest.fixture(scope="module")
def cluster():
    local_ray()
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="module")
def fake_app(cluster):
    """FakePipeline on 2 replicas, at /fake."""
    app = posepipe.ray.build_app(
        FakePipeline(batch_delay_ms=5), SETTINGS, ray_settings=posepipe.ray.RayServeSettings(replicas=2, replica_cpus=0.25)
    )
    serve.run(app, name="fake", route_prefix="/fake")
    yield cluster + "/fake"
    serve.delete("fake")


@pytest.fixture(scope="module")
def local_server(tmp_path_factory):
    """`posepipe serve` with the same FakePipeline and settings."""
    with ServerProcess.fake(tmp_path_factory.mktemp("local"), LIMITS, {"batch_delay_ms": 5}) as server:
        yield server.url


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 120, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


def _cases(shared_dir: Path):
    photo = _b64((shared_dir / "photos" / "hrnet_demo.jpg").read_bytes())
    plain = {"content-type": "application/json"}
    as_json = lambda body: (json.dumps(body).encode(), plain)  # noqa: E731
    return {
        "photo": as_json({"image": photo, "visualize": False}),
        "photo drawn": as_json({"image": photo}),
        "threshold": as_json({"image": photo, "detThreshold": 0.9, "visualize": False}),
        "client logId echoed": as_json({"image": "%%%", "logId": "mine-1"}),
        "not base64": as_json({"image": "not base64 at all!"}),
        "threshold out of range": as_json({"image": photo, "detThreshold": 5}),
        "boolean threshold": as_json({"image": photo, "detThreshold": True}),
        "no image": as_json({"visualize": False}),
        "not JSON": (b"{not json", plain),
        "gzip": (gzip.compress(json.dumps({"image": photo}).encode()), {**plain, "content-encoding": "gzip"}),
        "body over the limit": as_json({"image": "A" * 700_000}),
        "image bytes over the limit": as_json({"image": _b64(os.urandom(310_000))}),
        "pixels over the limit": as_json({"image": _b64(_png(1200, 1000))}),
        "not an image": as_json({"image": _b64(b"GIF89a" + bytes(100))}),
        "private URL": as_json({"image": "http://127.0.0.1:9/photo.jpg"}),
        "other scheme": as_json({"image": "ftp://example.com/photo.jpg"}),
    }


def _comparable(response) -> tuple:
    body = response.json()
    body.pop("logId") if body.get("logId", "").count("-") == 4 else None  # a server-made uuid; a client's stays
    return response.status_code, body


def test_every_answer_is_the_local_servers(fake_app, local_server, shared_dir):
    """Same status, same envelope, same result (the drawn JPEG included) as
    `posepipe serve` for each request: one request-handling core."""
    statuses = {}
    with httpx.Client(timeout=60) as client:
        for name, (body, headers) in _cases(shared_dir).items():
            ours = client.post(fake_app + ENDPOINT, content=body, headers=headers)
            local = client.post(local_server + ENDPOINT, content=body, headers=headers)
            assert _comparable(ours) == _comparable(local), name
            if ours.status_code == 200:
                InferResponse.model_validate(ours.json())
            else:
                ErrorResponse.model_validate(ours.json())
            statuses[name] = ours.status_code
    assert statuses == {
        "photo": 200, "photo drawn": 200, "threshold": 200, "client logId echoed": 400, "not base64": 400,
        "threshold out of range": 422, "boolean threshold": 422, "no image": 422, "not JSON": 422, "gzip": 415,
        "body over the limit": 413, "image bytes over the limit": 413, "pixels over the limit": 413,
        "not an image": 400, "private URL": 400, "other scheme": 400,
    }


def test_health_ready_and_openapi(fake_app):
    with httpx.Client(timeout=30) as client:
        assert client.get(fake_app + "/health").json()["errorMsg"] == "Healthy"
        assert client.get(fake_app + "/ready").json()["errorMsg"] == "Ready"
        schema = client.get(fake_app + "/openapi.json").json()
        assert ENDPOINT in schema["paths"]
        assert "posepipe_http_requests" in client.get(fake_app + "/metrics").text


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(fake_app, shared_dir):
    """Images of different brightness: each reply carries its own image's detScore."""
    images = [Image.new("RGB", (64 + i, 48), (20 * i, 20 * i, 20 * i)) for i in range(1, 11)]
    bodies = []
    for image in images:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        bodies.append({"image": _b64(buffer.getvalue()), "visualize": False})
    with httpx.Client(timeout=60) as client, ThreadPoolExecutor(10) as pool:
        replies = list(pool.map(lambda body: client.post(fake_app + ENDPOINT, json=body), bodies))
    assert [r.status_code for r in replies] == [200] * 10
    for i, reply in enumerate(replies, start=1):
        persons = reply.json()["result"]["persons"]
        assert persons[0]["bbox"] == [0.0, 0.0, 64.0 + i, 48.0]
        assert persons[0]["detScore"] == pytest.approx(20 * i / 255, abs=1e-6)


def test_a_request_that_comes_while_the_models_load_waits_for_them(cluster, shared_dir):
    """The pipeline replicas take 4 s to warm up; the ingress answers /health at
    once and /ready 503; an inference request sent then is answered 200 once
    the replicas are up (as `posepipe serve` does), not refused."""
    app = posepipe.ray.build_app(
        FakePipeline(first_call_delay_ms=4000), SETTINGS.replace(ready_wait_s=60), ray_settings=posepipe.ray.RayServeSettings(replica_cpus=0.25)
    )
    deploying = threading.Thread(target=serve.run, args=(app,), kwargs={"name": "slow", "route_prefix": "/slow"})
    deploying.start()
    url = cluster + "/slow"
    try:
        with httpx.Client(timeout=60) as client:
            deadline = time.monotonic() + 60
            while True:
                assert time.monotonic() < deadline, "the ingress never answered /health"
                try:
                    if client.get(url + "/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
            ready = client.get(url + "/ready")
            assert ready.status_code == 503 and ready.json()["errorMsg"].startswith("not ready")
            sent = time.monotonic()
            photo = _b64((shared_dir / "photos" / "hrnet_demo.jpg").read_bytes())
            reply = client.post(url + ENDPOINT, json={"image": photo, "visualize": False})
            assert reply.status_code == 200, reply.text
            assert time.monotonic() - sent > 0.5  # it waited for the replicas
            assert client.get(url + "/ready").status_code == 200
    finally:
        deploying.join()
        serve.delete("slow")


def test_a_killed_replica_costs_only_its_requests_and_is_replaced(cluster, shared_dir, tmp_path):
    """Two replicas, each batch 0.5 s; one replica is killed (SIGKILL) while
    both hold requests. Its requests get 503 in PaddleX's envelope with
    Retry-After, the other replica's get 200, none hangs; Ray starts a new
    replica and later requests all succeed."""
    settings = SETTINGS.replace(max_batch=1, retry_after_s=2)
    app = posepipe.ray.build_app(
        FakePipeline(batch_delay_ms=500, mark_dir=str(tmp_path)), settings,
        ray_settings=posepipe.ray.RayServeSettings(replicas=2, replica_cpus=0.25),
    )
    serve.run(app, name="faulty", route_prefix="/faulty")
    url = cluster + "/faulty"
    title = "ServeReplica:faulty:pipeline"
    try:
        before = processes(title)
        assert len(before) == 2
        photo = _b64((shared_dir / "photos" / "hrnet_demo.jpg").read_bytes())
        with httpx.Client(timeout=60) as client, ThreadPoolExecutor(8) as pool:
            pending = [pool.submit(client.post, url + ENDPOINT, json={"image": photo, "visualize": False}) for _ in range(8)]
            victim = before[0]
            deadline = time.monotonic() + 30
            while not (tmp_path / str(victim)).exists():  # it holds a request (the batch lasts 0.5 s)
                assert time.monotonic() < deadline, "the replica got no request"
                time.sleep(0.02)
            os.kill(victim, signal.SIGKILL)
            replies = [job.result(timeout=60) for job in pending]
        statuses = sorted(r.status_code for r in replies)
        assert set(statuses) <= {200, 503}, statuses
        assert 1 <= statuses.count(503) <= 6 and statuses.count(200) >= 2, statuses
        for reply in replies:
            if reply.status_code == 503:
                body = reply.json()
                assert body["errorCode"] == 503 and "replica" in body["errorMsg"]
                assert reply.headers["retry-after"] == "2"
        deadline = time.monotonic() + 90
        while True:
            now = processes(title)
            if len(now) == 2 and victim not in now:
                break
            assert time.monotonic() < deadline, f"no replacement replica: {now}"
            time.sleep(0.5)
        with httpx.Client(timeout=60) as client:
            deadline = time.monotonic() + 60
            while client.post(url + ENDPOINT, json={"image": photo, "visualize": False}).status_code != 200:
                assert time.monotonic() < deadline
                time.sleep(0.5)
            with ThreadPoolExecutor(4) as pool:
                again = list(pool.map(lambda _: client.post(url + ENDPOINT, json={"image": photo, "visualize": False}), range(4)))
        assert [r.status_code for r in again] == [200] * 4
    finally:
        serve.delete("faulty")


def test_a_config_files_args_become_build_apps():
    """What `serve run` / `serve deploy` pass to posepipe.ray.serve:app_builder
    (text values, as `serve run k=v` gives them)."""
    from posepipe.ray.serve import builder_args

    built = builder_args(
        {"pipeline": "my.yaml", "replicas": "2", "replica_cpus": "0.5", "settings": {"max_batch": 2},
         "pipeline_options": {"cpu_threads": 1}, "use_hpip": "false"}
    )
    assert built["pipeline"] == "my.yaml" and built["use_hpip"] is False
    assert built["settings"] == ServingSettings(max_batch=2)
    assert built["ray_settings"] == posepipe.ray.RayServeSettings(replicas=2, replica_cpus=0.5)
    assert built["ray_settings"].scaling(2) == {"num_replicas": 2}
    assert built["pipeline_options"] == {"cpu_threads": 1}
    assert builder_args({})["use_hpip"] is None  # not given: the pipeline YAML's use_hpip
    autoscaled = builder_args({"min_replicas": 1, "max_replicas": 4})["ray_settings"].scaling(4)
    assert autoscaled == {"autoscaling_config": {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 8}}
    with pytest.raises(ValueError, match="unknown argument"):
        builder_args({"replica": 2})
    with pytest.raises(ValueError, match="not both"):
        builder_args({"replicas": 2, "max_replicas": 3})


def test_posepipe_serve_ray_on_the_real_models(cluster, shared_dir, tmp_path):
    """`posepipe serve --ray --ray_address ... --replicas 1` joining this Ray:
    the real models' answers equal the local pipeline's predict; SIGTERM
    deletes the application and exits 0."""
    import yaml

    config = real_models_config(shared_dir)
    yaml_path = tmp_path / "real.yaml"
    yaml_path.write_text(yaml.safe_dump(config))
    address = ray.get_runtime_context().gcs_address
    port = int(cluster.rsplit(":", 1)[1])
    argv = [
        sys.executable, "-m", "posepipe", "serve", "--pipeline", str(yaml_path), "--ray", "--ray_address", address,
        "--replicas", "1", "--cpu_threads", "1", "--host", "127.0.0.1", "--port", str(port), "--log_level", "warning",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO / "python")}
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        child = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        photos = sorted((shared_dir / "photos").glob("*.jpg"))
        with httpx.Client(timeout=60) as client:
            deadline = time.monotonic() + 240
            while True:
                assert child.poll() is None, log_path.read_text(errors="replace")[-3000:]
                assert time.monotonic() < deadline, log_path.read_text(errors="replace")[-3000:]
                try:
                    if client.get(cluster + "/ready").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
            replies = [client.post(cluster + ENDPOINT, json={"image": _b64(p.read_bytes()), "visualize": False}) for p in photos]
        assert [r.status_code for r in replies] == [200] * len(photos)
        import posepipe

        pipeline = posepipe.create_pipeline(config=config, cpu_threads=1)
        for photo, reply in zip(photos, replies):
            (expected,) = list(pipeline.predict(str(photo)))
            persons = reply.json()["result"]["persons"]
            assert len(persons) == len(expected["boxes"]) > 0
            for person, box in zip(persons, expected["boxes"]):
                assert person["bbox"] == pytest.approx([float(v) for v in box["coordinate"]], abs=1e-4)
                assert np.allclose(person["kpts"], box["keypoints"], atol=1e-3)
                assert person["detScore"] == pytest.approx(box["det_score"], abs=1e-6)
        child.send_signal(signal.SIGTERM)
        assert child.wait(120) == 0, log_path.read_text(errors="replace")[-3000:]
        assert "posepipe" not in serve.status().applications
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
