"""Schemathesis over the server's own /openapi.json: schema-valid and
schema-violating requests (bounded number of examples) against a real server
process; no 5xx, every status documented, every body matching its schema."""
from __future__ import annotations

import tempfile

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis.configuration import set_hypothesis_home_dir
from schemathesis.checks import negative_data_rejection, positive_data_acceptance

from posepipe.serving.testing import ServerProcess

# Hypothesis keeps caches in ./.hypothesis by default; keep the checkout clean.
set_hypothesis_home_dir(tempfile.mkdtemp(prefix="posepipe-hypothesis-"))


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    proc = ServerProcess.fake(
        tmp_path_factory.mktemp("fuzz-logs"),
        # URLs the fuzzer invents must fail fast, not wait on DNS or remote hosts.
        {"url_timeout_s": 1.0, "max_body_bytes": 256 * 1024},
        {"batch_delay_ms": 1},
        name="fuzz",
    )
    with proc:
        # /ready said 503 while warming up; count only what the fuzzing causes.
        proc.errors_before = _server_errors(httpx.get(proc.url + "/metrics").text)
        yield proc


def _server_errors(metrics: str) -> dict:
    prefix = 'posepipe_http_errors_total{code="5'
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines() if line.startswith(prefix)}


@pytest.fixture(scope="module")
def api_schema(fuzz_server):
    return schemathesis.openapi.from_url(fuzz_server.url + "/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_responses_match_the_schema(case):
    # Two checks are left out, both by design: positive_data_acceptance (any
    # string is a schema-valid `image`, but only an actual image gets a 200),
    # and negative_data_rejection (validation is pydantic's lax mode, as in
    # PaddleX: "visualize": 0 or "detThreshold": "0.5" are accepted there, so
    # they must be here). Server errors, status codes, content types, headers
    # and response bodies are all checked.
    response = case.call_and_validate(excluded_checks=[positive_data_acceptance, negative_data_rejection], timeout=10)
    assert response.status_code < 500, response.text


def test_server_survived_the_fuzzing(fuzz_server):
    # Runs after the fuzz cases (file order): still healthy, nothing left queued.
    assert httpx.get(fuzz_server.url + "/health").json()["errorMsg"] == "Healthy"
    metrics = httpx.get(fuzz_server.url + "/metrics").text
    assert "posepipe_queue_depth 0.0" in metrics
    assert _server_errors(metrics) == fuzz_server.errors_before
    infer_requests = sum(
        float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
        if line.startswith('posepipe_http_requests_total{method="POST",path="/human-keypoint-detection"')
    )
    assert infer_requests >= 100  # the fuzzer really exercised the endpoint
