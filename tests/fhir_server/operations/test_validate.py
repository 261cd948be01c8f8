"""``$validate``: modes, profiles posted to the server, and every bad input, on both backends."""

from __future__ import annotations

import pytest

from ehr_archive.identifiers import RESIDENT_ID_SYSTEM
from tests.fhir_server.operations.conftest import FHIR
from tests.fhir_server.operations.profiles import (
    PROFILE_URL,
    blood_pressure,
    blood_pressure_profile,
    interpretation_value_set,
)


@pytest.fixture(scope="module")
def profile_stored(client) -> None:
    for resource in (blood_pressure_profile(), interpretation_value_set()):
        assert client.post(f"/fhir/{resource['resourceType']}", json=resource, headers=FHIR).status_code == 201


def _issues(response) -> list[tuple[str, str]]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    return [(issue["severity"], issue["diagnostics"]) for issue in body["issue"]]


def _parameters(resource: dict | None = None, **values: str) -> dict:
    entries = [{"name": "resource", "resource": resource}] if resource is not None else []
    entries += [{"name": name, "valueCode" if name == "mode" else "valueUri": value} for name, value in values.items()]
    return {"resourceType": "Parameters", "parameter": entries}


def _stored_patient(client) -> str:
    return client.post("/fhir/Patient", json={"resourceType": "Patient", "gender": "male"}, headers=FHIR).json()["id"]


def test_a_valid_resource_gets_an_information_issue(client):
    issues = _issues(client.post("/fhir/Patient/$validate", json={"resourceType": "Patient"}, headers=FHIR))
    assert issues == [("information", "The Patient is valid.")]
    wrapped = _parameters({"resourceType": "Patient", "gender": "female"}, mode="create")
    assert _issues(client.post("/fhir/Patient/$validate", json=wrapped, headers=FHIR))[0][0] == "information"


def test_problems_are_listed_with_a_200(client):
    resource = {"resourceType": "Patient", "gender": "x", "birthDate": "yesterday", "bogus": 1}
    issues = _issues(client.post("/fhir/Patient/$validate", json=resource, headers=FHIR))
    assert issues[0] == ("error", "The Patient is not valid R4B: 3 problems found.")
    assert len(issues) == 4 and {severity for severity, _ in issues} == {"error"}


def test_regional_rules_apply_as_on_a_write(client):
    resident = {
        "resourceType": "Patient",
        "identifier": [{"system": RESIDENT_ID_SYSTEM, "value": "450403199001011235"}],  # wrong check digit
    }
    issues = _issues(client.post("/fhir/Patient/$validate", json=resident, headers=FHIR))
    assert issues[0] == ("error", "The Patient breaks 1 regional rule(s).")


def test_a_resource_of_another_type_than_the_url(client):
    issues = _issues(client.post("/fhir/Patient/$validate", json=_parameters({"resourceType": "Group"}), headers=FHIR))
    assert issues == [("error", "The body holds a Group but the URL names Patient.")]


def test_update_mode_needs_a_matching_id(client):
    pid = _stored_patient(client)
    no_id = _parameters({"resourceType": "Patient"}, mode="update")
    assert _issues(client.post("/fhir/Patient/$validate", json=no_id, headers=FHIR)) == [
        ("error", "An update needs the resource's id.")
    ]
    other = _parameters({"resourceType": "Patient", "id": "other"}, mode="update")
    assert _issues(client.post(f"/fhir/Patient/{pid}/$validate", json=other, headers=FHIR)) == [
        ("error", f"The resource's id 'other' does not match the id '{pid}' in the URL.")
    ]
    same = _parameters({"resourceType": "Patient", "id": pid}, mode="update")
    assert _issues(client.post(f"/fhir/Patient/{pid}/$validate", json=same, headers=FHIR))[0][0] == "information"


def test_delete_mode(client):
    pid = _stored_patient(client)
    assert _issues(client.get(f"/fhir/Patient/{pid}/$validate?mode=delete")) == [
        ("information", f"Patient/{pid} can be deleted.")
    ]
    assert _issues(client.get("/fhir/Patient/missing/$validate?mode=delete")) == [
        ("error", "Patient/missing is not known; there is nothing to delete.")
    ]
    client.delete(f"/fhir/Patient/{pid}")
    assert _issues(client.get(f"/fhir/Patient/{pid}/$validate?mode=delete"))[0][1].endswith(
        "is already deleted; there is nothing to delete."
    )


def test_instance_level_without_a_resource_checks_the_stored_version(client):
    pid = _stored_patient(client)
    assert _issues(client.get(f"/fhir/Patient/{pid}/$validate")) == [("information", "The Patient is valid.")]
    assert client.get("/fhir/Patient/missing/$validate").status_code == 404


