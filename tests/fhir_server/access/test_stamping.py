"""Writes stamped with the writer: ownership, ``meta.source`` and one Provenance per interaction or bundle."""

from __future__ import annotations

from typing import Any

import pytest
from fhir.resources.R4B.provenance import Provenance
from sqlalchemy import select

from fhir_server.access import acting_as
from fhir_server.access.codes import CLIENT_ID_SYSTEM, DATA_OPERATION_SYSTEM, source_uri
from fhir_server.auth.principal import Principal
from fhir_server.service import FhirService
from fhir_server.storage.engine import unit_of_work
from fhir_server.storage.tables import resources
from tests.fhir_server.access.conftest import Exchange, Institution


def observation(**extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": "Patient/stamped"},
        **extra,
    }


class Writers:
    def __init__(self, exchange: Exchange) -> None:
        self.a = exchange.institution("Organization/writer-a")
        self.b = exchange.institution("Organization/writer-b")
        self.engine = exchange.app.state.context.engine  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def writers(exchange: Exchange) -> Writers:
    return Writers(exchange)


def owner(writers: Writers, res_type: str, res_id: str) -> str | None:
    with writers.engine.connect() as conn:
        return conn.execute(
            select(resources.c.owner_org).where(resources.c.res_type == res_type, resources.c.res_id == res_id)
        ).scalar_one()


def provenances(who: Institution, target: str) -> list[dict[str, Any]]:
    bundle = who.get(f"/fhir/Provenance?target={target}").json()
    return [entry["resource"] for entry in bundle.get("entry", [])]


def activity(provenance: dict[str, Any]) -> set[str]:
    return {c["code"] for c in provenance["activity"]["coding"] if c["system"] == DATA_OPERATION_SYSTEM}


def test_create_is_stamped_with_the_institution_and_client(writers: Writers) -> None:
    response = writers.a.post("/fhir/Observation", observation(meta={"source": "http://spoofed.example"}))
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["meta"]["source"] == source_uri("Organization/writer-a", writers.a.client_id)
    assert created["meta"]["source"].startswith("https://hie.wuzhou.gov.cn/fhir/Organization/writer-a#")
    assert owner(writers, "Observation", created["id"]) == "Organization/writer-a"
    [provenance] = provenances(writers.a, f"Observation/{created['id']}")
    Provenance.model_validate(provenance)  # valid R4B
    assert provenance["target"] == [{"reference": f"Observation/{created['id']}/_history/1"}]
    assert activity(provenance) == {"CREATE"}
    who = [agent["who"] for agent in provenance["agent"]]
    assert {"reference": "Organization/writer-a"} in who
    assert {"identifier": {"system": CLIENT_ID_SYSTEM, "value": writers.a.client_id}} in who
    assert owner(writers, "Provenance", provenance["id"]) == "Organization/writer-a"
    assert provenances(writers.b, f"Observation/{created['id']}") == []  # who wrote what is the writer's
    assert writers.b.get(f"/fhir/Provenance/{provenance['id']}").status_code == 404


def test_only_the_owner_changes_a_record(writers: Writers) -> None:
    created = writers.a.post("/fhir/Observation", observation()).json()
    url = f"/fhir/Observation/{created['id']}"
    refused = writers.b.http.put(url, json={**created, "status": "amended"}, headers=writers.b.headers())
    assert refused.status_code == 403
    assert "another institution's record" in refused.text
    patch = [{"op": "replace", "path": "/status", "value": "amended"}]
    headers = writers.b.headers({"Content-Type": "application/json-patch+json"})
    assert writers.b.http.patch(url, json=patch, headers=headers).status_code == 403
    assert writers.b.delete(url).status_code == 403
    changed = writers.a.put({**created, "status": "amended"})
    assert changed["meta"]["source"] == source_uri("Organization/writer-a", writers.a.client_id)
    assert owner(writers, "Observation", created["id"]) == "Organization/writer-a"
    records = provenances(writers.a, f"Observation/{created['id']}")
    assert sorted(next(iter(activity(p))) for p in records) == ["CREATE", "UPDATE"]
    assert provenances(writers.b, f"Observation/{created['id']}") == []  # B's refused writes left no record


