"""``Patient/$everything`` on both backends: a record of more than 200 resources, paged without loss or repeat."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import date, timedelta

import pytest
from fhirpy import AsyncFHIRClient

from fhir_server import definitions
from fhir_server.operations.everything import care_date
from fhir_server.search.parameters import default_registry
from tests.fhir_server.operations.conftest import FHIR


@dataclass
class Record:
    """Names → (type, id) of what a transaction created, and the expected record of patient ``p``."""

    refs: dict[str, tuple[str, str]] = field(default_factory=dict)

    def id(self, name: str) -> str:
        return self.refs[name][1]

    def keys(self, *names: str) -> set[tuple[str, str]]:
        return {self.refs[name] for name in names}

    def matching(self, prefix: str) -> list[str]:
        return [name for name in self.refs if name.startswith(prefix)]


def _day(start: date, offset: int) -> str:
    return (start + timedelta(days=offset)).isoformat()


def _transaction(client, resources: dict[str, dict]) -> Record:
    urns = {name: f"urn:uuid:{uuid.uuid4()}" for name in resources}

    def link(value):
        if isinstance(value, dict):
            return {k: (urns[v[1:]] if k == "reference" and v.startswith("@") else link(v)) for k, v in value.items()}
        if isinstance(value, list):
            return [link(v) for v in value]
        return value

    entries = [
        {"fullUrl": urns[name], "resource": link(r), "request": {"method": "POST", "url": r["resourceType"]}}
        for name, r in resources.items()
    ]
    response = client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": entries})
    assert response.status_code == 200, response.text[:500]
    record = Record()
    for name, entry in zip(resources, response.json()["entry"], strict=True):
        res_type, res_id = entry["response"]["location"].split("/")[:2]
        record.refs[name] = (res_type, res_id)
    return record


def _build(client) -> Record:
    resources: dict[str, dict] = {}
    for i in range(3):
        resources[f"prac{i}"] = {"resourceType": "Practitioner", "name": [{"family": f"医生{i}"}]}
    for i in range(2):
        resources[f"org{i}"] = {"resourceType": "Organization", "name": f"梧州医院{i}"}
        resources[f"med{i}"] = {"resourceType": "Medication", "code": {"text": f"药{i}"}}
        resources[f"dev{i}"] = {"resourceType": "Device", "status": "active"}
    resources["stranger"] = {"resourceType": "Practitioner", "name": [{"family": "陌生"}]}
    resources["q-doctor"] = {"resourceType": "Practitioner", "name": [{"family": "别人"}]}
    resources["p"] = {
        "resourceType": "Patient",
        "generalPractitioner": [{"reference": "@prac0"}],
        "managingOrganization": {"reference": "@org0"},
    }
    resources["q"] = {"resourceType": "Patient"}
    for i in range(150):
        resources[f"obs{i:03}"] = {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": "@p"},
            "performer": [{"reference": f"@prac{i % 3}"}],
            "device": {"reference": f"@dev{i % 2}"},
            "effectiveDateTime": _day(date(2022, 1, 1), i) if i < 100 else _day(date(2023, 1, 1), i - 100),
        }
    for i in range(40):
        resources[f"enc{i:02}"] = {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": "@p"},
            "serviceProvider": {"reference": f"@org{i % 2}"},
            "period": {"start": _day(date(2021, 1, 1), i), "end": _day(date(2021, 1, 1), i)},
        }
    for i in range(30):
        resources[f"rx{i:02}"] = {
            "resourceType": "MedicationRequest",
            "status": "active",
            "intent": "order",
            "subject": {"reference": "@p"},
            "medicationReference": {"reference": f"@med{i % 2}"},
            "requester": {"reference": f"@prac{i % 3}"},
            "authoredOn": _day(date(2023, 6, 1), i),
        }
    for i in range(10):
        resources[f"cond{i}"] = {"resourceType": "Condition", "subject": {"reference": "@p"}}
    for i in range(20):
        resources[f"qobs{i:02}"] = {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "other"},
            "subject": {"reference": "@q"},
            "performer": [{"reference": "@q-doctor"}],
        }
    record = _transaction(client, resources)
    assert client.delete(f"/fhir/Observation/{record.id('obs007')}").status_code == 200
    return record


@pytest.fixture(scope="module")
def record(client) -> Record:
    return _build(client)


def _everything_of_p(record: Record) -> set[tuple[str, str]]:
    names = ["p", *record.matching("obs"), *record.matching("enc"), *record.matching("rx"), *record.matching("cond")]
    names += ["prac0", "prac1", "prac2", "org0", "org1", "med0", "med1", "dev0", "dev1"]
    return record.keys(*names) - record.keys("obs007")


def _pages(client, url: str) -> list[dict]:
    pages = []
    while url:
        response = client.get(url)
        assert response.status_code == 200, response.text
        pages.append(response.json())
        url = next((link["url"] for link in pages[-1]["link"] if link["relation"] == "next"), None)
        assert len(pages) < 100
    return pages


def _keys(pages: list[dict]) -> list[tuple[str, str]]:
    return [(e["resource"]["resourceType"], e["resource"]["id"]) for page in pages for e in page.get("entry", [])]


def test_the_whole_record_in_pages_of_50(client, record):
    expected = _everything_of_p(record)
    assert len(expected) == 239
    pages = _pages(client, f"/fhir/Patient/{record.id('p')}/$everything?_count=50")
    keys = _keys(pages)
    assert len(keys) == len(set(keys))
    assert set(keys) == expected
    assert [len(page.get("entry", [])) for page in pages] == [50, 50, 50, 50, 39]
    assert {page["total"] for page in pages} == {239}
    modes = {(e["resource"]["resourceType"], e["search"]["mode"]) for page in pages for e in page["entry"]}
    assert ("Practitioner", "include") in modes and ("Observation", "match") in modes
    assert ("Patient", "match") in modes


def test_post_with_parameters_pages_the_same(client, record):
    body = {"resourceType": "Parameters", "parameter": [{"name": "_count", "valuePositiveInt": 100}]}
    first = client.post(f"/fhir/Patient/{record.id('p')}/$everything", json=body, headers=FHIR)
    assert first.status_code == 200
    next_url = next(link["url"] for link in first.json()["link"] if link["relation"] == "next")
    assert "_count=100" in next_url
    pages = [first.json(), *_pages(client, next_url)]
    assert set(_keys(pages)) == _everything_of_p(record) and len(_keys(pages)) == 239


def test_care_dates_select_the_compartment(client, record):
    since_2023 = _keys(_pages(client, f"/fhir/Patient/{record.id('p')}/$everything?start=2023-01-01&_count=500"))
    expected = record.keys("p", *record.matching("rx"), *record.matching("cond"), "prac0", "prac1", "prac2")
    expected |= record.keys(*[f"obs{i:03}" for i in range(100, 150)], "org0", "med0", "med1", "dev0", "dev1")
    assert set(since_2023) == expected  # org1 is referred to by the 2021 encounters only

    until_2021 = _keys(_pages(client, f"/fhir/Patient/{record.id('p')}/$everything?end=2021-12-31&_count=500"))
    expected = record.keys("p", *record.matching("enc"), *record.matching("cond"), "prac0", "org0", "org1")
    assert set(until_2021) == expected

    window = f"/fhir/Patient/{record.id('p')}/$everything?start=2022-01-10&end=2022-01-12&_type=Observation"
    assert set(_keys(_pages(client, window))) == record.keys("obs009", "obs010", "obs011")


def test_type_and_since_filter_what_is_returned(client, record):
    url = f"/fhir/Patient/{record.id('p')}/$everything?_type=Practitioner,Organization&_count=500"
    assert set(_keys(_pages(client, url))) == record.keys("prac0", "prac1", "prac2", "org0", "org1")
    repeated = f"/fhir/Patient/{record.id('p')}/$everything?_type=Device&_type=Medication"
    assert set(_keys(_pages(client, repeated))) == record.keys("dev0", "dev1", "med0", "med1")

    condition = client.get(f"/fhir/Condition/{record.id('cond3')}").json()
    condition["clinicalStatus"] = {
        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]
    }
    updated = client.put(f"/fhir/Condition/{record.id('cond3')}", json=condition, headers=FHIR).json()
    since = updated["meta"]["lastUpdated"]
    url = f"/fhir/Patient/{record.id('p')}/$everything"
    assert set(_keys(_pages(client, f"{url}?_since={since}"))) == record.keys("cond3")
    assert set(_keys(_pages(client, f"{url}?_since={since.replace('Z', '%2B00:00')}"))) == record.keys("cond3")


def test_type_level_covers_every_patient(client, record):
    keys = set(_keys(_pages(client, "/fhir/Patient/$everything?_count=1000")))
    assert _everything_of_p(record) <= keys
    assert record.keys("q", "q-doctor", *record.matching("qobs")) <= keys
    assert record.refs["stranger"] not in keys
    assert record.refs["obs007"] not in keys


def test_paging_is_stable_while_the_record_changes(client):
    small = _transaction(
        client,
        {
            "s": {"resourceType": "Patient"},
            **{
                f"o{i:02}": {
                    "resourceType": "Flag",
                    "status": "active",
                    "code": {"text": "x"},
                    "subject": {"reference": "@s"},
                }
                for i in range(25)
            },
        },
    )
    url = f"/fhir/Patient/{small.id('s')}/$everything?_count=10"
    first = client.get(url).json()
    seen = _keys([first])
    changed = next(key for key in seen if key[0] == "Flag")
    flag = client.get(f"/fhir/Flag/{changed[1]}").json()
    flag["status"] = "inactive"
    client.put(f"/fhir/Flag/{changed[1]}", json=flag, headers=FHIR)
    late = client.post(
        "/fhir/Flag",
        json={
            "resourceType": "Flag",
            "status": "active",
            "code": {"text": "y"},
            "subject": {"reference": f"Patient/{small.id('s')}"},
        },
        headers=FHIR,
    ).json()["id"]
    next_url = next(link["url"] for link in first["link"] if link["relation"] == "next")
    keys = seen + _keys(_pages(client, next_url))
    assert len(keys) == len(set(keys)) == 27
    assert set(keys) == set(small.refs.values()) | {("Flag", late)}


def test_a_deleted_or_unknown_patient(client):
    pid = client.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=FHIR).json()["id"]
    client.delete(f"/fhir/Patient/{pid}")
    assert client.get(f"/fhir/Patient/{pid}/$everything").status_code == 410
    assert client.get("/fhir/Patient/nobody/$everything").status_code == 404


@pytest.mark.parametrize(
    ("query", "name", "words"),
    [
        ("_cursor=garbage", "_cursor", "not one this server issued"),
        ("_cursor=ZXZlcnl0aGluZy54", "_cursor", "not one this server issued"),
        ("_type=Observation,Bogus", "_type", "unknown resource types: Bogus"),
        ("_type=", "_type", "must be a code"),
        ("start=2024-13-01", "start", "must be a date"),
        ("end=soon", "end", "must be a date"),
        ("_since=2024-01-01", "_since", "must be a instant"),
        ("_count=0", "_count", "must be a positiveInt"),
        ("_count=1&_count=2", "_count", "at most 1 time(s)"),
        ("patient=x", "patient", "Unknown parameter 'patient'"),
    ],
)
def test_bad_everything_requests(client, record, query, name, words):
    response = client.get(f"/fhir/Patient/{record.id('p')}/$everything?{query}")
    assert response.status_code == 400, response.text
    issue = response.json()["issue"][0]
    assert words in issue["diagnostics"] and issue["expression"] == [name]


async def _fhirpy_pages(base_url: str, patient_id: str, authorization: str) -> list[dict]:
    client = AsyncFHIRClient(base_url, authorization=authorization)
    bundle = await client.reference("Patient", patient_id).execute("$everything", method="get", params={"_count": 50})
    pages = [bundle]
    while next_url := next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None):
        bundle = await client.execute(next_url, method="get")
        pages.append(bundle)
    return pages


def test_fhirpy_pages_through_everything(live_server, record):
    pages = asyncio.run(_fhirpy_pages(live_server.base_url, record.id("p"), live_server.headers["Authorization"]))
    keys = _keys(pages)
    assert len(pages) == 5
    assert len(keys) == len(set(keys))
    assert set(keys) == _everything_of_p(record)


def test_every_compartment_type_has_its_care_date_parameter():
    registry = default_registry()
    for res_type in definitions.compartment("Patient"):
        param = registry.get(res_type, care_date(res_type))
        assert param is None or param.type == "date", res_type
        if care_date(res_type) != "date":
            assert param is not None, res_type
