"""Production background work: a real Celery worker on Redis runs exports and delivers notifications."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker
from celery.signals import before_task_publish
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from fhir_server import worker
from fhir_server.access.inprocess import close_in_process_audit
from fhir_server.api.app import create_app
from fhir_server.config import Settings
from fhir_server.storage.engine import unit_of_work
from fhir_server.subscriptions.dispatcher import Dispatcher
from fhir_server.subscriptions.notify import EVENT_HEADER, Notification
from fhir_server.subscriptions.tables import leases
from tests.conftest import auth_headers, require_service
from tests.fhir_server.bulk.helpers import dataset, download, kickoff, wait_complete
from tests.fhir_server.subscriptions.conftest import fast_settings, subscription, wait_status
from tests.fhir_server.subscriptions.races import another_engine, paused_before_marking, unmatched_events
from tests.fhir_server.subscriptions.receiver import Receiver

REDIS_URL = "redis://127.0.0.1:6379/0"
QUEUE = f"hie-test-{uuid.uuid4().hex}"
"""One queue for the whole run: Celery fixes its queues when a worker first starts."""


@pytest.fixture(scope="module")
def celery_settings(backend, tmp_path_factory) -> Settings:  # type: ignore[no-untyped-def]
    require_service("Redis", REDIS_URL)
    return fast_settings(
        backend.settings,
        background="celery",
        celery_broker_url=REDIS_URL,
        celery_queue=QUEUE,
        export_dir=tmp_path_factory.mktemp("exports"),
    )


@pytest.fixture(scope="module")
def celery_worker(celery_settings: Settings) -> Iterator[worker.Runtime]:
    """A Celery worker on Redis (no beat: nothing sweeps) and the runtime its tasks run against."""
    runtime = worker.use_runtime(celery_settings)
    celery_app = worker.configure(celery_settings)
    with start_worker(celery_app, pool="threads", concurrency=2, perform_ping_check=False):
        yield runtime
    with celery_app.connection_for_write() as connection:
        connection.default_channel.queue_delete(QUEUE)
    close_in_process_audit(runtime.dispatcher.engine)
    runtime.dispatcher.engine.dispose()


@pytest.fixture(scope="module")
def celery_api(backend, celery_settings: Settings, celery_worker: worker.Runtime) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    app = create_app(celery_settings, backend.engine)
    with TestClient(app, base_url="http://testserver", headers=auth_headers(backend)) as client:
        assert app.state.background.mode == "celery"
        yield client


@pytest.fixture(scope="module")
def quiet(backend, celery_settings: Settings) -> Iterator[tuple[TestClient, Engine]]:  # type: ignore[no-untyped-def]
    """An API whose writes no one dispatches (on an engine of its own): the test runs the passes."""
    settings = celery_settings.model_copy(update={"background": "off"})
    with another_engine(settings) as engine:
        app = create_app(settings, engine)
        with TestClient(app, base_url="http://testserver", headers=auth_headers(backend)) as client:
            yield client, engine


@contextmanager
def published() -> Iterator[list[tuple[int, str, datetime | None]]]:
    """``(thread, task, eta)`` of every task sent to the broker meanwhile."""
    sent: list[tuple[int, str, datetime | None]] = []

    def record(headers: dict[str, Any], **_: Any) -> None:
        eta = headers.get("eta")
        sent.append((threading.get_ident(), headers["task"], datetime.fromisoformat(eta) if eta else None))

    before_task_publish.connect(record, weak=False)
    try:
        yield sent
    finally:
        before_task_publish.disconnect(record)


def patient(system: str, value: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "identifier": [{"system": system, "value": value}]}


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


def test_a_worker_turned_away_by_a_held_lease_comes_back_when_the_lease_can_run_out(celery_worker, quiet) -> None:
    client, engine = quiet
    service = client.app.state.context.service
    settings = celery_worker.settings
    sending, go = threading.Event(), threading.Event()

    def slow_subscriber(_note: Notification) -> int:
        sending.set()
        go.wait(60)
        return 200

    holder = Dispatcher(engine, service, settings, sender=slow_subscriber)  # another worker, mid-delivery
    system = f"urn:test:{uuid.uuid4().hex}"
    sub_id = client.post(
        "/fhir/Subscription", json=subscription(f"Patient?identifier={system}|", "http://127.0.0.1:9")
    ).json()["id"]
    holder.match()  # activates it
    client.post("/fhir/Patient", json=patient(system, "1"))
    holder.match()
    delivering = threading.Thread(target=holder.deliver, args=(sub_id,))
    delivering.start()
    try:
        assert sending.wait(20)
        with published() as sent:
            assert worker.deliver_subscription(sub_id) == 0
        with unit_of_work(engine, write=False) as conn:
            lease_until = conn.execute(
                select(leases.c.lease_until).where(leases.c.subscription_id == sub_id)
            ).scalar_one()
        lease_end = datetime.fromtimestamp(lease_until / 1e6, UTC)
        # No delivery attempt (and no dispatch pass leading to one) before the holder's lease could run out.
        queued = [(task, eta) for thread, task, eta in sent if thread == threading.get_ident()]
        assert [task for task, _ in queued] == ["hie.dispatch_outbox"]
        assert all(eta is not None and eta > lease_end - timedelta(seconds=1) for _, eta in queued), (queued, lease_end)
    finally:
        go.set()
        delivering.join()
    assert client.get(f"/fhir/Subscription/{sub_id}").json()["status"] == "active"
    client.delete(f"/fhir/Subscription/{sub_id}")


def test_a_pass_turned_away_by_the_matcher_lock_leaves_its_events_to_the_holder(backend, celery_worker, quiet) -> None:
    """PostgreSQL: the pass holding the lock read the outbox before the event was saved; the event's own pass is
    turned away by that lock; the holder queues one more pass, which the worker runs: no sweep is needed."""
    if backend.name != "postgres":
        pytest.skip("SQLite serialises the matcher's write transactions: no pass is turned away")
    client, _ = quiet
    receiver = Receiver()
    try:
        system = f"urn:test:{uuid.uuid4().hex}"
        sub_id = client.post(
            "/fhir/Subscription", json=subscription(f"Patient?identifier={system}|", receiver.url)
        ).json()["id"]
        worker.dispatch_outbox()  # activates it
        client.post("/fhir/Patient", json=patient("urn:test:unsubscribed", "1"))
        first: list[int] = []
        with paused_before_marking(celery_worker.dispatcher.engine) as (reached, resume), published() as sent:
            holder = threading.Thread(target=lambda: first.append(worker.dispatch_outbox()))
            holder.start()
            assert reached.wait(20)  # the first pass holds the lock; its snapshot predates what follows
            saved = client.post("/fhir/Patient", json=patient(system, "2")).json()["id"]
            assert worker.dispatch_outbox() == 0  # the event's own pass, turned away by the lock
            assert unmatched_events(celery_worker.dispatcher.engine)[-1] == ("Patient", saved)
            resume.set()
            holder.join()
        assert first == [1]  # the first pass matched only what it could see
        assert (holder.ident, "hie.dispatch_outbox") in [(thread, task) for thread, task, _ in sent]
        (request,) = receiver.wait_for(1)
        assert request.headers[EVENT_HEADER.lower()] == f"Patient/{saved}/_history/1"
        assert unmatched_events(celery_worker.dispatcher.engine) == []
        client.delete(f"/fhir/Subscription/{sub_id}")
    finally:
        receiver.close()
