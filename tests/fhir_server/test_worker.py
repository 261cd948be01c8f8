"""Production background work: a real Celery worker on Redis runs exports and delivers notifications."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker
from fastapi.testclient import TestClient

from fhir_server import worker
from fhir_server.api.app import create_app
from tests.conftest import auth_headers, require_service
from tests.fhir_server.bulk.helpers import dataset, download, kickoff, wait_complete
from tests.fhir_server.subscriptions.conftest import fast_settings, subscription, wait_status
from tests.fhir_server.subscriptions.receiver import Receiver

REDIS_URL = "redis://127.0.0.1:6379/0"
QUEUE = f"hie-test-{uuid.uuid4().hex}"
"""One queue for the whole run: Celery fixes its queues when a worker first starts."""


@pytest.fixture(scope="module")
def celery_api(backend, tmp_path_factory) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    require_service("Redis", REDIS_URL)
    settings = fast_settings(
        backend.settings,
        background="celery",
        celery_broker_url=REDIS_URL,
        celery_queue=QUEUE,
        export_dir=tmp_path_factory.mktemp("exports"),
    )
    worker.use_runtime(settings)
    app = create_app(settings, backend.engine)
    with TestClient(app, base_url="http://testserver", headers=auth_headers(backend)) as client:
        assert app.state.background.mode == "celery"
        celery_app = worker.configure(settings)
        with start_worker(celery_app, pool="threads", concurrency=2, perform_ping_check=False):
            yield client
        with celery_app.connection_for_write() as connection:
            connection.default_channel.queue_delete(QUEUE)


def test_export_runs_on_a_celery_worker(celery_api: TestClient) -> None:
    assert celery_api.post("/fhir", json=dataset("celery")).status_code == 200
    files = download(celery_api, wait_complete(celery_api, kickoff(celery_api, "/fhir/$export", _type="Patient"), 20))
    assert len(files["Patient"]) == 3


def test_notifications_are_delivered_by_a_celery_worker(celery_api: TestClient) -> None:
    receiver = Receiver()
    try:
        system = f"urn:test:{uuid.uuid4().hex}"
        created: Any = celery_api.post(
            "/fhir/Subscription", json=subscription(f"Patient?identifier={system}|", receiver.url)
        )
        sub_id = created.json()["id"]
        wait_status(celery_api, sub_id, "active")
        ids = []
        for value in ("1", "2"):
            resource = {"resourceType": "Patient", "identifier": [{"system": system, "value": value}]}
            ids.append(celery_api.post("/fhir/Patient", json=resource).json()["id"])
        received = receiver.wait_for(2)
        assert [r.path for r in received] == [f"/hook/Patient/{i}" for i in ids]
        celery_api.delete(f"/fhir/Subscription/{sub_id}")
    finally:
        receiver.close()
