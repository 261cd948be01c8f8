"""The read and type-search routes tried first (``fhir_server.api.dispatch``) answer as the generic routes do,
and everything else still reaches its own route; both backends."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest
from fastapi.testclient import TestClient

from fhir_server.api.app import create_app
from fhir_server.api.dispatch import HotRoute
from tests.conftest import Backend

FHIR = {"Content-Type": "application/fhir+json"}


@pytest.fixture(scope="module")
def client(backend: Backend) -> Iterator[TestClient]:
    settings = backend.settings.model_copy(update={"auth_disabled": True})
    with TestClient(create_app(settings, backend.engine)) as client:
        yield client


@pytest.fixture(scope="module")
def patient(client: TestClient) -> dict:
    body = {"resourceType": "Patient", "gender": "female", "birthDate": "1951-03-08", "name": [{"family": "韦"}]}
    response = client.post("/fhir/Patient", json=body, headers=FHIR)
    assert response.status_code == 201
    return response.json()


def test_the_hot_routes_come_first(client):
    first = client.app.router.routes[:2]
    assert [type(route) for route in first] == [HotRoute, HotRoute]
    assert [route.name for route in first] == ["read", "search-type"]


def test_a_read_answers_the_stored_resource(client, patient):
    response = client.get(f"/fhir/Patient/{patient['id']}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/fhir+json"
    assert response.headers["etag"] == 'W/"1"'
    assert response.headers["cache-control"] == "no-store"  # the hardening headers still apply
    assert orjson.loads(response.content) == patient


def test_shaped_reads_are_shaped(client, patient):
    pretty = client.get(f"/fhir/Patient/{patient['id']}?_pretty=true")
    assert pretty.content.startswith(b'{\n  "resourceType"') and pretty.json() == patient
    elements = client.get(f"/fhir/Patient/{patient['id']}?_elements=gender").json()
    assert elements["gender"] == "female" and "birthDate" not in elements
    assert elements["meta"]["tag"][-1]["code"] == "SUBSETTED"
    summary = client.get(f"/fhir/Patient/{patient['id']}?_summary=true").json()
    assert summary["meta"]["tag"][-1]["code"] == "SUBSETTED"


def test_a_conditional_read_is_304(client, patient):
    response = client.get(f"/fhir/Patient/{patient['id']}", headers={"If-None-Match": 'W/"1"'})
    assert response.status_code == 304


def test_a_type_search_is_served(client, patient):
    bundle = client.get("/fhir/Patient?gender=female").json()
    assert bundle["type"] == "searchset"
    assert patient["id"] in [entry["resource"]["id"] for entry in bundle["entry"]]
    unknown = client.get("/fhir/Patient?no-such-parameter=1")
    assert unknown.status_code == 400


@pytest.mark.parametrize(
    ("path", "status", "kind"),
    [
        ("/fhir/Patient/{id}/$everything", 200, "Bundle"),
        ("/fhir/Patient/{id}/_history", 200, "Bundle"),
        ("/fhir/Patient/_history", 200, "Bundle"),
        ("/fhir/OperationDefinition/Patient-everything", 200, "OperationDefinition"),
        ("/fhir/metadata", 200, "CapabilityStatement"),
        ("/fhir/Patient/not_an_id!", 404, "OperationOutcome"),
        ("/fhir/NoSuchType/1", 404, "OperationOutcome"),
        ("/fhir/NoSuchType", 404, "OperationOutcome"),
        ("/fhir/Patient/{id}/Observation", 200, "Bundle"),
    ],
)
def test_other_paths_reach_their_own_routes(client, patient, path, status, kind):
    response = client.get(path.format(id=patient["id"]))
    assert response.status_code == status, response.text
    assert response.json()["resourceType"] == kind


def test_other_methods_reach_their_own_routes(client, patient):
    body = {**patient, "gender": "male"}
    assert client.put(f"/fhir/Patient/{patient['id']}", json=body, headers=FHIR).status_code == 200
    assert client.get(f"/fhir/Patient/{patient['id']}").json()["gender"] == "male"
    assert client.head(f"/fhir/Patient/{patient['id']}").status_code == 405
