"""Operation routes, generated OperationDefinitions and the CapabilityStatement, on both backends."""

from __future__ import annotations

import pytest

from fhir_server.operations import OPERATIONS
from fhir_server.validation import validate_resource
from tests.fhir_server.operations.conftest import FHIR


def _patient(client) -> str:
    response = client.post("/fhir/Patient", json={"resourceType": "Patient", "gender": "female"}, headers=FHIR)
    assert response.status_code == 201
    return response.json()["id"]


def _outcome(response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    return body["issue"][0]["diagnostics"]


def test_operation_urls_are_not_read_as_resource_ids(client):
    pid = _patient(client)
    assert client.get("/fhir/Patient/$everything").json()["resourceType"] == "Bundle"
    assert client.get(f"/fhir/Patient/{pid}/$everything").json()["resourceType"] == "Bundle"
    assert client.get("/fhir/Patient/%24everything").json()["resourceType"] == "Bundle"
    assert client.get(f"/fhir/Patient/{pid}").json()["id"] == pid  # reads still work


@pytest.mark.parametrize(
    ("method", "url", "status", "words"),
    [
        ("GET", "/fhir/Patient/$nothing", 404, "Unknown operation $nothing"),
        ("GET", "/fhir/$everything", 404, "not defined at system level"),
        ("GET", "/fhir/Observation/$everything", 404, "not defined at type level on Observation"),
        ("GET", "/fhir/Observation/x/$lastn", 404, "not defined at instance level on Observation"),
        ("GET", "/fhir/Nonsense/$validate", 404, "Unknown resource type 'Nonsense'"),
        ("GET", "/fhir/Patient/bad*id/$meta", 400, "is not a valid resource id"),
        ("GET", "/fhir/Patient/p/$meta-add", 405, "$meta-add changes data: call it with POST"),
        ("GET", "/fhir/Patient/$expunge", 405, "call it with POST"),
        ("GET", "/fhir/Patient/$everything?_format=xml", 406, "_format=xml is not served here"),
    ],
)
def test_bad_operation_requests(client, method, url, status, words):
    assert words in _outcome(client.request(method, url), status)


@pytest.mark.parametrize(
    ("content", "headers", "status", "words"),
    [
        (b"{not json", FHIR, 400, "not valid JSON"),
        (b"[1, 2]", FHIR, 400, "must be a JSON object"),
        (b'{"resourceType": "Parameters"}', {"Content-Type": "text/plain"}, 415, "Content-Type text/plain"),
        (b'{"resourceType": "Patient"}', FHIR, 400, "must be a Parameters resource"),
    ],
)
def test_bad_operation_bodies(client, content, headers, status, words):
    pid = _patient(client)
    response = client.post(f"/fhir/Patient/{pid}/$meta", content=content, headers=headers)
    assert words in _outcome(response, status)


def test_an_oversized_body_is_refused(client, backend):
    pid = _patient(client)
    limit = backend.settings.max_body_bytes
    response = client.post(
        f"/fhir/Patient/{pid}/$meta", content=b" " * 16, headers={**FHIR, "Content-Length": str(limit + 1)}
    )
    assert "exceeds the limit" in _outcome(response, 413)


def test_post_with_an_empty_body_takes_the_query(client):
    pid = _patient(client)
    response = client.post(f"/fhir/Patient/{pid}/$everything?_count=5", headers=FHIR)
    assert response.status_code == 200
    assert response.json()["total"] == 1


def test_generated_operation_definitions_are_served_and_valid(client):
    for operation in OPERATIONS:
        response = client.get(f"/fhir/OperationDefinition/{operation.id}")
        assert response.status_code == 200
        definition = response.json()
        assert definition == operation.definition()
        assert validate_resource(definition) == "OperationDefinition"
    summary = client.get("/fhir/OperationDefinition/Patient-everything?_elements=code").json()
    assert summary["code"] == "everything" and "parameter" not in summary


def test_stored_operation_definitions_still_work(client):
    stored = {
        "resourceType": "OperationDefinition",
        "id": "local-thing",
        "name": "LocalThing",
        "status": "draft",
        "kind": "operation",
        "code": "thing",
        "system": True,
        "type": False,
        "instance": False,
    }
    assert client.put("/fhir/OperationDefinition/local-thing", json=stored, headers=FHIR).status_code == 201
    read = client.get("/fhir/OperationDefinition/local-thing")
    assert read.status_code == 200 and read.json()["code"] == "thing"
    assert client.get("/fhir/OperationDefinition/local-thing", headers={"If-None-Match": 'W/"1"'}).status_code == 304
    assert "is not known" in _outcome(client.get("/fhir/OperationDefinition/nowhere"), 404)


def test_the_capability_statement_lists_the_operations(client):
    statement = client.get("/fhir/metadata").json()
    rest = statement["rest"][0]
    assert [o["name"] for o in rest["operation"]] == ["meta", "export"]
    by_type = {entry["type"]: {o["name"]: o["definition"] for o in entry["operation"]} for entry in rest["resource"]}
    mpi = {"match", "ihe-pix", "mpi-link", "mpi-not-duplicate", "merge", "unmerge"}
    assert (
        set(by_type["Patient"])
        == {"validate", "meta", "meta-add", "meta-delete", "everything", "expunge", "export", "access-log"} | mpi
    )
    assert set(by_type["Observation"]) == {"validate", "meta", "meta-add", "meta-delete", "lastn", "stats", "expunge"}
    definition = by_type["Patient"]["everything"]
    assert client.get(f"/fhir/OperationDefinition/{definition.rsplit('/', 1)[1]}").json()["url"] == definition
