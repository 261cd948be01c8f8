"""$export and Subscription/$resend are declared operations: CapabilityStatement, OperationDefinitions, routes."""

from __future__ import annotations

import pytest

from fhir_server.operations import find_operation
from fhir_server.operations.bulk_export import CAPABILITY
from fhir_server.validation import validate_resource

OFFICIAL = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/"


def _by_type(statement: dict) -> dict[str, dict[str, str]]:
    rest = statement["rest"][0]
    return {entry["type"]: {o["name"]: o["definition"] for o in entry["operation"]} for entry in rest["resource"]}


def test_the_capability_statement_lists_export_and_resend(client) -> None:
    statement = client.get("/fhir/metadata").json()
    assert CAPABILITY in statement["instantiates"]
    system = {o["name"]: o["definition"] for o in statement["rest"][0]["operation"]}
    by_type = _by_type(statement)
    assert system["export"].endswith("/OperationDefinition/export")
    assert by_type["Patient"]["export"].endswith("/OperationDefinition/patient-export")
    assert by_type["Group"]["export"].endswith("/OperationDefinition/group-export")
    assert by_type["Subscription"]["resend"].endswith("/OperationDefinition/Subscription-resend")
    assert "export" not in by_type["Observation"] and "resend" not in by_type["Patient"]


@pytest.mark.parametrize(
    ("definition_id", "level", "resource"),
    [("export", "system", None), ("patient-export", "type", "Patient"), ("group-export", "instance", "Group")],
)
def test_export_definitions_are_served_and_based_on_the_bulk_data_ig(client, definition_id, level, resource) -> None:
    response = client.get(f"/fhir/OperationDefinition/{definition_id}")
    assert response.status_code == 200, response.text
    definition = response.json()
    assert validate_resource(definition) == "OperationDefinition"
    assert definition["code"] == "export" and definition["base"] == OFFICIAL + definition_id
    assert definition["url"].endswith(f"/OperationDefinition/{definition_id}")
    levels = ("system", "type", "instance")
    assert [definition[k] for k in levels] == [k == level for k in levels]
    assert definition.get("resource", []) == ([resource] if resource else ["Patient"])
    names = {p["name"] for p in definition["parameter"]}
    assert names == {"_outputFormat", "_since", "_type", "_typeFilter"}
    statement = client.get("/fhir/metadata").json()
    listed = {o["definition"] for o in statement["rest"][0]["operation"]}
    listed |= {d for ops in _by_type(statement).values() for d in ops.values()}
    assert definition["url"] in listed


def test_resend_definition_is_served(client) -> None:
    definition = client.get("/fhir/OperationDefinition/Subscription-resend").json()
    assert validate_resource(definition) == "OperationDefinition"
    assert definition["code"] == "resend" and definition["instance"] is True and definition["affectsState"] is True
    assert {(p["name"], p["use"], p["min"]) for p in definition["parameter"]} == {
        ("since", "in", 1),
        ("until", "in", 0),
        ("return", "out", 1),
    }


def test_one_code_is_found_at_each_of_its_levels() -> None:
    assert find_operation("export", None, instance=False).id == "export"
    assert find_operation("export", "Patient", instance=False).id == "patient-export"
    assert find_operation("export", "Group", instance=True).id == "group-export"


@pytest.mark.parametrize(
    ("method", "url", "status", "words"),
    [
        # still answered by the Bulk Data and Subscription routes, as before
        ("GET", "/fhir/$export", 400, "Prefer: respond-async"),
        ("GET", "/fhir/Patient/$export", 400, "Prefer: respond-async"),
        ("GET", "/fhir/Group/g1/$export", 400, "Prefer: respond-async"),
        ("POST", "/fhir/Subscription/s1/$resend", 400, "$resend needs 'since'"),
        # levels the definitions do not declare
        ("GET", "/fhir/Group/$export", 404, "not defined at type level on Group"),
        ("GET", "/fhir/Observation/$export", 404, "not defined at type level on Observation"),
        ("GET", "/fhir/Patient/p1/$export", 404, "not defined at instance level on Patient"),
        ("POST", "/fhir/Subscription/$resend", 404, "not defined at type level on Subscription"),
    ],
)
def test_routes_keep_their_behaviour(client, method, url, status, words) -> None:
    response = client.request(method, url)
    assert response.status_code == status, response.text
    assert words in response.json()["issue"][0]["diagnostics"]
