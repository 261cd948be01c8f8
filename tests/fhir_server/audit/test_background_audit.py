"""Background work done for a client leaves an AuditEvent of the worker in the chain, on both backends: each bulk
export run (for its requester) and each round of notifications sent to a subscriber (listing what was sent)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from fhir_server.access.inprocess import WORKER_AGENT, flush_in_process_audit
from fhir_server.api.app import create_app
from fhir_server.audit import verify
from fhir_server.bulk.export import Exporter
from fhir_server.storage.engine import unit_of_work
from fhir_server.storage.tables import audit_log
from fhir_server.subscriptions.dispatcher import Dispatcher
from fhir_server.subscriptions.notify import Notification
from tests.conftest import auth_headers
from tests.fhir_server.bulk.helpers import ASYNC
from tests.fhir_server.subscriptions.conftest import fast_settings, subscription

INSTITUTION = "Organization/bg-audit"


class Api:
    def __init__(self, http: TestClient, backend: Any, settings: Any) -> None:
        self.http = http
        self.backend = backend
        self.settings = settings
        self.headers = auth_headers(backend, "system/*.cruds", organization=INSTITUTION)
        self.service = http.app.state.context.service  # type: ignore[attr-defined]

    def create(self, body: dict[str, Any]) -> str:
        response = self.http.post(f"/fhir/{body['resourceType']}", json=body, headers=self.headers)
        assert response.status_code == 201, response.text
        return response.json()["id"]


@pytest.fixture(scope="module")
def api(backend, tmp_path_factory) -> Iterator[Api]:  # type: ignore[no-untyped-def]
    settings = fast_settings(backend.settings).model_copy(
        update={"background": "off", "export_dir": tmp_path_factory.mktemp("exports")}
    )
    with TestClient(create_app(settings, backend.engine), base_url="http://testserver") as http:
        yield Api(http, backend, settings)


def worker_events(engine: Any, words: str) -> list[dict[str, Any]]:
    flush_in_process_audit(engine)
    with unit_of_work(engine, write=False) as conn:
        rows = conn.execute(select(audit_log.c.event).where(audit_log.c.client_id == WORKER_AGENT)).scalars()
        return [event for event in map(orjson.loads, rows) if words in event["outcomeDesc"]]


def organization_of(event: dict[str, Any]) -> str | None:
    return next((a["who"]["reference"] for a in event["agent"] if "reference" in a.get("who", {})), None)


def test_notifications_sent_are_audited_for_the_subscriber(api: Api) -> None:
    system = f"urn:test:{uuid.uuid4().hex}"
    sub_id = api.create(subscription(f"Observation?code={system}|", "https://his.example.cn/hook"))
    sent: list[Notification] = []
    dispatcher = Dispatcher(api.backend.engine, api.service, api.settings, sender=lambda note: sent.append(note) or 200)
    with unit_of_work(api.backend.engine) as conn:
        dispatcher.active(conn)  # requested → active
    patient = api.create({"resourceType": "Patient", "gender": "female"})
    observation = api.create(
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": system, "code": "1"}]},
            "subject": {"reference": f"Patient/{patient}"},
        }
    )
    dispatcher.match()
    assert dispatcher.deliver(sub_id) == 1 and len(sent) == 1

    [event] = worker_events(api.backend.engine, f"Subscription/{sub_id}")
    assert event["outcome"] == "0"
    assert event["subtype"][1]["code"] == "notify"
    assert organization_of(event) == INSTITUTION
    listed = {e["what"]["reference"] for e in event["entity"]}
    assert f"Observation/{observation}" in "".join(listed)
    assert f"Patient/{patient}" in listed

    assert dispatcher.deliver(sub_id) == 0  # nothing due: nothing sent, no event
    assert len(worker_events(api.backend.engine, f"Subscription/{sub_id}")) == 1


def test_an_export_run_is_audited_for_its_requester(api: Api) -> None:
    api.create({"resourceType": "Patient", "gender": "male"})
    response = api.http.get("/fhir/Patient/$export", headers={**ASYNC, **api.headers})
    assert response.status_code == 202, response.text
    job_id = response.headers["Content-Location"].rstrip("/").split("/")[-1]
    exporter = Exporter(api.backend.engine, api.settings, api.service.registry)
    assert exporter.run(job_id)
    assert not exporter.run(job_id)  # over: not run again, no second event

    [event] = worker_events(api.backend.engine, f"job {job_id}")
    assert event["subtype"][1]["code"] == "$export"
    assert organization_of(event) == INSTITUTION
    assert "for client=" in event["outcomeDesc"]
    checked, _, broken = verify(api.backend.engine)
    assert broken is None and checked > 0
