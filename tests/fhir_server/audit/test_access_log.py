"""``Patient/[id]/$access-log``: exactly the accesses to one resident, paged, and only for whom may see it."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from fhir_server.auth.principal import Principal
from fhir_server.errors import FhirError
from fhir_server.operations import Invocation
from fhir_server.operations.access_log import access_log
from fhir_server.storage import unit_of_work
from tests.fhir_server.audit.conftest import FHIR, AuditReader, entity_refs, token_for


def _create(client: TestClient, resource: dict, headers: dict | None = None) -> str:
    response = client.post(f"/fhir/{resource['resourceType']}", json=resource, headers={**FHIR, **(headers or {})})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _log(client: TestClient, pid: str, headers: dict | None = None, **params: object) -> list[dict]:
    """Every page of the resident's access log, following next links."""
    client.app.state.audit.flush()
    response = client.get(f"/fhir/Patient/{pid}/$access-log", params=params, headers=headers or {})
    assert response.status_code == 200, response.text
    events = []
    while True:
        bundle = response.json()
        assert bundle["type"] == "searchset"
        events += [entry["resource"] for entry in bundle.get("entry", [])]
        following = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        if not following:
            return events
        response = client.get(following[0].replace("http://testserver", ""), headers=headers or {})
        assert response.status_code == 200, response.text


def test_the_log_lists_exactly_the_accesses_to_that_resident_newest_first(open_client):
    audit = AuditReader(open_client.app)
    mark = audit.mark()
    mine = _create(open_client, {"resourceType": "Patient", "gender": "female"})
    other = _create(open_client, {"resourceType": "Patient", "gender": "male"})
    observation = {"resourceType": "Observation", "status": "final", "code": {"text": "血压"}}
    _create(open_client, {**observation, "subject": {"reference": f"Patient/{mine}"}})
    _create(open_client, {**observation, "subject": {"reference": f"Patient/{other}"}})
    open_client.get(f"/fhir/Patient/{mine}")
    open_client.get(f"/fhir/Patient/{other}")
    open_client.get("/fhir/Observation", params={"subject": f"Patient/{mine}"})
    open_client.get("/fhir/Observation", params={"subject": f"Patient/{other}"})
    open_client.get("/fhir/Observation", params={"subject": f"Patient/{mine},Patient/{other}"})
    open_client.get(f"/fhir/Patient/{mine}/$everything")

    expected = [e["id"] for e in audit.since(mark) if f"Patient/{mine}" in entity_refs(e, "1")]
    assert len(expected) == 6  # create, create Observation, read, two searches, $everything
    events = _log(open_client, mine, _count=2)
    assert [e["id"] for e in events] == list(reversed(expected))
    for event in events:
        assert entity_refs(event, "1") == [f"Patient/{mine}"]
        assert f"Patient/{other}" not in str(event)
        assert event["agent"][0]["requestor"] is True and event["recorded"]
    shared = next(e for e in events if e["id"] == expected[4])  # the search over both residents
    assert [entity["role"]["code"] for entity in shared["entity"]] == ["1"]  # no query, no other resident


def test_the_log_records_being_read_and_honours_since(open_client):
    pid = _create(open_client, {"resourceType": "Patient"})
    first = _log(open_client, pid)
    second = _log(open_client, pid)
    assert len(second) == len(first) + 1
    assert second[0]["subtype"][1]["code"] == "$access-log"
    assert _log(open_client, pid, _since="2999-01-01T00:00:00Z") == []
    assert len(_log(open_client, pid, _since="2000-01-01")) == len(second) + 2  # and the look with _since


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("_count=0", "must be a positiveInt"),
        ("_since=yesterday", "must be a dateTime"),
        ("_cursor=bm9wZQ", "not one this server issued"),
        ("patient=x", "Unknown parameter 'patient'"),
    ],
)
def test_bad_access_log_requests(open_client, query, words):
    response = open_client.get(f"/fhir/Patient/p1/$access-log?{query}")
    assert response.status_code == 400
    assert words in response.json()["issue"][0]["diagnostics"]


def test_access_log_is_an_instance_operation_with_a_definition(open_client):
    assert open_client.get("/fhir/Patient/$access-log").status_code == 404
    assert open_client.get("/fhir/Observation/o1/$access-log").status_code == 404
    definition = open_client.get("/fhir/OperationDefinition/Patient-access-log").json()
    assert definition["code"] == "access-log" and definition["instance"] is True


def test_clients_allowed_to_read_audit_events_may_read_others_get_403(secured_client):
    writer, _ = token_for(secured_client, "Organization/wz-1", "system/Patient.cruds")
    pid = _create(secured_client, {"resourceType": "Patient"}, writer)
    auditor, _ = token_for(
        secured_client, "Organization/wz-health-commission", "system/Patient.rs system/AuditEvent.rs"
    )
    events = _log(secured_client, pid, auditor)
    assert events and events[-1]["subtype"][0]["code"] == "create"
    response = secured_client.get(f"/fhir/Patient/{pid}/$access-log", headers=writer)
    assert response.status_code == 403
    assert "resident's own app" in response.json()["issue"][0]["diagnostics"]


def test_the_residents_own_app_may_read_their_log_and_no_one_elses(open_client):
    app = open_client.app
    context = app.state.context

    def call(patient: str | None, res_id: str) -> dict:
        principal = Principal(client_id="resident-app", organization=None, patient=patient)
        invocation = Invocation(
            service=context.service,
            settings=context.settings,
            base="http://testserver/fhir",
            path=f"Patient/{res_id}/$access-log",
            res_type="Patient",
            res_id=res_id,
            inputs={},
            principal=principal,
        )
        with unit_of_work(context.engine, write=False) as conn:
            return access_log(invocation, conn)

    assert call("Patient/r1", "r1")["type"] == "searchset"
    for patient in ("Patient/r2", None):
        with pytest.raises(FhirError) as refused:
            call(patient, "r1")
        assert refused.value.kind == "forbidden"
