"""FHIR clients (fhirclient, fhirpy) against a running server: CRUD, history, transactions, paged $everything."""

from __future__ import annotations

import pytest
from fhirclient import client as smart_client
from fhirclient.models.bundle import Bundle
from fhirclient.models.humanname import HumanName
from fhirclient.models.patient import Patient
from requests import HTTPError


def test_fhirclient_crud_and_history(live_server):
    smart = smart_client.FHIRClient(settings={"app_id": "hie-tests", "api_base": live_server.base_url})
    server = smart.server
    server.session.headers.update(live_server.headers)

    patient = Patient({"gender": "female", "birthDate": "1965-11-23"})
    name = HumanName()
    name.family, name.given = "李", ["秀英"]
    patient.name = [name]
    created = patient.create(server)
    pid = created["id"]
    assert created["meta"]["versionId"] == "1"

    read = Patient.read(pid, server)
    assert read.name[0].family == "李"
    assert read.gender == "female"

    read.gender = "other"
    updated = read.update(server)
    assert updated["meta"]["versionId"] == "2"
    assert Patient.read(pid, server).gender == "other"

    history = Bundle(server.request_json(f"Patient/{pid}/_history"))
    assert history.type == "history"
    assert [e.request.method for e in history.entry] == ["PUT", "POST"]

    Patient.read(pid, server).delete(server)
    with pytest.raises(HTTPError) as raised:
        Patient.read(pid, server)
    assert raised.value.response.status_code == 410


def _visit(tag: str) -> dict:
    """A hospital visit as a transaction: the resident, an encounter and two readings joined by urn:uuid."""
    patient, encounter = f"urn:uuid:{tag}-0000-4000-8000-000000000001", f"urn:uuid:{tag}-0000-4000-8000-000000000002"

    def reading(code: str, value: float) -> dict:
        return {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": patient},
            "encounter": {"reference": encounter},
            "valueQuantity": {"value": value, "unit": "mm[Hg]", "system": "http://unitsofmeasure.org"},
        }

    entries = [
        (patient, {"resourceType": "Patient", "name": [{"family": "黄", "given": ["德明"]}], "gender": "male"}),
        (
            encounter,
            {
                "resourceType": "Encounter",
                "status": "finished",
                "class": {"code": "AMB"},
                "subject": {"reference": patient},
            },
        ),
        (None, reading("8480-6", 142)),
        (None, reading("8462-4", 91)),
    ]
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                **({"fullUrl": url} if url else {}),
                "resource": body,
                "request": {"method": "POST", "url": body["resourceType"]},
            }
            for url, body in entries
        ],
    }


def test_fhirclient_posts_a_transaction_and_pages_through_everything(live_server):
    smart = smart_client.FHIRClient(settings={"app_id": "hie-tests", "api_base": live_server.base_url})
    server = smart.server
    server.session.headers.update(live_server.headers)

    response = Bundle(server.post_json("", _visit("aaaaaaaa")).json())
    assert response.type == "transaction-response"
    assert [e.response.status for e in response.entry] == ["201 Created"] * 4
    pid = response.entry[0].response.location.split("/")[1]

    page = Bundle(server.request_json(f"Patient/{pid}/$everything?_count=2"))
    keys = [(e.resource.resource_type, e.resource.id) for e in page.entry]
    while next_url := next((link.url for link in page.link if link.relation == "next"), None):
        page = Bundle(server.request_json(next_url))
        keys += [(e.resource.resource_type, e.resource.id) for e in page.entry]
    assert len(keys) == len(set(keys))
    assert sorted(t for t, _ in keys) == ["Encounter", "Observation", "Observation", "Patient"]
    assert page.total == 4


def test_fhirpy_posts_a_transaction(live_server):
    import asyncio

    from fhirpy import AsyncFHIRClient

    async def post() -> tuple[dict, dict]:
        client = AsyncFHIRClient(live_server.base_url, authorization=live_server.headers["Authorization"])
        response = await client.execute("", method="post", data=_visit("bbbbbbbb"))
        pid = response["entry"][0]["response"]["location"].split("/")[1]
        readings = await client.resources("Observation").search(subject=f"Patient/{pid}").fetch_all()
        return response, {"count": len(readings), "subjects": {r["subject"]["reference"] for r in readings}}

    response, readings = asyncio.run(post())
    assert response["type"] == "transaction-response"
    pid = response["entry"][0]["response"]["location"].split("/")[1]
    assert readings == {"count": 2, "subjects": {f"Patient/{pid}"}}
