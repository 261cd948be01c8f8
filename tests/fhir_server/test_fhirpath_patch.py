"""FHIRPath Patch (R4B §2.1.0.2): each operation type, pure and through PATCH on both backends."""

from __future__ import annotations

import copy

import pytest

from fhir_server.errors import FhirError
from fhir_server.fhirpath_patch import apply

PATIENT = {
    "resourceType": "Patient",
    "id": "p1",
    "name": [{"family": "陈", "given": ["建国"]}, {"use": "nickname", "text": "老陈"}],
    "telecom": [{"system": "phone", "value": "13907740001"}, {"system": "email", "value": "c@example.cn"}],
    "gender": "male",
}


def op(kind: str, path: str, **parts) -> dict:  # type: ignore[no-untyped-def]
    part = [{"name": "type", "valueCode": kind}, {"name": "path", "valueString": path}]
    for name, value in parts.items():
        part.append({"name": name, **value})
    return {"name": "operation", "part": part}


def patch(*operations: dict) -> dict:
    return {"resourceType": "Parameters", "parameter": list(operations)}


def test_replace_with_where():
    result = apply(
        copy.deepcopy(PATIENT),
        patch(op("replace", "Patient.telecom.where(system='phone').value", value={"valueString": "13907749999"})),
    )
    assert result["telecom"][0]["value"] == "13907749999"
    assert result["telecom"][1]["value"] == "c@example.cn"


def test_add_to_a_list_and_a_single_element():
    result = apply(
        copy.deepcopy(PATIENT),
        patch(
            op("add", "Patient", name={"valueString": "birthDate"}, value={"valueDate": "1958-03-12"}),
            op(
                "add",
                "Patient",
                name={"valueString": "identifier"},
                value={"part": [{"name": "system", "valueUri": "urn:x"}, {"name": "value", "valueString": "1"}]},
            ),
            op("add", "Patient.name[0]", name={"valueString": "given"}, value={"valueString": "阿国"}),
        ),
    )
    assert result["birthDate"] == "1958-03-12"
    assert result["identifier"] == [{"system": "urn:x", "value": "1"}]
    assert result["name"][0]["given"] == ["建国", "阿国"]


def test_insert_delete_and_move():
    result = apply(
        copy.deepcopy(PATIENT),
        patch(
            op(
                "insert",
                "Patient.name",
                value={"part": [{"name": "text", "valueString": "陈先生"}]},
                index={"valueInteger": 0},
            ),
            op("delete", "Patient.name.where(use='nickname')"),
            op("move", "Patient.telecom", source={"valueInteger": 1}, destination={"valueInteger": 0}),
            op("delete", "Patient.birthDate"),
        ),
    )
    assert [n.get("text") for n in result["name"]] == ["陈先生", None]
    assert [t["system"] for t in result["telecom"]] == ["email", "phone"]


@pytest.mark.parametrize(
    "operation",
    [
        op("replace", "Patient.birthDate", value={"valueDate": "2000-01-01"}),  # selects nothing
        op("replace", "Patient.telecom.value", value={"valueString": "x"}),  # two matches
        op("add", "Patient", name={"valueString": "gender"}, value={"valueCode": "female"}),  # already set
        op("insert", "Patient.name", value={"valueString": "x"}, index={"valueInteger": 9}),
        op("frobnicate", "Patient.name"),
        op("delete", "Observation.status"),
        op("delete", "Patient.name.select(family)"),
    ],
)
def test_bad_operations_are_refused(operation):
    with pytest.raises(FhirError):
        apply(copy.deepcopy(PATIENT), patch(operation))


def test_fhirpath_patch_over_rest(client):
    created = client.post("/fhir/Patient", json={k: v for k, v in PATIENT.items() if k != "id"}).json()
    body = patch(op("replace", "Patient.gender", value={"valueCode": "female"}))
    response = client.patch(f"/fhir/Patient/{created['id']}", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["gender"] == "female"
    bad = patch(op("replace", "Patient.gender", value={"valueCode": "unknown-gender"}))
    refused = client.patch(f"/fhir/Patient/{created['id']}", json=bad)
    assert refused.status_code == 400
    assert client.get(f"/fhir/Patient/{created['id']}").json()["meta"]["versionId"] == "2"
