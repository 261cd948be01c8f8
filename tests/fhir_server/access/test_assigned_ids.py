"""Creates under ids the server assigns skip the owner lookup; ids a client names are still checked (both backends)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fhir_server.access.conftest import SUBSCRIPTION, Exchange
from tests.fhir_server.access.test_stamping import Writers, observation, owner


@pytest.fixture(scope="module")
def writers(exchange: Exchange) -> Writers:
    return Writers(exchange)


def transaction(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}


def test_put_as_create_of_another_institutions_deleted_record_is_refused(writers: Writers) -> None:
    created = writers.a.post("/fhir/Observation", observation()).json()
    assert writers.a.delete(f"/fhir/Observation/{created['id']}").status_code in (200, 204)
    again = {**created, "status": "amended"}
    refused = writers.b.http.put(f"/fhir/Observation/{created['id']}", json=again, headers=writers.b.headers())
    assert refused.status_code == 403
    assert "another institution's record" in refused.text
    bundle = transaction({"resource": again, "request": {"method": "PUT", "url": f"Observation/{created['id']}"}})
    in_bundle = writers.b.post("/fhir", bundle)
    assert in_bundle.status_code == 403
    assert "another institution's record" in in_bundle.text
    assert owner(writers, "Observation", created["id"]) == "Organization/writer-a"
    assert writers.a.put(again)["meta"]["versionId"] == "3"  # the owner may bring it back


def test_a_bundle_creating_one_record_and_changing_another_institutions_is_refused_whole(writers: Writers) -> None:
    theirs = writers.a.post("/fhir/Observation", observation()).json()
    bundle = transaction(
        {
            "fullUrl": "urn:uuid:0e0b7c1a-0000-4000-8000-00000000000a",
            "resource": observation(),
            "request": {"method": "POST", "url": "Observation"},
        },
        {
            "resource": {**theirs, "status": "amended"},
            "request": {"method": "PUT", "url": f"Observation/{theirs['id']}"},
        },
    )
    refused = writers.b.post("/fhir", bundle)
    assert refused.status_code == 403
    assert "another institution's record" in refused.text
    assert writers.a.get(f"/fhir/Observation/{theirs['id']}").json()["status"] == "final"


def test_records_created_under_assigned_ids_belong_to_their_writer(writers: Writers) -> None:
    bundle = transaction(
        {
            "fullUrl": "urn:uuid:0e0b7c1a-0000-4000-8000-00000000000b",
            "resource": {"resourceType": "Patient", "name": [{"family": "覃"}]},
            "request": {"method": "POST", "url": "Patient"},
        },
        {
            "resource": {**observation(), "subject": {"reference": "urn:uuid:0e0b7c1a-0000-4000-8000-00000000000b"}},
            "request": {"method": "POST", "url": "Observation"},
        },
    )
    done = writers.b.post("/fhir", bundle)
    assert done.status_code == 200, done.text
    locations = [entry["response"]["location"].split("/") for entry in done.json()["entry"]]
    assert [owner(writers, res_type, res_id) for res_type, res_id, *_ in locations] == ["Organization/writer-b"] * 2
    single = writers.b.post("/fhir/Observation", observation())
    assert single.status_code == 201
    assert owner(writers, "Observation", single.json()["id"]) == "Organization/writer-b"


def test_a_subscription_under_an_assigned_id_is_still_checked(exchange: Exchange) -> None:
    nobody = exchange.institution(None)
    refused = nobody.post("/fhir/Subscription", SUBSCRIPTION)
    assert refused.status_code == 403
    assert "client of no institution" in refused.text
