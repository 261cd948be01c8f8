"""Criteria are judged on the version written, even when the matcher runs after later writes of the resource."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fhir_server.api.app import create_app
from fhir_server.subscriptions.dispatcher import Dispatcher
from fhir_server.subscriptions.notify import EVENT_HEADER, Notification
from tests.conftest import auth_headers
from tests.fhir_server.subscriptions.conftest import fast_settings, subscription


@pytest.fixture(scope="module")
def quiet(backend) -> Iterator[tuple[TestClient, Any]]:  # type: ignore[no-untyped-def]
    """An API whose writes nobody dispatches until the test runs a matcher itself."""
    settings = fast_settings(backend.settings, background="off")
    app = create_app(settings, backend.engine)
    with TestClient(app, base_url="http://testserver", headers=auth_headers(backend)) as client:
        yield client, settings


def observation(tag: str, status: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "meta": {"tag": [{"system": "urn:test:matching", "code": tag}]},
        "status": status,
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
    }


def test_superseded_and_deleted_versions_are_matched_as_written(quiet, backend) -> None:
    client, settings = quiet
    tag = uuid.uuid4().hex
    sent: list[Notification] = []
    dispatcher = Dispatcher(
        backend.engine, client.app.state.context.service, settings, sender=lambda n: sent.append(n) or 200
    )  # type: ignore[attr-defined]
    subs = {}
    for status in ("preliminary", "final"):
        criteria = f"Observation?status={status}&_tag=urn:test:matching|{tag}"
        created = client.post(
            "/fhir/Subscription", json=subscription(criteria, f"http://127.0.0.1:9/{status}", payload=None)
        )
        subs[status] = created.json()["id"]
    dispatcher.match()  # activates both
    first = client.post("/fhir/Observation", json=observation(tag, "preliminary")).json()
    client.put(f"/fhir/Observation/{first['id']}", json={**first, "status": "final"})
    second = client.post("/fhir/Observation", json=observation(tag, "final")).json()
    client.delete(f"/fhir/Observation/{second['id']}")
    dispatcher.match()  # every write above is already superseded or current when it runs
    for subscription_id in dispatcher.due():
        dispatcher.deliver(subscription_id)
    got = {(n.url.rsplit("/", 1)[1], n.headers[EVENT_HEADER]) for n in sent}
    assert got == {
        ("preliminary", f"Observation/{first['id']}/_history/1"),
        ("final", f"Observation/{first['id']}/_history/2"),
        ("final", f"Observation/{second['id']}/_history/1"),
    }
    for status, subscription_id in subs.items():
        assert client.delete(f"/fhir/Subscription/{subscription_id}").status_code == 200, status


def test_expunged_versions_are_skipped_without_failing_the_subscription(backend) -> None:
    settings = fast_settings(backend.settings, background="off", allow_expunge=True)
    app = create_app(settings, backend.engine)
    with TestClient(app, base_url="http://testserver", headers=auth_headers(backend)) as client:
        tag = uuid.uuid4().hex
        sent: list[Notification] = []
        service = app.state.context.service
        dispatcher = Dispatcher(backend.engine, service, settings, sender=lambda n: sent.append(n) or 200)
        criteria = f"Observation?_tag=urn:test:matching|{tag}"
        sub_id = client.post("/fhir/Subscription", json=subscription(criteria, "http://127.0.0.1:9/hook")).json()["id"]
        dispatcher.match()
        ids = [client.post("/fhir/Observation", json=observation(tag, "final")).json()["id"] for _ in range(3)]
        dispatcher.match()  # three notifications owed
        client.post(f"/fhir/Observation/{ids[0]}/$expunge")  # gone before it could be sent
        fourth = client.post("/fhir/Observation", json=observation(tag, "final")).json()["id"]
        client.post(f"/fhir/Observation/{fourth}/$expunge")  # gone before it was even matched
        dispatcher.match()
        for subscription_id in dispatcher.due():
            dispatcher.deliver(subscription_id)
        assert [n.url.rsplit("/", 1)[1] for n in sent] == ids[1:]
        assert client.get(f"/fhir/Subscription/{sub_id}").json()["status"] == "active"
        client.delete(f"/fhir/Subscription/{sub_id}")