def test_records_of_the_exchange_may_be_changed_by_institutions(writers: Writers) -> None:
    service = FhirService()
    with unit_of_work(writers.engine) as conn:
        created = service.create(conn, observation()).version.resource()
    changed = writers.b.put({**created, "status": "amended"})
    assert changed["meta"]["source"] == source_uri("Organization/writer-b", writers.b.client_id)
    assert owner(writers, "Observation", created["id"]) is None


def test_bundle_entries_may_not_change_another_institutions_record(writers: Writers) -> None:
    created = writers.a.post("/fhir/Observation", observation()).json()
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"request": {"method": "DELETE", "url": f"Observation/{created['id']}"}}],
    }
    assert writers.b.post("/fhir", bundle).status_code == 403
    assert writers.a.get(f"/fhir/Observation/{created['id']}").status_code == 200


def test_delete_is_recorded(writers: Writers) -> None:
    created = writers.a.post("/fhir/Observation", observation()).json()
    assert writers.a.delete(f"/fhir/Observation/{created['id']}").status_code == 200
    records = provenances(writers.a, f"Observation/{created['id']}")
    assert sorted(next(iter(activity(p))) for p in records) == ["CREATE", "DELETE"]


def test_one_provenance_per_transaction(writers: Writers) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:0000000{n}-0000-4000-8000-000000000000",
                "resource": observation(),
                "request": {"method": "POST", "url": "Observation"},
            }
            for n in range(3)
        ],
    }
    response = writers.b.post("/fhir", bundle)
    assert response.status_code == 200, response.text
    locations = [entry["response"]["location"] for entry in response.json()["entry"]]
    targets = {loc.split("/_history")[0] for loc in locations}
    found = {p["id"]: p for target in targets for p in provenances(writers.b, target)}
    assert len(found) == 1
    [provenance] = found.values()
    assert sorted(t["reference"] for t in provenance["target"]) == sorted(locations)
    assert activity(provenance) == {"CREATE"}


def test_batch_provenance_names_only_what_was_stored(writers: Writers) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"resource": observation(), "request": {"method": "POST", "url": "Observation"}},
            {"resource": {"resourceType": "Observation"}, "request": {"method": "POST", "url": "Observation"}},
        ],
    }
    response = writers.a.post("/fhir", bundle)
    assert response.status_code == 200, response.text
    first, second = response.json()["entry"]
    assert first["response"]["status"].startswith("201")
    assert second["response"]["status"].startswith("400")
    [provenance] = provenances(writers.a, first["response"]["location"].split("/_history")[0])
    assert provenance["target"] == [{"reference": first["response"]["location"]}]


def test_a_failed_write_leaves_no_provenance(writers: Writers) -> None:
    before = writers.a.get("/fhir/Provenance?_summary=count").json()["total"]
    assert writers.a.post("/fhir/Observation", {"resourceType": "Observation"}).status_code == 400
    assert writers.a.get("/fhir/Provenance?_summary=count").json()["total"] == before


def test_system_writes_are_not_stamped(writers: Writers) -> None:
    service = FhirService()
    with unit_of_work(writers.engine) as conn:
        created = service.create(conn, observation()).version
    body = created.resource()
    assert "source" not in body["meta"]
    assert owner(writers, "Observation", created.res_id) is None
    assert provenances(writers.a, f"Observation/{created.res_id}") == []


def test_in_process_work_can_act_for_an_institution(writers: Writers) -> None:
    service = FhirService()
    clinic = Principal(client_id="batch-loader", organization="Organization/writer-a")
    with acting_as(clinic), unit_of_work(writers.engine) as conn:
        created = service.create(conn, observation()).version
    assert created.resource()["meta"]["source"] == source_uri("Organization/writer-a", "batch-loader")
    assert owner(writers, "Observation", created.res_id) == "Organization/writer-a"


def test_provenance_leaves_out_writes_rolled_back_to_a_savepoint(writers: Writers) -> None:
    from fhir_server.access import recorded_writes

    service = FhirService()
    clinic = Principal(client_id="savepoint-writer", organization="Organization/writer-a")
    with acting_as(clinic), unit_of_work(writers.engine) as conn, recorded_writes(conn, service.repository):
        kept = service.create(conn, observation()).version
        savepoint = conn.begin_nested()
        dropped = service.create(conn, observation()).version
        savepoint.rollback()
    [provenance] = provenances(writers.a, f"Observation/{kept.res_id}")
    assert provenance["target"] == [{"reference": kept.location}]
    assert provenances(writers.a, f"Observation/{dropped.res_id}") == []
