"""In-process background work (``hie serve``'s thread mode) with several processes on one database."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from fhir_server.api.app import create_app
from fhir_server.background import Background
from fhir_server.subscriptions.notify import EVENT_HEADER
from tests.conftest import auth_headers
from tests.fhir_server.subscriptions.conftest import fast_settings, subscription, wait_status
from tests.fhir_server.subscriptions.races import another_engine, paused_before_marking, unmatched_events
from tests.fhir_server.subscriptions.receiver import Receiver


def patient(system: str, value: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "identifier": [{"system": system, "value": value}]}


def wait_all_matched(engine: Engine, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while unmatched_events(engine):
        assert time.monotonic() < deadline, unmatched_events(engine)
        time.sleep(0.05)


def test_a_pass_turned_away_by_another_process_lock_leaves_its_events_to_the_holder(backend) -> None:
    """PostgreSQL, two processes: the first one's pass holds the matcher lock and read the outbox before the
    second one saved an event; the second one's pass is turned away; the first one looks again at once rather
    than at its next poll (a minute here)."""
    if backend.name != "postgres":
        pytest.skip("SQLite serialises the matcher's write transactions: no pass is turned away")
    settings = fast_settings(backend.settings, background_poll_seconds=60.0)
    quiet = settings.model_copy(update={"background": "off"})
    receiver = Receiver()
    with another_engine(quiet) as engine:
        api = create_app(quiet, backend.engine)
        other_api = create_app(quiet, engine)
        with (
            TestClient(api, headers=auth_headers(backend)) as client,
            TestClient(other_api, headers=auth_headers(backend)) as other_client,
        ):
            first = Background(settings, backend.engine, api.state.context.service)
            other = Background(settings, engine, other_api.state.context.service)  # its passes run in the test
            first.start()
            try:
                system = f"urn:test:{uuid.uuid4().hex}"
                created = client.post(
                    "/fhir/Subscription", json=subscription(f"Patient?identifier={system}|", receiver.url)
                )
                sub_id = created.json()["id"]
                wait_status(client, sub_id, "active")
                wait_all_matched(backend.engine)
                with paused_before_marking(backend.engine) as (reached, resume):
                    client.post("/fhir/Patient", json=patient("urn:test:unsubscribed", "1"))  # wakes the first
                    assert reached.wait(20)  # its pass holds the lock; its snapshot predates what follows
                    saved = other_client.post("/fhir/Patient", json=patient(system, "2")).json()["id"]
                    other.dispatch_once()  # the saving process's pass, turned away by the lock
                    assert unmatched_events(engine)[-1] == ("Patient", saved)
                    resume.set()
                (request,) = receiver.wait_for(1)
                assert request.headers[EVENT_HEADER.lower()] == f"Patient/{saved}/_history/1"
                assert client.delete(f"/fhir/Subscription/{sub_id}").status_code == 200
            finally:
                first.stop()
                receiver.close()
