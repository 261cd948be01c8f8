"""Transaction and batch Bundles on both backends: ordering, reference rewriting, all-or-nothing, conditions."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

from tests.conftest import auth_headers


def tx(entries: list[dict], kind: str = "transaction") -> dict:
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


def post_entry(resource: dict, full_url: str | None = None, **request) -> dict:  # type: ignore[no-untyped-def]
    entry = {"resource": resource, "request": {"method": "POST", "url": resource["resourceType"], **request}}
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def patient(value: str | None = None) -> dict:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:test:tx", "value": value or uuid.uuid4().hex}],
        "name": [{"family": "梁", "given": ["桂芳"]}],
    }


def observation(subject: str) -> dict:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": subject},
        "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"},
        "extension": [{"url": "urn:test:ext", "valueReference": {"reference": subject}}],
        "text": {
            "status": "generated",
            "div": f'<div xmlns="http://www.w3.org/1999/xhtml"><a href="{subject}">p</a></div>',
        },
    }


def test_transaction_assigns_ids_and_rewrites_references(client):
    p_url = f"urn:uuid:{uuid.uuid4()}"
    bundle = tx([post_entry(observation(p_url)), post_entry(patient(), p_url)])
    response = client.post("/fhir", json=bundle)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["type"] == "transaction-response"
    obs_entry, patient_entry = result["entry"]
    assert patient_entry["response"]["status"] == "201 Created"
    pid = patient_entry["resource"]["id"]
    stored = client.get(f"/fhir/{obs_entry['response']['location'].rsplit('/_history', 1)[0]}").json()
    assert stored["subject"]["reference"] == f"Patient/{pid}"
    assert stored["extension"][0]["valueReference"]["reference"] == f"Patient/{pid}"
    assert f'href="Patient/{pid}"' in stored["text"]["div"]


def test_failed_entry_rolls_back_the_whole_transaction(client):
    marker = uuid.uuid4().hex
    entries = [post_entry(patient(f"{marker}-{i}")) for i in range(60)]
    entries[49]["resource"]["gender"] = "not-a-gender"
    before = len(client.get("/fhir/Patient/_history", params={"_count": 1000}).json().get("entry", []))
    response = client.post("/fhir", json=tx(entries))
    assert response.status_code == 400
    issues = response.json()["issue"]
    assert "Bundle.entry[49]" in issues[0]["diagnostics"]
    after = len(client.get("/fhir/Patient/_history", params={"_count": 1000}).json().get("entry", []))
    assert after == before


def test_conditional_references_and_if_none_exist(client):
    value = uuid.uuid4().hex
    first = client.post("/fhir", json=tx([post_entry(patient(value), ifNoneExist=f"identifier=urn:test:tx|{value}")]))
    pid = first.json()["entry"][0]["resource"]["id"]
    again = client.post("/fhir", json=tx([post_entry(patient(value), ifNoneExist=f"identifier=urn:test:tx|{value}")]))
    assert again.json()["entry"][0]["response"]["status"] == "200 OK"
    assert again.json()["entry"][0]["resource"]["id"] == pid
    obs = client.post("/fhir", json=tx([post_entry(observation(f"Patient?identifier=urn:test:tx|{value}"))])).json()
    assert obs["entry"][0]["resource"]["subject"]["reference"] == f"Patient/{pid}"
    client.post("/fhir/Patient", json=patient(value))
    ambiguous = client.post("/fhir", json=tx([post_entry(observation(f"Patient?identifier=urn:test:tx|{value}"))]))
    assert ambiguous.status_code == 412
    unknown = client.post("/fhir", json=tx([post_entry(observation("Patient?identifier=urn:test:tx|nobody"))]))
    assert unknown.status_code == 404


def test_processing_order_and_conditional_put(client):
    value = uuid.uuid4().hex
    victim = client.post("/fhir/Patient", json=patient()).json()["id"]
    bundle = tx(
        [
            {
                "resource": patient(value),
                "request": {"method": "PUT", "url": f"Patient?identifier=urn:test:tx|{value}"},
            },
            {"request": {"method": "DELETE", "url": f"Patient/{victim}"}},
            {"request": {"method": "GET", "url": f"Patient/{victim}"}},
        ]
    )
    response = client.post("/fhir", json=bundle)
    # GET runs after DELETE, so it sees the deletion and fails the transaction.
    assert response.status_code == 410
    assert client.get(f"/fhir/Patient/{victim}").status_code == 200
    bundle["entry"] = bundle["entry"][:2]
    response = client.post("/fhir", json=bundle)
    assert response.status_code == 200
    assert [e["response"]["status"] for e in response.json()["entry"]] == ["201 Created", "204 No Content"]
    assert client.get(f"/fhir/Patient/{victim}").status_code == 410


def test_bad_bundles(client):
    dup = f"urn:uuid:{uuid.uuid4()}"
    assert client.post("/fhir", json=tx([post_entry(patient(), dup), post_entry(patient(), dup)])).status_code == 400
    same = [{"resource": {**patient(), "id": "same-1"}, "request": {"method": "PUT", "url": "Patient/same-1"}}] * 2
    assert client.post("/fhir", json=tx(same)).status_code == 400
    nested = tx([post_entry({"resourceType": "Bundle", "type": "transaction", "entry": []})])
    assert client.post("/fhir", json=nested).status_code == 400
    assert client.post("/fhir", json={"resourceType": "Bundle", "type": "collection"}).status_code == 400
    assert client.post("/fhir", json=patient()).status_code == 400
    no_request = client.post("/fhir", json=tx([{"resource": patient()}]))
    assert no_request.status_code == 400
    assert "request" in no_request.json()["issue"][0]["diagnostics"]


def test_bundle_entry_limit_is_413(backend):
    from fastapi.testclient import TestClient

    from fhir_server.api.app import create_app

    settings = backend.settings.model_copy(update={"max_bundle_entries": 3})
    with TestClient(create_app(settings, backend.engine), headers=auth_headers(backend)) as small:
        response = small.post("/fhir", json=tx([post_entry(patient()) for _ in range(4)]))
    assert response.status_code == 413


def test_batch_reports_each_failure_in_its_entry(client):
    good, bad = patient(), {**patient(), "gender": "x"}
    response = client.post(
        "/fhir",
        json=tx(
            [post_entry(good), post_entry(bad), {"request": {"method": "GET", "url": "Patient/does-not-exist"}}],
            kind="batch",
        ),
    )
    assert response.status_code == 200
    entries = response.json()["entry"]
    assert entries[0]["response"]["status"] == "201 Created"
    assert entries[1]["response"]["status"] == "400"
    assert entries[1]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert entries[2]["response"]["status"] == "404"
    assert client.get(f"/fhir/{entries[0]['response']['location']}").status_code == 200


def test_parallel_transactions_on_the_same_resources(live_server):
    """Several HIS systems send the same resident at once: one Patient, no deadlock, no duplicate."""
    base = live_server.base_url
    value = uuid.uuid4().hex
    clients = 8
    barrier = threading.Barrier(clients)

    def send(i: int) -> int:
        p_url = f"urn:uuid:{uuid.uuid4()}"
        bundle = tx(
            [
                {
                    "fullUrl": p_url,
                    "resource": patient(value),
                    "request": {"method": "PUT", "url": f"Patient?identifier=urn:test:tx|{value}"},
                },
                post_entry(observation(p_url)),
            ]
        )
        barrier.wait()
        return live_server.http.post(base, json=bundle, timeout=120).status_code

    with ThreadPoolExecutor(clients) as pool:
        statuses = list(pool.map(send, range(clients)))
    assert statuses == [200] * clients
    history = live_server.http.get(f"{base}/Patient/_history", params={"_count": 1000}).json()
    ids = {
        e["resource"]["id"]
        for e in history["entry"]
        if e.get("resource", {}).get("identifier", [{}])[0].get("value") == value
    }
    assert len(ids) == 1


def test_an_operation_unsafe_in_a_transaction_is_refused_and_nothing_is_stored(client):
    value = uuid.uuid4().hex
    bundle = tx(
        [
            post_entry(patient(value)),
            {"request": {"method": "POST", "url": "Patient/$expunge"}},
        ]
    )
    response = client.post("/fhir", json=bundle)
    assert response.status_code == 400
    assert "Patient/$expunge" in response.json()["issue"][0]["diagnostics"]
    found = client.get("/fhir/Patient", params={"identifier": f"urn:test:tx|{value}"}).json()
    assert found["total"] == 0


def test_a_parameter_another_worker_stored_indexes_the_next_transaction(engine):
    from fhir_server.repository import Repository
    from fhir_server.search.custom import sync_custom_parameters
    from fhir_server.search.parameters import Registry
    from fhir_server.search.query import find
    from fhir_server.service import FhirService
    from fhir_server.storage.engine import unit_of_work
    from fhir_server.transactions import BundleProcessor
    from tests.fhir_server.search.test_custom_sync import string_parameter

    code = f"tx-city-{uuid.uuid4().hex[:8]}"
    service = FhirService()
    with unit_of_work(engine) as conn:  # this worker has loaded the stored parameters
        sync_custom_parameters(conn, service.registry)
    with unit_of_work(engine) as conn:  # another worker stores a SearchParameter
        Repository(Registry()).create(conn, string_parameter(code), res_id=code, method="POST")
    resident = {**patient(), "address": [{"city": "岑溪市"}]}
    with unit_of_work(engine) as conn:
        result = BundleProcessor(service).transaction(conn, tx([post_entry(resident)]))
    pid = result["entry"][0]["resource"]["id"]
    with unit_of_work(engine, write=False) as conn:
        pks = find(conn, service.registry, "Patient", [(code, "岑溪市")], limit=10)
        found = service.repository.load_many(conn, pks)
    assert [version.res_id for version in found] == [pid]


def test_a_resource_a_before_write_hook_amends_is_indexed_as_stored(engine):
    """The rows prepared before the unit of work are brought up to date with what a hook changed (the MPI's link)."""
    from fhir_server.search.query import find
    from fhir_server.service import FhirService
    from fhir_server.storage.engine import unit_of_work
    from fhir_server.transactions import BundleProcessor

    marker = uuid.uuid4().hex

    def amend(_conn, res_type, _res_id, resource):  # type: ignore[no-untyped-def]
        if res_type == "Patient" and resource is not None:
            resource["link"] = [{"other": {"reference": f"Patient/golden-{marker}"}, "type": "refer"}]
            resource.pop("telecom")
            resource["name"][0]["given"] = ["秀英"]

    service = FhirService(before_write=[amend])
    resident = {**patient(marker), "telecom": [{"system": "phone", "value": f"0774-{marker}"}]}
    with unit_of_work(engine) as conn:
        result = BundleProcessor(service).transaction(conn, tx([post_entry(resident)]))
    pid = result["entry"][0]["resource"]["id"]

    def search(*params: tuple[str, str]) -> list[str]:
        with unit_of_work(engine, write=False) as conn:
            pks = find(conn, service.registry, "Patient", list(params), limit=10)
            return [version.res_id for version in service.repository.load_many(conn, pks)]

    assert search(("link", f"Patient/golden-{marker}")) == [pid]
    assert search(("identifier", f"urn:test:tx|{marker}"), ("given", "秀英")) == [pid]
    assert search(("identifier", f"urn:test:tx|{marker}"), ("given", "桂芳")) == []
    assert search(("telecom", f"0774-{marker}")) == []
    assert result["entry"][0]["resource"]["link"][0]["other"]["reference"] == f"Patient/golden-{marker}"