@pytest.mark.parametrize(
    ("method", "url", "body", "status", "words"),
    [
        ("GET", "/fhir/Patient/$validate", None, 400, "$validate needs the resource"),
        ("GET", "/fhir/Patient/$validate?mode=delete", None, 400, "mode=delete checks the deletion of one resource"),
        ("GET", "/fhir/Patient/p/$validate?mode=remove", None, 400, "mode=remove is not one of"),
        ("GET", "/fhir/Patient/p/$validate?mode=create&mode=update", None, 400, "at most 1 time(s)"),
        ("GET", "/fhir/Patient/$validate?resource=x", None, 400, "send it in a POST Parameters body"),
        ("POST", "/fhir/Patient/$validate", {"resourceType": "Parameters"}, 400, "$validate needs the resource"),
        ("POST", "/fhir/Patient/$validate", {"resource": {}}, 400, "must be a resource"),
        (
            "POST",
            "/fhir/Patient/$validate",
            _parameters({"resourceType": "Patient"}, profile="https://nowhere.example/sd"),
            400,
            "The profile https://nowhere.example/sd is not known here",
        ),
        (
            "POST",
            "/fhir/Patient/$validate",
            {"resourceType": "Parameters", "parameter": [{"name": "resource", "valueString": "x"}]},
            400,
            "is a resource: send 'resource'",
        ),
    ],
)
def test_bad_validate_requests(client, method, url, body, status, words):
    response = client.request(method, url, json=body, headers=FHIR if body is not None else {})
    assert response.status_code == status, response.text
    assert words in response.json()["issue"][0]["diagnostics"]


def test_an_unknown_claimed_profile_is_a_warning(client):
    resource = {"resourceType": "Patient", "meta": {"profile": ["https://nowhere.example/sd"]}}
    issues = _issues(client.post("/fhir/Patient/$validate", json=resource, headers=FHIR))
    assert issues == [
        ("information", "The Patient is valid."),
        ("warning", "Profile https://nowhere.example/sd (meta.profile) is not known here; not checked."),
    ]
    core = {"resourceType": "Patient", "meta": {"profile": ["http://hl7.org/fhir/StructureDefinition/Patient"]}}
    assert _issues(client.post("/fhir/Patient/$validate", json=core, headers=FHIR)) == [
        ("information", "The Patient is valid.")
    ]


def test_a_stored_profile_is_applied(client, profile_stored):
    good = blood_pressure()
    assert _issues(client.post("/fhir/Observation/$validate", json=good, headers=FHIR)) == [
        ("information", "The Observation is valid.")
    ]
    bad = blood_pressure(systolic=320)
    bad["interpretation"][0]["coding"][0]["code"] = "X"
    bad["status"] = "amended"
    issues = _issues(client.post("/fhir/Observation/$validate", json=bad, headers=FHIR))
    assert [severity for severity, _ in issues] == ["error", "error", "error"]
    assert all(text.startswith(f"Profile {PROFILE_URL}: ") for _, text in issues)
    texts = " | ".join(text for _, text in issues)
    assert "must be exactly 'final'" in texts and "required value set" in texts and "invariant systolic-1" in texts


def test_the_profile_parameter_names_a_profile_the_resource_does_not_claim(client, profile_stored):
    resource = blood_pressure()
    del resource["meta"]
    resource["category"] = [{"text": "home"}]
    body = _parameters(resource, profile=PROFILE_URL)
    issues = _issues(client.post("/fhir/Observation/$validate", json=body, headers=FHIR))
    assert issues == [
        (
            "error",
            f"Profile {PROFILE_URL}: Observation.category:VSCat needs at least 1 value(s), found 0",
        )
    ]
    versioned = _parameters(resource, profile=f"{PROFILE_URL}|9.9")
    response = client.post("/fhir/Observation/$validate", json=versioned, headers=FHIR)
    assert response.status_code == 400


def test_a_profile_that_is_no_resource_profile(client):
    datatype = {
        "resourceType": "StructureDefinition",
        "url": "https://hie.wuzhou.gov.cn/fhir/StructureDefinition/test-datatype",
        "name": "TestDatatype",
        "status": "active",
        "kind": "complex-type",
        "abstract": False,
        "type": "HumanName",
        "baseDefinition": "http://hl7.org/fhir/StructureDefinition/HumanName",
        "derivation": "constraint",
        "differential": {"element": [{"id": "HumanName", "path": "HumanName"}]},
    }
    assert client.post("/fhir/StructureDefinition", json=datatype, headers=FHIR).status_code == 201
    body = _parameters({"resourceType": "Patient"}, profile=datatype["url"])
    response = client.post("/fhir/Patient/$validate", json=body, headers=FHIR)
    assert response.status_code == 400
    assert "does not profile a resource" in response.json()["issue"][0]["diagnostics"]
