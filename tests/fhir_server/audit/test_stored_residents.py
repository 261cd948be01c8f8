"""Residents of answers built from stored JSON: the same residents, in the same order, as from parsed resources."""

from __future__ import annotations

import orjson
from fastapi.testclient import TestClient

from fhir_server.audit.collector import AccessCollector
from fhir_server.repository import Version
from tests.fhir_server.audit.conftest import FHIR, AuditReader, entity_refs


def _version(resource: dict) -> Version:
    return Version(resource["resourceType"], resource["id"], 1, 0, "POST", orjson.dumps(resource))


def _observation(oid: str, subject: str, **extra: object) -> dict:
    return {"resourceType": "Observation", "id": oid, "status": "final", "subject": {"reference": subject}, **extra}


RESOURCES = [
    _observation("o1", "Patient/p2"),  # before its Patient
    {"resourceType": "Patient", "id": "p1"},
    _observation("o2", "Patient/p1"),
    _observation("o3", "Patient/p1", performer=[{"reference": "Patient/p3"}]),  # another resident
    _observation("o4", "Patient/p1/_history/2"),
    _observation("o5", "http://elsewhere.example/fhir/Patient/p4"),
    _observation("o6", "Patient/p1", note=[{"text": "Patient/p5"}]),  # a mention, no reference
    {"resourceType": "Encounter", "id": "e1", "status": "finished", "class": {"code": "AMB"}, "subject": {}},
    {
        "resourceType": "CarePlan",
        "id": "c1",
        "status": "active",
        "intent": "plan",
        "subject": {"reference": "Patient/p1"},
        "activity": [{"detail": {"status": "completed", "performer": [{"reference": "Patient/p6"}]}}],  # nested
    },
    {"resourceType": "Organization", "id": "org", "name": "Patient/ward"},
    _observation("o7", "Patient/"),
]


def test_stored_versions_give_the_residents_of_the_parsed_resources():
    parsed, stored = AccessCollector({}), AccessCollector({})
    for resource in RESOURCES:
        parsed.resource(resource, entity=False)
        stored.stored(_version(resource))
    assert list(stored.patients) == list(parsed.patients)
    assert list(stored.patients) == ["Patient/p2", "Patient/p1", "Patient/p3", "Patient/p4"]
    assert stored.resources == {}


def test_stored_versions_as_entities():
    collector = AccessCollector({})
    for resource in RESOURCES[:3]:
        collector.stored(_version(resource), entity=True)
    assert list(collector.resources) == ["Observation/o1", "Patient/p1", "Observation/o2"]


def test_everything_records_every_resident_of_the_record(open_client: TestClient):
    audit = AuditReader(open_client.app)
    ids = []
    for _ in range(2):
        response = open_client.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=FHIR)
        ids.append(response.json()["id"])
    pid, other = ids
    body = _observation("x", f"Patient/{pid}", performer=[{"reference": f"Patient/{other}"}])
    body.pop("id")
    body["code"] = {"text": "seen with a relative"}
    assert open_client.post("/fhir/Observation", json=body, headers=FHIR).status_code == 201
    mark = audit.mark()
    bundle = open_client.get(f"/fhir/Patient/{pid}/$everything").json()
    assert bundle["total"] == 2
    assert entity_refs(audit.one_since(mark), "1") == [f"Patient/{pid}", f"Patient/{other}"]
