"""Hardening on both backends: rate limits, timeouts, body and bundle limits, masked logs, CORS, headers."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterator

import anyio
import pytest
from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient
from starlette.concurrency import run_in_threadpool

from fhir_server.api.app import create_app
from fhir_server.api.hardening import MaskingFilter, RateLimiter, install_log_masking, mask_identifiers
from tests.conftest import Backend

FHIR = {"Content-Type": "application/fhir+json"}


def _client(backend: Backend, **settings: object) -> TestClient:
    merged = {"auth_disabled": True, **settings}
    return TestClient(create_app(backend.settings.model_copy(update=merged), backend.engine))


@pytest.fixture(scope="module")
def plain(backend: Backend) -> Iterator[TestClient]:
    with _client(backend) as client:
        yield client


# -- rate limits -------------------------------------------------------------------------------------------------


def test_the_token_bucket_allows_the_burst_then_the_rate():
    now = [100.0]
    limiter = RateLimiter(2.0, 3, clock=lambda: now[0])
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a") == pytest.approx(0.5)
    assert limiter.take("b") == 0.0  # another client has its own bucket
    now[0] += 0.5
    assert limiter.take("a") == 0.0
    assert limiter.take("a") > 0
    assert RateLimiter(5.0, 0).burst == 10  # burst defaults to twice the rate


def test_over_the_limit_is_429_with_retry_after(backend):
    with _client(backend, rate_limit_per_second=0.01, rate_limit_burst=2) as client:
        statuses = [client.get("/fhir/Patient/rl").status_code for _ in range(2)]
        assert statuses == [404, 404]
        response = client.get("/fhir/Patient/rl")
        assert response.status_code == 429
        assert int(response.headers["Retry-After"]) >= 1
        outcome = response.json()
        assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["code"] == "throttled"
        assert client.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=FHIR).status_code == 429


def test_limits_are_per_client(backend):
    from tests.fhir_server.audit.conftest import token_for

    settings = {"auth_disabled": False, "rate_limit_per_second": 0.01, "rate_limit_burst": 1}
    with _client(backend, **settings) as client:
        first, _ = token_for(client, "Organization/rl-1", "system/Patient.rs")
        second, _ = token_for(client, "Organization/rl-2", "system/Patient.rs")
        assert client.get("/fhir/Patient/rl", headers=first).status_code == 404
        assert client.get("/fhir/Patient/rl", headers=first).status_code == 429
        assert client.get("/fhir/Patient/rl", headers=second).status_code == 404


def test_no_limit_by_default(plain):
    assert all(plain.get("/fhir/Patient/rl").status_code == 404 for _ in range(30))


# -- timeouts ----------------------------------------------------------------------------------------------------


def test_a_request_over_the_timeout_is_503_not_a_hang(backend):
    client = _client(backend, request_timeout_seconds=0.2)

    async def slow_in_loop() -> dict:
        await anyio.sleep(30)
        return {}

    async def slow_in_thread() -> dict:
        await run_in_threadpool(time.sleep, 1.0)
        return {}

    async def slow_stream() -> StreamingResponse:
        async def lines() -> AsyncIterator[bytes]:
            yield b"first\n"
            await anyio.sleep(0.5)
            yield b"last\n"

        return StreamingResponse(lines(), media_type="application/fhir+ndjson")

    client.app.add_api_route("/slow-stream", slow_stream)
    client.app.add_api_route("/slow-loop", slow_in_loop)
    client.app.add_api_route("/slow-thread", slow_in_thread)
    with client:
        for path in ("/slow-loop", "/slow-thread"):
            response = client.get(path)
            assert response.status_code == 503, path
            assert response.headers["content-type"] == "application/fhir+json"
            assert response.json()["issue"][0]["code"] == "transient"
            assert "did not finish within 0.2 s" in response.json()["issue"][0]["diagnostics"]
            assert response.headers["x-content-type-options"] == "nosniff"
        assert client.get("/fhir/metadata").status_code == 200
        streamed = client.get("/slow-stream")  # a response already streaming out is not cut
        assert (streamed.status_code, streamed.text) == (200, "first\nlast\n")


# -- body and bundle limits --------------------------------------------------------------------------------------


def _chunks(size: int) -> Iterator[bytes]:
    body = b'{"resourceType":"Patient","text":{"status":"generated","div":"' + b"x" * size + b'"}}'
    for start in range(0, len(body), 256):
        yield body[start : start + 256]


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("POST", "/fhir/Patient"),
        ("PUT", "/fhir/Patient/big"),
        ("PATCH", "/fhir/Patient/big"),
        ("POST", "/fhir"),
        ("POST", "/fhir/Patient/$validate"),
        ("POST", "/fhir/Subscription"),
    ],
)
def test_chunked_bodies_over_the_limit_are_413_on_every_route(backend, method, url):
    with _client(backend, max_body_bytes=2000) as client:
        response = client.request(method, url, content=_chunks(5000), headers=FHIR)
        assert "content-length" not in response.request.headers
        assert response.status_code == 413, response.text
        assert response.json()["issue"][0]["code"] == "too-long"
        declared = client.request(method, url, content=b"x" * 5000, headers=FHIR)
        assert declared.status_code == 413


def test_form_search_bodies_over_a_mebibyte_are_413(plain):
    body = b"name=" + b"a" * (1024 * 1024 + 10)
    response = plain.post(
        "/fhir/Patient/_search", content=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 413


def test_bundles_over_the_entry_limit_are_413(backend):
    with _client(backend, max_bundle_entries=2) as client:
        entry = {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}}
        bundle = {"resourceType": "Bundle", "type": "batch", "entry": [entry] * 3}
        response = client.post("/fhir", json=bundle, headers=FHIR)
        assert response.status_code == 413
        assert "2" in response.json()["issue"][0]["diagnostics"]


# -- masked logs -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("identifier=45040219800101123X", "identifier=**************123X"),
        ("old card 450402800101123 ok", "old card ***********1123 ok"),
        ("phone 13812345678.", "phone 138****5678."),
        ("tel:+8613812345678", "tel:+86138****5678"),
        ("ts 1764338400123456 and pk 12345", "ts 1764338400123456 and pk 12345"),
        ("landline 0774-3831234", "landline 0774-3831234"),
    ],
)
def test_resident_ids_and_mobile_numbers_are_masked(text, masked):
    assert mask_identifiers(text) == masked


def test_the_filter_masks_formatted_log_records():
    record = logging.LogRecord(
        "hie.api",
        logging.INFO,
        __file__,
        1,
        "GET %s from %s",
        ("/fhir/Patient?identifier=45040219800101123X", "13912345678"),
        None,
    )
    assert MaskingFilter().filter(record) is True
    assert record.getMessage() == "GET /fhir/Patient?identifier=**************123X from 139****5678"


def test_create_app_masks_every_log_handler(backend, caplog):
    caplog.set_level(logging.INFO)
    _client(backend)  # creating the application puts the filter on the handlers present (caplog's among them)
    logging.getLogger("hie.test").info("resident %s rang from %s", "45040219800101123X", "13812345678")
    assert "45040219800101123X" not in caplog.text and "13812345678" not in caplog.text
    assert "**************123X" in caplog.text and "138****5678" in caplog.text
    install_log_masking()  # idempotent: one filter per handler
    assert sum(isinstance(f, MaskingFilter) for f in caplog.handler.filters) == 1


# -- CORS and security headers -----------------------------------------------------------------------------------

ORIGIN = "https://console.12349.wuzhou.example"


def test_cors_is_off_by_default(plain):
    response = plain.options("/fhir/Patient", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in response.headers


def test_cors_preflight_for_configured_origins(backend):
    with _client(backend, cors_origins=f"{ORIGIN}, https://other.example") as client:
        preflight = {
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        }
        response = client.options("/fhir/Patient", headers=preflight)
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == ORIGIN
        assert "POST" in response.headers["access-control-allow-methods"]
        refused = client.options("/fhir/Patient", headers={**preflight, "Origin": "https://evil.example"})
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers
        simple = client.get("/fhir/metadata", headers={"Origin": ORIGIN})
        assert simple.headers["access-control-allow-origin"] == ORIGIN
        assert "ETag" in simple.headers["access-control-expose-headers"]


def test_security_headers_on_every_response(plain):
    for path, status in (("/fhir/metadata", 200), ("/fhir/Patient/none", 404), ("/", 200), ("/nowhere", 404)):
        response = plain.get(path)
        assert response.status_code == status
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["content-security-policy"].startswith("default-src 'none'")
        assert "strict-transport-security" not in response.headers
        assert (response.headers.get("cache-control") == "no-store") == path.startswith("/fhir")
    docs = plain.get("/docs")
    assert "content-security-policy" not in docs.headers and docs.headers["x-frame-options"] == "DENY"


def test_hsts_when_configured(backend):
    with _client(backend, hsts=True) as client:
        assert client.get("/fhir/metadata").headers["strict-transport-security"].startswith("max-age=31536000")


def test_uvicorn_access_records_keep_their_arguments():
    args = ("127.0.0.1:5000", "GET", "/fhir/Patient?phone=13812345678", "1.1", 200)
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d', args, None)
    MaskingFilter().filter(record)
    assert record.args == ("127.0.0.1:5000", "GET", "/fhir/Patient?phone=138****5678", "1.1", 200)


def test_masked_exception_text():
    try:
        raise ValueError("bad identifier 45040219800101123X")
    except ValueError:
        import sys

        record = logging.LogRecord("hie.api", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    MaskingFilter().filter(record)
    assert "45040219800101123X" not in record.exc_text and "**************123X" in record.exc_text
