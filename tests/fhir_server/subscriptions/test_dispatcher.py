"""The dispatcher's view of subscribers that another worker serves (the lease), on both backends."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from fhir_server.api.app import create_app
from fhir_server.config import Settings
from fhir_server.storage.engine import unit_of_work
from fhir_server.subscriptions.dispatcher import Dispatcher, now_micros
from fhir_server.subscriptions.notify import EVENT_HEADER, Notification
from fhir_server.subscriptions.tables import leases
from tests.conftest import auth_headers
from tests.fhir_server.subscriptions.conftest import fast_settings, subscription


@pytest.fixture(scope="module")
def quiet(backend) -> Iterator[tuple[TestClient, Settings]]:  # type: ignore[no-untyped-def]
    """An API whose writes nobody dispatches until the test runs a dispatcher itself."""
    settings = fast_settings(backend.settings, background="off")
    app = create_app(settings, backend.engine)
    with TestClient(app, base_url="http://testserver", headers=auth_headers(backend)) as client:
        yield client, settings


def patient(system: str, value: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "identifier": [{"system": system, "value": value}]}


def test_a_subscriber_another_worker_serves_is_not_due_before_its_lease_can_run_out(quiet, backend) -> None:
    client, settings = quiet
    service = client.app.state.context.service
    sending, go = threading.Event(), threading.Event()
    by_holder: list[Notification] = []
    by_other: list[Notification] = []

    def slow_subscriber(note: Notification) -> int:
        by_holder.append(note)
        sending.set()
        go.wait(60)
        return 200

    holder = Dispatcher(backend.engine, service, settings, sender=slow_subscriber)
    other = Dispatcher(backend.engine, service, settings, sender=lambda note: by_other.append(note) or 200)
    system = f"urn:test:{uuid.uuid4().hex}"
    created = client.post(
        "/fhir/Subscription", json=subscription(f"Patient?identifier={system}|", "http://127.0.0.1:9")
    )
    sub_id = created.json()["id"]
    holder.match()  # activates it
    ids = [client.post("/fhir/Patient", json=patient(system, "1")).json()["id"]]
    holder.match()
    assert other.due() == [sub_id] and other.next_due_in() == 0.0
    delivered: list[int] = []
    delivering = threading.Thread(target=lambda: delivered.append(holder.deliver(sub_id)))
    delivering.start()
    try:
        assert sending.wait(20)
        ids.append(client.post("/fhir/Patient", json=patient(system, "2")).json()["id"])
        other.match()  # owed while the holder sends
        with unit_of_work(backend.engine, write=False) as conn:
            lease_until = conn.execute(
                select(leases.c.lease_until).where(leases.c.subscription_id == sub_id)
            ).scalar_one()
        assert other.due() == []
        waited = other.next_due_in()
        assert waited is not None and waited >= (lease_until - now_micros()) / 1e6 > 0
        assert other.deliver(sub_id) == 0  # turned away by the lease
    finally:
        go.set()
        delivering.join()
    assert delivered == [2] and by_other == []  # the holder sent both, in order, then let go
    assert [n.headers[EVENT_HEADER] for n in by_holder] == [f"Patient/{i}/_history/1" for i in ids]
    assert other.due() == [] and other.next_due_in() is None
    assert client.delete(f"/fhir/Subscription/{sub_id}").status_code == 200
