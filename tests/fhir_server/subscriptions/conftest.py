"""An application with fast background work (short polls, retries and backoff) on each backend."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fhir_server.api.app import create_app
from fhir_server.config import Settings
from fhir_server.subscriptions.criteria import PAYLOAD_CONTENT_URL, SIGNING_SECRET_URL
from tests.conftest import auth_headers
from tests.fhir_server.subscriptions.receiver import Receiver

BASE = "http://hie.test/fhir"


def fast_settings(settings: Settings, **overrides: Any) -> Settings:
    values = {
        "background_poll_seconds": 0.2,
        "subscription_retry_base_seconds": 0.1,
        "subscription_max_attempts": 3,
        "subscription_timeout_seconds": 2.0,
        "base_url": BASE,
        **overrides,
    }
    return settings.model_copy(update=values)


def subscription(
    criteria: str,
    endpoint: str | None = None,
    *,
    channel: str = "rest-hook",
    payload: str | None = "application/fhir+json",
    content: str | None = None,
    secret: str | None = None,
    headers: list[str] | None = None,
) -> dict[str, Any]:
    chan: dict[str, Any] = {"type": channel}
    if endpoint:
        chan["endpoint"] = endpoint
    if payload:
        chan["payload"] = payload
    if content:
        chan["_payload"] = {"extension": [{"url": PAYLOAD_CONTENT_URL, "valueCode": content}]}
    if secret:
        chan["extension"] = [{"url": SIGNING_SECRET_URL, "valueString": secret}]
    if headers:
        chan["header"] = headers
    return {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "test notifications",
        "criteria": criteria,
        "channel": chan,
    }


def wait_status(client: TestClient, sub_id: str, status: str, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        found = client.get(f"/fhir/Subscription/{sub_id}").json()
        if found.get("status") == status:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"Subscription/{sub_id} is {found.get('status')}, not {status}: {found}")
        time.sleep(0.05)


def subscribe(client: TestClient, resource: dict[str, Any]) -> str:
    response = client.post("/fhir/Subscription", json=resource)
    assert response.status_code == 201, response.text
    sub_id = response.json()["id"]
    wait_status(client, sub_id, "active")
    return sub_id


@pytest.fixture(scope="module")
def client(backend) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    app = create_app(fast_settings(backend.settings), backend.engine)
    with TestClient(app, base_url="http://testserver", headers=auth_headers(backend)) as test_client:
        yield test_client


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()
