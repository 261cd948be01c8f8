"""Notifications survive a restart: outbox rows and pending deliveries outlive the dispatcher that saw them."""

from __future__ import annotations

import uuid

from fastapi.testclient import TestClient

from fhir_server.api.app import create_app
from fhir_server.background import Background
from fhir_server.subscriptions.notify import EVENT_HEADER
from tests.conftest import auth_headers
from tests.fhir_server.subscriptions.conftest import fast_settings, subscription, wait_status
from tests.fhir_server.subscriptions.receiver import Receiver


def test_a_new_dispatcher_delivers_what_the_stopped_one_left(backend) -> None:
    receiver = Receiver(statuses=[503, 503])  # the subscriber is down when the first notification goes out
    settings = fast_settings(backend.settings, subscription_max_attempts=100, subscription_retry_base_seconds=0.05)
    api = create_app(settings.model_copy(update={"background": "off"}), backend.engine)
    try:
        with TestClient(api, headers=auth_headers(backend)) as client:
            service = api.state.context.service
            system = f"urn:test:{uuid.uuid4().hex}"
            sub = client.post("/fhir/Subscription", json=subscription(f"Patient?identifier={system}|", receiver.url))
            sub_id = sub.json()["id"]
            first = Background(settings, backend.engine, service)
            first.start()
            wait_status(client, sub_id, "active")
            resource = {"resourceType": "Patient", "identifier": [{"system": system, "value": "1"}]}
            pid = client.post("/fhir/Patient", json=resource).json()["id"]
            receiver.wait_for(1)
            first.stop()  # mid-way: version 1 is not delivered yet
            for n in range(2, 5):  # written while no dispatcher runs at all
                resource |= {"id": pid, "gender": ["male", "female", "other"][n - 2]}
                assert client.put(f"/fhir/Patient/{pid}", json=resource).status_code == 200
            failures = len(receiver.requests)
            assert failures <= 2
            second = Background(settings, backend.engine, service)
            second.start()
            try:
                received = receiver.wait_for(2 + 4)
            finally:
                second.stop()
            delivered = [r.headers[EVENT_HEADER.lower()] for r in received[2:]]
            assert delivered == [f"Patient/{pid}/_history/{v}" for v in range(1, 5)]
            assert [r.headers[EVENT_HEADER.lower()] for r in received[:2]] == [f"Patient/{pid}/_history/1"] * 2
            client.delete(f"/fhir/Subscription/{sub_id}")
    finally:
        receiver.close()
