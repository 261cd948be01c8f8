"""The generated regional data: deterministic by seed, regional rules kept, accepted by the server's validation."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson

from bench.regional.generate import INSTITUTIONS, RegionalData, institutions, main, write_ndjson
from ehr_archive.identifiers import RESIDENT_ID_SYSTEM, WUZHOU_REGIONS, is_valid_resident_id, mrn_organization_id
from fhir_server.api.app import Context
from fhir_server.config import Settings


def _dump(data: RegionalData, indexes: range) -> bytes:
    return b"".join(orjson.dumps(r.resources) for r in data.records(indexes))


def test_same_seed_same_records_whatever_the_size() -> None:
    assert _dump(RegionalData(30, seed=3), range(30)) == _dump(RegionalData(30, seed=3), range(30))
    assert _dump(RegionalData(40, seed=3), range(25)) == _dump(RegionalData(30, seed=3), range(25))
    assert _dump(RegionalData(30, seed=4), range(30)) != _dump(RegionalData(30, seed=3), range(30))


def test_residents_are_wuzhou_residents_with_valid_identifiers() -> None:
    data = RegionalData(200, seed=1)
    org_ids = {i.org_id for i in INSTITUTIONS}
    districts = {name for code, name in WUZHOU_REGIONS.items() if code.startswith("4504")}
    resident_ids = set()
    for record in data.records(range(200)):
        patient = record.patient
        resident_id = next(i["value"] for i in patient["identifier"] if i["system"] == RESIDENT_ID_SYSTEM)
        assert is_valid_resident_id(resident_id), resident_id
        resident_ids.add(resident_id)
        mrns = [mrn_organization_id(i["system"]) for i in patient["identifier"]]
        assert {m for m in mrns if m} <= org_ids
        assert any(mrns)
        assert patient["address"][0]["city"] == "梧州市"
        assert patient["address"][0]["district"] in districts
        assert 1 <= len(patient["name"][0]["family"]) <= 2
    assert len(resident_ids) == 200


def test_records_hold_the_clinical_mix_with_codes_and_units() -> None:
    data = RegionalData(100, seed=0)
    kinds: Counter[str] = Counter()
    for record in data.records(range(100)):
        ids = {f"{r['resourceType']}/{r['id']}" for r in record.resources} | {
            f"Organization/{o['id']}" for o in institutions()
        }
        for resource in record.resources:
            kinds[resource["resourceType"]] += 1
            for reference in _references(resource):
                assert reference in ids, (resource["resourceType"], reference)
            if resource["resourceType"] == "Observation":
                assert resource["code"]["coding"][0]["system"] == "http://loinc.org"
                quantities = [resource.get("valueQuantity")] + [
                    c["valueQuantity"] for c in resource.get("component", [])
                ]
                assert all(q["system"] == "http://unitsofmeasure.org" for q in quantities if q)
            if resource["resourceType"] == "Condition":
                assert resource["code"]["coding"][0]["system"] == "http://hl7.org/fhir/sid/icd-10"
    assert set(kinds) == {"Patient", "Coverage", "Encounter", "Condition", "Observation", "MedicationRequest", "Claim"}
    assert kinds["Patient"] == kinds["Coverage"] == 100
    assert kinds["Claim"] == kinds["Encounter"]


def test_the_heavy_resident_has_about_the_asked_number_of_resources() -> None:
    data = RegionalData(3, heavy=500)
    assert 500 <= len(data.record(0).resources) < 520
    assert len(data.record(1).resources) < 100


def test_transaction_bundles_use_urn_uuid_references() -> None:
    record = RegionalData(5).record(2)
    bundle = record.transaction()
    full_urls = {e["fullUrl"] for e in bundle["entry"]}
    assert all(u.startswith("urn:uuid:") for u in full_urls)
    assert all("id" not in e["resource"] and e["request"]["method"] == "POST" for e in bundle["entry"])
    local = [r for e in bundle["entry"] for r in _references(e["resource"]) if not r.startswith("Organization/")]
    assert local and set(local) <= full_urls


def test_every_resource_passes_the_servers_validation(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'v.db'}")
    from fhir_server.storage import create_db_engine

    service = Context(settings, create_db_engine(settings)).service
    data = RegionalData(40, seed=5, heavy=50)
    for record in data.records(range(40)):
        for resource in record.resources:
            service.validate(dict(resource))
    for organization in institutions():
        service.validate(organization)


def test_ndjson_files_per_type_and_the_command(tmp_path: Path) -> None:
    counts = write_ndjson(RegionalData(10).records(range(10)), tmp_path / "a")
    assert counts["Organization"] == len(institutions())
    lines = (tmp_path / "a" / "Patient.ndjson").read_bytes().splitlines()
    assert len(lines) == counts["Patient"] == 10
    assert orjson.loads(lines[0])["resourceType"] == "Patient"
    assert main(["--residents", "3", "--out", str(tmp_path / "b"), "--bundles"]) == 0
    assert len(list((tmp_path / "b").glob("resident-*.json"))) == 3


def _references(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["reference"]] if isinstance(node.get("reference"), str) else []
        return found + [r for v in node.values() for r in _references(v)]
    if isinstance(node, list):
        return [r for v in node for r in _references(v)]
    return []
