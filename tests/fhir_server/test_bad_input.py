"""Every bad input gets a precise OperationOutcome and leaves stored data untouched."""

from __future__ import annotations

import uuid

import pytest


@pytest.fixture(scope="module")
def stored(client):  # type: ignore[no-untyped-def]
    patient = {"resourceType": "Patient", "identifier": [{"system": "urn:test", "value": uuid.uuid4().hex}]}
    return client.post("/fhir/Patient", json=patient).json()


def history_size(client) -> int:  # type: ignore[no-untyped-def]
    return len(client.get("/fhir/_history", params={"_count": 1000}).json().get("entry", []))


def outcome(response, status: int) -> list[dict]:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["diagnostics"]
    return body["issue"]


def test_malformed_json(client, stored):
    before = history_size(client)
    issues = outcome(
        client.post(
            "/fhir/Patient", content=b'{"resourceType": "Patient",', headers={"Content-Type": "application/fhir+json"}
        ),
        400,
    )
    assert "not valid JSON" in issues[0]["diagnostics"]
    outcome(
        client.put(f"/fhir/Patient/{stored['id']}", content=b"[1,", headers={"Content-Type": "application/fhir+json"}),
        400,
    )
    assert history_size(client) == before


def test_invalid_resource_lists_every_problem_with_its_path(client):
    bad = {
        "resourceType": "Observation",
        "status": "bogus",
        "valueQuantity": {"value": "abc"},
        "subject": {"reference": "Patient/1"},
        "unknownElement": 1,
    }
    issues = outcome(client.post("/fhir/Observation", json=bad), 400)
    paths = {tuple(i.get("expression", ())) for i in issues[1:]}
    assert ("Observation.status",) in paths
    assert ("Observation.code",) in paths
    assert ("Observation.valueQuantity.value",) in paths
    assert ("Observation.unknownElement",) in paths


def test_required_binding_enforced(client):
    issues = outcome(client.post("/fhir/Patient", json={"resourceType": "Patient", "gender": "x"}), 400)
    assert issues[1]["code"] == "code-invalid"
    assert issues[1]["expression"] == ["Patient.gender"]
    nested = {"resourceType": "Patient", "telecom": [{"system": "pager2", "value": "1"}]}
    issues = outcome(client.post("/fhir/Patient", json=nested), 400)
    assert issues[1]["expression"] == ["Patient.telecom[0].system"]


def test_resource_type_mismatch_and_id_mismatch(client, stored):
    outcome(client.post("/fhir/Observation", json={"resourceType": "Patient"}), 400)
    issues = outcome(client.put(f"/fhir/Patient/{stored['id']}", json={"resourceType": "Patient", "id": "other"}), 400)
    assert "does not match" in issues[0]["diagnostics"]
    outcome(client.put(f"/fhir/Patient/{stored['id']}", json={"resourceType": "Patient"}), 400)
    outcome(client.put(f"/fhir/Observation/{stored['id']}", json={**stored, "resourceType": "Patient"}), 400)
    assert client.get(f"/fhir/Patient/{stored['id']}").json()["meta"]["versionId"] == "1"


def test_unknown_type_unknown_id_unknown_version(client, stored):
    outcome(client.get("/fhir/Spaceship/1"), 404)
    outcome(client.post("/fhir/Spaceship", json={"resourceType": "Spaceship"}), 404)
    outcome(client.get(f"/fhir/Patient/{uuid.uuid4()}"), 404)
    outcome(client.get(f"/fhir/Patient/{stored['id']}/_history/99"), 404)
    outcome(client.get(f"/fhir/Patient/{stored['id']}/_history/abc"), 404)
    outcome(client.get(f"/fhir/Patient/{uuid.uuid4()}/_history"), 404)


def test_invalid_client_id(client):
    issues = outcome(client.put("/fhir/Patient/bad_id!", json={"resourceType": "Patient", "id": "bad_id!"}), 400)
    assert "not a valid resource id" in issues[0]["diagnostics"]


def test_body_over_limit_is_413(client, backend):
    limit = backend.settings.max_body_bytes
    huge = b'{"resourceType":"Patient","text":{"status":"generated","div":"' + b"x" * (limit + 10) + b'"}}'
    outcome(client.post("/fhir/Patient", content=huge, headers={"Content-Type": "application/fhir+json"}), 413)


def test_wrong_content_type_is_415_and_unserved_format_is_406(client, stored):
    outcome(client.post("/fhir/Patient", content=b"<Patient/>", headers={"Content-Type": "application/fhir+xml"}), 415)
    outcome(client.post("/fhir/Patient", content=b"{}"), 415)
    outcome(client.get(f"/fhir/Patient/{stored['id']}", headers={"Accept": "application/fhir+xml"}), 406)
    outcome(client.get(f"/fhir/Patient/{stored['id']}", params={"_format": "xml"}), 406)
    assert client.get(f"/fhir/Patient/{stored['id']}", params={"_format": "json"}).status_code == 200
    patch = client.patch(f"/fhir/Patient/{stored['id']}", json=[], headers={"Content-Type": "application/xml"})
    outcome(patch, 415)


def test_method_not_allowed(client, stored):
    outcome(client.post(f"/fhir/Patient/{stored['id']}", json=stored), 405)
    outcome(client.put("/fhir/Patient", json=stored), 405)
    outcome(client.delete("/fhir/Patient"), 405)


def test_stale_and_malformed_if_match(client, stored):
    outcome(client.put(f"/fhir/Patient/{stored['id']}", json=stored, headers={"If-Match": "yesterday"}), 400)


def test_unknown_search_parameter_in_condition(client):
    issues = outcome(
        client.post("/fhir/Patient", json={"resourceType": "Patient"}, headers={"If-None-Exist": "shoe-size=42"}), 400
    )
    assert "shoe-size" in issues[0]["diagnostics"]


def test_bad_history_parameters(client):
    outcome(client.get("/fhir/Patient/_history", params={"_since": "last tuesday"}), 400)
    outcome(client.get("/fhir/Patient/_history", params={"_count": "-1"}), 400)
    outcome(client.get("/fhir/Patient/_history", params={"_cursor": "garbage"}), 400)


def test_invalid_resident_id_number_is_refused(client):
    bad = {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:oid:2.16.156.10011.1.3", "value": "450405195803120019"}],
    }
    issues = outcome(client.post("/fhir/Patient", json=bad), 400)
    assert issues[1]["expression"] == ["Patient.identifier[0].value"]
    assert "check" in issues[1]["diagnostics"].lower()
    good = {**bad, "identifier": [{"system": "urn:oid:2.16.156.10011.1.3", "value": "450405195803120015"}]}
    assert client.post("/fhir/Patient", json=good).status_code == 201
