"""Who sees what through ``$match`` and ``$ihe-pix`` (both backends): consent and the caller's own records decide."""

from __future__ import annotations

from typing import Any

from ehr_archive.identifiers import RESIDENT_ID_SYSTEM, mrn_system
from fhir_server.access.codes import CONSENT_CATEGORY_SYSTEM, REGIONAL_SHARING
from tests.conftest import auth_headers
from tests.ehr_archive.conftest import patient, resident_id, unique_org
from tests.ehr_archive.test_mpi_linking import golden_id

SCOPES = "system/*.cruds"


class Resident:
    """One resident held by institutions A and B; C holds nothing of them."""

    def __init__(self, backend, client, born: str, sequence: int) -> None:  # type: ignore[no-untyped-def]
        self.client = client
        self.orgs = {name: unique_org() for name in "ABC"}
        self.headers = {
            name: auth_headers(backend, SCOPES, organization=f"Organization/{org}") for name, org in self.orgs.items()
        }
        self.rid = resident_id(born.replace("-", ""), sequence)
        self.born = born
        self.a = self.write("A", "DA-1", phone="13907745001", district="长洲区")
        self.b = self.write("B", "DB-1", phone="13907745002", district="藤县")
        assert golden_id(self.a) == golden_id(self.b)
        self.golden = golden_id(self.a)

    def write(self, who: str, mrn: str, **fields: Any) -> dict[str, Any]:
        body = patient(self.orgs[who], mrn, family="甘", given="润生", born=self.born, rid=self.rid, **fields)
        response = self.client.post("/fhir/Patient", json=body, headers=self.headers[who])
        assert response.status_code == 201, response.text
        return response.json()

    def match(self, who: str | None) -> dict[str, Any]:
        query = {"resourceType": "Patient", "name": [{"family": "甘", "given": ["润生"]}], "birthDate": self.born}
        query["identifier"] = [{"system": RESIDENT_ID_SYSTEM, "value": self.rid}]
        body = {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": query}]}
        headers = self.headers[who] if who else {}
        response = self.client.post("/fhir/Patient/$match", json=body, headers=headers)
        assert response.status_code == 200, response.text
        return response.json()

    def pix(self, who: str | None, system: str, value: str) -> Any:
        headers = self.headers[who] if who else {}
        return self.client.get(f"/fhir/Patient/$ihe-pix?sourceIdentifier={system}|{value}", headers=headers)

    def consent(self, who: str) -> None:
        body = {
            "resourceType": "Consent",
            "status": "active",
            "scope": {
                "coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]
            },
            "category": [{"coding": [{"system": CONSENT_CATEGORY_SYSTEM, "code": REGIONAL_SHARING}]}],
            "patient": {"reference": f"Patient/{self.a['id']}"},
            "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]},
        }
        response = self.client.post("/fhir/Consent", json=body, headers=self.headers[who])
        assert response.status_code == 201, response.text


def _matched(bundle: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["resource"]["id"]: e for e in bundle.get("entry", []) if e["search"]["mode"] == "match"}


def _links(golden: dict[str, Any]) -> set[str]:
    return {link["other"]["reference"] for link in golden.get("link", []) if link["type"] == "seealso"}


def _tags(golden: dict[str, Any]) -> set[str]:
    return {tag["code"] for tag in golden["meta"]["tag"]}


def test_stewards_see_the_whole_golden(backend, mpi_client) -> None:  # type: ignore[no-untyped-def]
    resident = Resident(backend, mpi_client, "1959-11-02", 201)

    entry = _matched(resident.match(None))[resident.golden]

    assert _links(entry["resource"]) == {f"Patient/{resident.a['id']}", f"Patient/{resident.b['id']}"}
    assert "SUBSETTED" not in _tags(entry["resource"])
    assert entry["search"]["score"] == 1.0


def test_an_institution_without_a_record_or_consent_learns_nothing(backend, mpi_client) -> None:  # type: ignore[no-untyped-def]
    resident = Resident(backend, mpi_client, "1959-11-03", 211)

    bundle = resident.match("C")
    pix = resident.pix("C", RESIDENT_ID_SYSTEM, resident.rid)

    assert resident.golden not in _matched(bundle)
    assert bundle["total"] == 0
    assert pix.status_code == 404, pix.text
    assert pix.json()["issue"][0]["diagnostics"] == "sourceIdentifier Patient Identifier not found"


def test_an_institution_sees_the_golden_as_its_own_records_make_it(backend, mpi_client) -> None:  # type: ignore[no-untyped-def]
    resident = Resident(backend, mpi_client, "1959-11-04", 221)

    golden = _matched(resident.match("A"))[resident.golden]["resource"]

    assert "SUBSETTED" in _tags(golden) and "golden-record" in _tags(golden)
    assert _links(golden) == {f"Patient/{resident.a['id']}"}
    assert [t["value"] for t in golden["telecom"]] == ["13907745001"]  # B's phone is B's to share
    assert [a.get("district") for a in golden["address"]] == ["长洲区"]

    pix = resident.pix("A", RESIDENT_ID_SYSTEM, resident.rid)
    assert pix.status_code == 200, pix.text
    shown = {p["valueIdentifier"]["system"] for p in pix.json()["parameter"] if p["name"] == "targetIdentifier"}
    assert shown == {mrn_system(resident.orgs["A"])}  # not B's medical record number
    ids = {p["valueReference"]["reference"] for p in pix.json()["parameter"] if p["name"] == "targetId"}
    assert ids == {f"Patient/{resident.golden}", f"Patient/{resident.a['id']}"}
    by_b_mrn = resident.pix("A", mrn_system(resident.orgs["B"]), "DB-1")
    assert by_b_mrn.status_code == 404  # naming B's record does not open it either


def test_consent_opens_the_golden_and_every_record_to_institutions(backend, mpi_client) -> None:  # type: ignore[no-untyped-def]
    resident = Resident(backend, mpi_client, "1959-11-05", 231)
    resident.consent("A")  # the resident agrees to regional sharing, recorded at institution A

    golden = _matched(resident.match("C"))[resident.golden]["resource"]
    pix = resident.pix("C", mrn_system(resident.orgs["A"]), "DA-1")

    assert "SUBSETTED" not in _tags(golden)
    assert _links(golden) == {f"Patient/{resident.a['id']}", f"Patient/{resident.b['id']}"}
    assert pix.status_code == 200, pix.text
    shown = {p["valueIdentifier"]["system"] for p in pix.json()["parameter"] if p["name"] == "targetIdentifier"}
    assert shown == {RESIDENT_ID_SYSTEM, mrn_system(resident.orgs["B"])}


def test_an_emergency_service_breaking_the_glass_sees_the_whole_golden(backend, mpi_client) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from fhir_server.api.app import create_app

    resident = Resident(backend, mpi_client, "1959-11-06", 241)
    emergency = f"Organization/{unique_org()}"
    settings = backend.settings.model_copy(update={"mpi_enabled": True, "break_glass_organizations": emergency})
    headers = auth_headers(backend, "system/*.rs", organization=emergency)
    query = {"resourceType": "Patient", "identifier": [{"system": RESIDENT_ID_SYSTEM, "value": resident.rid}]}
    body = {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": query}]}

    with TestClient(create_app(settings, backend.engine), base_url="http://testserver") as client:
        ordinary = client.post("/fhir/Patient/$match", json=body, headers=headers)
        urgent = client.post(
            "/fhir/Patient/$match", json=body, headers={**headers, "X-Break-Glass-Reason": "120 call 2026-0311"}
        )

    assert ordinary.status_code == 200 and _matched(ordinary.json()) == {}
    assert urgent.status_code == 200, urgent.text
    golden = _matched(urgent.json())[resident.golden]["resource"]
    assert _links(golden) == {f"Patient/{resident.a['id']}", f"Patient/{resident.b['id']}"}
