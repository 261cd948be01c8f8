"""SMART scopes on every interaction: without the permission → 403 naming the scope, with it → success.

Each client here belongs to one institution, which wrote the data, so institution filters never interfere.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.conftest import Backend
from tests.fhir_server.auth.conftest import scoped

ORG = "Organization/auth-test"
VITAL = "http://terminology.hl7.org/CodeSystem/observation-category"


def observation(patient: str, category: str, marker: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "identifier": [{"system": "urn:test:auth", "value": marker}],
        "category": [{"coding": [{"system": VITAL, "code": category}]}],
        "code": {"text": "血压"},
        "subject": {"reference": patient},
    }


class Seed:
    def __init__(self, anonymous, backend: Backend) -> None:  # type: ignore[no-untyped-def]
        self.marker = uuid.uuid4().hex
        self.writer = scoped(backend, "system/*.*", ORG)
        patient = {"resourceType": "Patient", "identifier": [{"system": "urn:test:auth", "value": self.marker}]}
        created = anonymous.post("/fhir/Patient", json=patient, headers=self.writer)
        assert created.status_code == 201, created.text
        self.patient = created.json()["id"]
        ref = f"Patient/{self.patient}"
        self.vital = anonymous.post(
            "/fhir/Observation", json=observation(ref, "vital-signs", self.marker), headers=self.writer
        ).json()["id"]
        self.lab = anonymous.post(
            "/fhir/Observation", json=observation(ref, "laboratory", self.marker), headers=self.writer
        ).json()["id"]


@pytest.fixture(scope="module")
def seed(anonymous, backend) -> Seed:  # type: ignore[no-untyped-def]
    return Seed(anonymous, backend)


def assert_403(response, scope_named: str) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == 403, response.text
    issue = response.json()["issue"][0]
    assert issue["code"] == "forbidden" and scope_named in issue["diagnostics"], issue


@pytest.mark.parametrize("scope", ["system/Patient.read", "system/Patient.r", "system/Patient.rs", "system/*.read"])
def test_read_vread_history_need_read(anonymous, backend, seed, scope):
    h = scoped(backend, scope, ORG)
    assert anonymous.get(f"/fhir/Patient/{seed.patient}", headers=h).status_code == 200
    assert anonymous.get(f"/fhir/Patient/{seed.patient}/_history/1", headers=h).status_code == 200
    assert anonymous.get(f"/fhir/Patient/{seed.patient}/_history", headers=h).status_code == 200


@pytest.mark.parametrize(
    "scope", ["system/Observation.read", "system/Patient.s", "system/Patient.cud", "system/Patient.write"]
)
def test_read_without_read_is_403(anonymous, backend, seed, scope):
    h = scoped(backend, scope, ORG)
    assert_403(anonymous.get(f"/fhir/Patient/{seed.patient}", headers=h), "system/Patient.r")
    assert_403(anonymous.get(f"/fhir/Patient/{seed.patient}/_history/1", headers=h), "system/Patient.r")
    assert_403(anonymous.get(f"/fhir/Patient/{seed.patient}/_history", headers=h), "system/Patient.r")


def test_search_needs_search(anonymous, backend, seed):
    query = f"/fhir/Patient?identifier=urn:test:auth|{seed.marker}"
    found = anonymous.get(query, headers=scoped(backend, "system/Patient.s", ORG))
    assert found.status_code == 200 and found.json()["total"] == 1
    assert (
        anonymous.post(
            "/fhir/Patient/_search", data={"_id": seed.patient}, headers=scoped(backend, "system/Patient.s", ORG)
        ).status_code
        == 200
    )
    assert_403(anonymous.get(query, headers=scoped(backend, "system/Patient.r", ORG)), "system/Patient.s")
    assert_403(anonymous.get(query, headers=scoped(backend, "system/Observation.rs", ORG)), "system/Patient.s")


def test_type_history_and_system_history(anonymous, backend, seed):
    assert (
        anonymous.get("/fhir/Patient/_history?_count=1", headers=scoped(backend, "system/Patient.r", ORG)).status_code
        == 200
    )
    assert_403(
        anonymous.get("/fhir/Patient/_history", headers=scoped(backend, "system/Observation.r", ORG)),
        "system/Patient.r",
    )
    assert_403(anonymous.get("/fhir/_history", headers=scoped(backend, "system/Patient.r", ORG)), "system/*.r")
    assert anonymous.get("/fhir/_history?_count=1", headers=scoped(backend, "system/*.r", ORG)).status_code == 200


def test_system_search_needs_search_on_each_type(anonymous, backend, seed):
    h = scoped(backend, "system/Patient.s", ORG)
    assert anonymous.get(f"/fhir?_type=Patient&_id={seed.patient}", headers=h).json()["total"] == 1
    assert_403(anonymous.get("/fhir?_type=Patient,Observation", headers=h), "system/Observation.s")
    assert_403(anonymous.get("/fhir?_id=x", headers=h), "system/*.s")
    assert_403(anonymous.post("/fhir/_search", data={"_type": "Observation"}, headers=h), "system/Observation.s")


def test_compartment_search(anonymous, backend, seed):
    path = f"/fhir/Patient/{seed.patient}/Observation"
    assert anonymous.get(path, headers=scoped(backend, "system/Observation.s", ORG)).json()["total"] == 2
    assert_403(anonymous.get(path, headers=scoped(backend, "system/Patient.rs", ORG)), "system/Observation.s")
    assert_403(
        anonymous.get(f"/fhir/Patient/{seed.patient}/*", headers=scoped(backend, "system/Observation.s", ORG)), ".s"
    )


def test_create_needs_create(anonymous, backend, seed):
    body = {"resourceType": "Patient", "gender": "female"}
    for scope in ("system/Patient.c", "system/Patient.write", "system/Patient.cruds", "system/*.c"):
        assert anonymous.post("/fhir/Patient", json=body, headers=scoped(backend, scope, ORG)).status_code == 201, scope
    for scope in ("system/Patient.rus", "system/Patient.read", "system/Observation.c"):
        assert_403(anonymous.post("/fhir/Patient", json=body, headers=scoped(backend, scope, ORG)), "system/Patient.c")


def test_update_and_patch_need_update(anonymous, backend, seed):
    h = scoped(backend, "system/Patient.cu", ORG)
    pid = anonymous.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=h).json()["id"]
    put = anonymous.put(
        f"/fhir/Patient/{pid}", json={"resourceType": "Patient", "id": pid, "gender": "male"}, headers=h
    )
    assert put.status_code == 200
    patch = [{"op": "add", "path": "/active", "value": True}]
    patched = anonymous.patch(
        f"/fhir/Patient/{pid}", json=patch, headers={**h, "Content-Type": "application/json-patch+json"}
    )
    assert patched.status_code == 200, patched.text
    no_update = scoped(backend, "system/Patient.crds", ORG)
    assert_403(
        anonymous.put(f"/fhir/Patient/{pid}", json={"resourceType": "Patient", "id": pid}, headers=no_update),
        "system/Patient.u",
    )
    patch_headers = {**no_update, "Content-Type": "application/json-patch+json"}
    assert_403(anonymous.patch(f"/fhir/Patient/{pid}", json=patch, headers=patch_headers), "system/Patient.u")
    assert_403(
        anonymous.put("/fhir/Patient?gender=male", json={"resourceType": "Patient"}, headers=no_update),
        "system/Patient.u",
    )


def test_delete_needs_delete(anonymous, backend, seed):
    writer = scoped(backend, "system/Patient.c", ORG)
    pid = anonymous.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=writer).json()["id"]
    assert_403(
        anonymous.delete(f"/fhir/Patient/{pid}", headers=scoped(backend, "system/Patient.cru", ORG)), "system/Patient.d"
    )
    assert_403(
        anonymous.delete("/fhir/Patient?_id=x", headers=scoped(backend, "system/Patient.cru", ORG)), "system/Patient.d"
    )
    assert anonymous.delete(f"/fhir/Patient/{pid}", headers=scoped(backend, "system/Patient.d", ORG)).status_code == 200


def test_includes_only_add_readable_types(anonymous, backend, seed):
    query = f"/fhir/Observation?_id={seed.vital}&_include=Observation:subject"
    only_observations = anonymous.get(query, headers=scoped(backend, "system/Observation.rs", ORG)).json()
    assert [e["resource"]["resourceType"] for e in only_observations["entry"]] == ["Observation"]
    both = anonymous.get(query, headers=scoped(backend, "system/Observation.rs system/Patient.r", ORG)).json()
    assert sorted(e["resource"]["resourceType"] for e in both["entry"]) == ["Observation", "Patient"]
    rev = f"/fhir/Patient?_id={seed.patient}&_revinclude=Observation:subject"
    patients_only = anonymous.get(rev, headers=scoped(backend, "system/Patient.rs", ORG)).json()
    assert [e["resource"]["resourceType"] for e in patients_only["entry"]] == ["Patient"]


def test_operations_need_read_on_their_type(anonymous, backend, seed):
    reader = scoped(backend, "system/Patient.rs", ORG)
    assert anonymous.get(f"/fhir/Patient/{seed.patient}/$meta", headers=reader).status_code == 200
    assert_403(anonymous.get(f"/fhir/Observation/{seed.vital}/$meta", headers=reader), "system/Observation.r")
    assert_403(anonymous.get(f"/fhir/Patient/{seed.patient}/$everything", headers=reader), ".r")
    everything = scoped(backend, "system/*.rs", ORG)
    assert anonymous.get(f"/fhir/Patient/{seed.patient}/$everything", headers=everything).status_code == 200
    meta = {"resourceType": "Parameters", "parameter": [{"name": "meta", "valueMeta": {"tag": [{"code": "x"}]}}]}
    assert_403(anonymous.post(f"/fhir/Patient/{seed.patient}/$meta-add", json=meta, headers=reader), "system/Patient.u")


def test_export_needs_read_on_every_exported_type(anonymous, backend, seed):
    h = {**scoped(backend, "system/Patient.read", ORG), "Prefer": "respond-async"}
    assert_403(anonymous.get("/fhir/$export", headers=h), ".r")
    assert_403(anonymous.get("/fhir/$export?_type=Patient,Observation", headers=h), "system/Observation.r")


def transaction(kind: str, marker: str) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": kind,
        "entry": [
            {
                "fullUrl": "urn:uuid:" + str(uuid.uuid4()),
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [{"system": "urn:test:tx-auth", "value": marker}],
                },
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "resource": {"resourceType": "Organization", "name": marker},
                "request": {"method": "POST", "url": "Organization"},
            },
        ],
    }


def test_transaction_with_one_entry_out_of_scope_is_refused_whole(anonymous, backend, seed):
    marker = uuid.uuid4().hex
    h = scoped(backend, "system/Patient.crus", ORG)
    response = anonymous.post("/fhir", json=transaction("transaction", marker), headers=h)
    assert_403(response, "system/Organization.c")
    assert "Bundle.entry[1]" in response.json()["issue"][0]["diagnostics"]
    found = anonymous.get(f"/fhir/Patient?identifier=urn:test:tx-auth|{marker}", headers=h).json()
    assert found["total"] == 0


def test_batch_refuses_each_entry_out_of_scope(anonymous, backend, seed):
    marker = uuid.uuid4().hex
    h = scoped(backend, "system/Patient.crus", ORG)
    response = anonymous.post("/fhir", json=transaction("batch", marker), headers=h)
    assert response.status_code == 200, response.text
    first, second = (entry["response"] for entry in response.json()["entry"])
    assert first["status"].startswith("201")
    assert second["status"] == "403"
    assert "system/Organization.c" in second["outcome"]["issue"][0]["diagnostics"]
    reads = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": f"Patient/{seed.patient}"}},
            {"request": {"method": "GET", "url": f"Observation/{seed.vital}"}},
        ],
    }
    statuses = [e["response"]["status"] for e in anonymous.post("/fhir", json=reads, headers=h).json()["entry"]]
    assert statuses[0].startswith("200") and statuses[1] == "403"


def test_transaction_with_every_entry_in_scope(anonymous, backend, seed):
    marker = uuid.uuid4().hex
    h = scoped(backend, "system/Patient.c system/Organization.c", ORG)
    assert anonymous.post("/fhir", json=transaction("transaction", marker), headers=h).status_code == 200


# -- v2 constraints ------------------------------------------------------------------------------------------


def test_category_constraint_narrows_search_in_sql(anonymous, backend, seed):
    h = scoped(backend, "system/Observation.rs?category=vital-signs", ORG)
    bundle = anonymous.get(f"/fhir/Observation?subject=Patient/{seed.patient}&_count=1", headers=h).json()
    assert bundle["total"] == 1 and [e["resource"]["id"] for e in bundle["entry"]] == [seed.vital]
    assert "next" not in {link["relation"] for link in bundle["link"]}
    assert anonymous.get(f"/fhir/Observation?_id={seed.lab}", headers=h).json()["total"] == 0
    compartment = anonymous.get(f"/fhir/Patient/{seed.patient}/Observation", headers=h).json()
    assert compartment["total"] == 1


def test_category_constraint_on_reads(anonymous, backend, seed):
    h = scoped(backend, "system/Observation.rs?category=vital-signs", ORG)
    assert anonymous.get(f"/fhir/Observation/{seed.vital}", headers=h).status_code == 200
    assert_403(anonymous.get(f"/fhir/Observation/{seed.lab}", headers=h), "constrained scope")
    assert_403(anonymous.get(f"/fhir/Observation/{seed.lab}/_history/1", headers=h), "constrained scope")
    assert_403(anonymous.get(f"/fhir/Observation/{seed.vital}/_history", headers=h), "without a ?param=value")


def test_several_constraints_of_one_parameter_are_any_of(anonymous, backend, seed):
    h = scoped(backend, "system/Observation.rs?category=vital-signs system/Observation.rs?category=laboratory", ORG)
    assert anonymous.get(f"/fhir/Observation?subject=Patient/{seed.patient}", headers=h).json()["total"] == 2
    assert anonymous.get(f"/fhir/Observation/{seed.lab}", headers=h).status_code == 200


def test_category_constraint_on_writes(anonymous, backend, seed):
    h = scoped(backend, "system/Observation.cruds?category=vital-signs", ORG)
    ref = f"Patient/{seed.patient}"
    marker = uuid.uuid4().hex
    assert (
        anonymous.post("/fhir/Observation", json=observation(ref, "vital-signs", marker), headers=h).status_code == 201
    )
    refused = anonymous.post("/fhir/Observation", json=observation(ref, "laboratory", marker), headers=h)
    assert_403(refused, "constrained scope")
    writer = scoped(backend, "system/*.*", ORG)
    stored = anonymous.get(f"/fhir/Observation?identifier=urn:test:auth|{marker}", headers=writer).json()
    assert stored["total"] == 1  # the refused create was rolled back
    vital_id = stored["entry"][0]["resource"]["id"]
    turned = {**observation(ref, "laboratory", marker), "id": vital_id}
    assert_403(anonymous.put(f"/fhir/Observation/{vital_id}", json=turned, headers=h), "constrained scope")
    assert_403(anonymous.delete(f"/fhir/Observation/{seed.lab}", headers=h), "constrained scope")
    assert (
        anonymous.get(f"/fhir/Observation/{vital_id}", headers=writer).json()["category"][0]["coding"][0]["code"]
        == "vital-signs"
    )


def test_constrained_scope_does_not_cover_other_searches(anonymous, backend, seed):
    h = scoped(backend, "system/Observation.rs?category=vital-signs system/Patient.s", ORG)
    assert_403(anonymous.get("/fhir?_type=Patient,Observation", headers=h), "without a ?param=value")
    assert_403(
        anonymous.post(
            "/fhir",
            json={
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [{"request": {"method": "GET", "url": f"Observation/{seed.vital}"}}],
            },
            headers=h,
        ),
        "without a ?param=value",
    )
