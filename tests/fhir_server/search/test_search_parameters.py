"""Each parameter type, modifier and prefix, chains and ``_has``, on both backends with the same answers."""

from __future__ import annotations

import pytest

from fhir_server.search.parameters import LOCAL_BASE
from tests.fhir_server.search.dataset import MRN_SYSTEM, OTHER_RESIDENT_ID, REGIONAL_IDENTIFIERS, RESOURCES, V2_0203


@pytest.fixture(scope="module")
def client(client):
    """The application's client, with the data set stored (once per backend)."""
    for resource in RESOURCES:
        response = client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource)
        assert response.status_code == 201, response.text
    return client


def found(client, path: str, params=None, **kwargs) -> set[str]:
    response = client.get(path, params=params, **kwargs)
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert bundle["type"] == "searchset"
    return {e["fullUrl"].split("/fhir/", 1)[1] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"}


CASES = [
    # string: prefix, case/accent-insensitive, :exact, :contains, Chinese, escaped comma
    ("Patient?name=mull", {"Patient/muller"}),
    ("Patient?name=MÜLLER", {"Patient/muller"}),
    ("Patient?given=angela", {"Patient/muller"}),
    ("Patient?family:exact=Müller", {"Patient/muller"}),
    ("Patient?family:exact=muller", set()),
    ("Patient?name:contains=ull", {"Patient/muller"}),
    ("Patient?name=张三", {"Patient/zhangsan"}),
    ("Patient?name=张", {"Patient/zhangsan"}),
    ("Patient?given=三", {"Patient/zhangsan"}),
    ("Patient?name=田芳", {"Patient/shan"}),
    ("Patient?family=Smith\\, Jr", {"Patient/muller"}),
    ("Patient?address-city=梧州", {"Patient/zhangsan"}),
    ("Patient?name=张,单", {"Patient/zhangsan", "Patient/shan"}),
    ("Patient?name=张&name=单", set()),
    # the local pinyin parameter
    ("Patient?name-pinyin=zhangsan", {"Patient/zhangsan"}),
    ("Patient?name-pinyin=zs", {"Patient/zhangsan"}),
    ("Patient?name-pinyin=ZHANG", {"Patient/zhangsan"}),
    ("Patient?name-pinyin=shantianfang", {"Patient/shan"}),
    ("Patient?name-pinyin=stf", {"Patient/shan"}),
    ("Patient?name-pinyin=lisi", set()),
    # token: code, system|code, |code, system|, :not, :text, :of-type, booleans, ContactPoint
    ("Patient?gender=male", {"Patient/zhangsan"}),
    ("Patient?gender=male,female", {"Patient/zhangsan", "Patient/muller"}),
    ("Patient?gender:not=male", {"Patient/muller", "Patient/shan"}),
    ("Patient?active=true", {"Patient/zhangsan"}),
    ("Patient?active=false", {"Patient/muller"}),
    ("Patient?telecom=0774-1234567", {"Patient/zhangsan"}),
    ("Patient?phone=0774-1234567", {"Patient/zhangsan"}),
    (
        "Observation?code=http://loinc.org|8480-6",
        {"Observation/bp-1", "Observation/bp-2", *[]} | {"Observation/remote", "Observation/by-identifier"},
    ),
    ("Observation?code=|8480-6", set()),
    (
        "Observation?code=http://loinc.org|",
        {
            "Observation/bp-1",
            "Observation/bp-2",
            "Observation/remote",
            "Observation/by-identifier",
            "Observation/weight",
            "Observation/panel",
        },
    ),
    ("Observation?code=85354-9", {"Observation/panel"}),
    ("Observation?code:text=body", {"Observation/weight"}),
    ("Observation?code:text=systolic", {"Observation/bp-1"}),
    ("Observation?code:text=urine dip", {"Observation/dipstick"}),
    ("Observation?status:not=final", {"Observation/weight"}),
    ("Patient?identifier:of-type=" + V2_0203 + "|MR|MRN-2", {"Patient/muller"}),
    ("Patient?identifier:of-type=" + V2_0203 + "|MR|MRN-3", set()),
    ("Patient?identifier:text=medical record", {"Patient/muller"}),
    ("Patient?identifier=urn:test:escape|a\\|b\\,c\\$d", {"Patient/muller"}),
    ("Patient?identifier=MRN-2", {"Patient/muller"}),
    ("Patient?identifier=" + V2_0203 + "|", set()),
    ("Patient?_id=zhangsan,shan", {"Patient/zhangsan", "Patient/shan"}),
    ("Patient?_id:not=zhangsan", {"Patient/muller", "Patient/shan"}),
    # common parameters
    ("Patient?_tag=urn:test:tag|vip", {"Patient/zhangsan"}),
    ("Patient?_security=R", {"Patient/zhangsan"}),
    ("Patient?_profile=" + LOCAL_BASE + "StructureDefinition/cn-patient", {"Patient/zhangsan"}),
    ("Patient?_source=https://his.example.org/hongshizi", {"Patient/zhangsan"}),
    ("Observation?_list=list-1", {"Observation/bp-1", "Observation/weight"}),
    # date: prefixes, partial dates, periods, time zones
    ("Patient?birthdate=1980-05-01", {"Patient/zhangsan"}),
    ("Patient?birthdate=1980", {"Patient/zhangsan"}),
    ("Patient?birthdate=1975-12-10", set()),
    ("Patient?birthdate=1975", {"Patient/muller"}),
    ("Patient?birthdate=ne1980-05-01", {"Patient/muller", "Patient/shan"}),
    ("Patient?birthdate=gt1980-05-01", {"Patient/shan"}),
    ("Patient?birthdate=ge1980-05-01", {"Patient/zhangsan", "Patient/shan"}),
    ("Patient?birthdate=lt1980-05-01", {"Patient/muller"}),
    ("Patient?birthdate=le1980-05-01", {"Patient/zhangsan", "Patient/muller"}),
    ("Patient?birthdate=sa1975-12-15", {"Patient/zhangsan", "Patient/shan"}),
    ("Patient?birthdate=eb1975-12-15", set()),
    ("Patient?birthdate=eb1976", {"Patient/muller"}),
    ("Patient?birthdate=ge1976&birthdate=lt2000", {"Patient/zhangsan"}),
    ("Patient?birthdate=ap2001-02-01", {"Patient/shan"}),
    ("Observation?date=2024-01-02", {"Observation/bp-1"}),
    ("Observation?date=2024-01-02T02:00:00Z", {"Observation/bp-1"}),
    ("Observation?date=2024-01-01T20:00:00-06:00", {"Observation/bp-1"}),
    ("Observation?date=2024-01-02T10:00:00%2B08:00", {"Observation/bp-1"}),
    ("Observation?date=2024-01-01", set()),
    ("Observation?date=2024-02", {"Observation/bp-2"}),
    ("Observation?date=2024-02-01", set()),
    # ge: above the search range, or inside it; a period that merely overlaps 2024-02-02 is neither
    ("Observation?date=ge2024-02-02", {"Observation/panel"}),
    ("Observation?date=ge2024-02-01", {"Observation/panel", "Observation/bp-2"}),
    ("Observation?date=sa2024-01-02", {"Observation/bp-2", "Observation/panel", "Observation/remote"}),
    ("Encounter?date=2024-01", {"Encounter/enc-1"}),
    ("Encounter?date=2024-01-02", set()),
    ("Encounter?date=ge2024-01-02", {"Encounter/enc-1"}),
    ("Encounter?date=eb2024-01-01", set()),
    ("Observation?_lastUpdated=gt2000-01-01&_id=bp-1", {"Observation/bp-1"}),
    ("Observation?_lastUpdated=lt2000-01-01", set()),
    # number and quantity
    ("RiskAssessment?probability=0.25", {"RiskAssessment/risk-low"}),
    ("RiskAssessment?probability=0.3", {"RiskAssessment/risk-low"}),
    ("RiskAssessment?probability=0.30", set()),
    ("RiskAssessment?probability=gt0.5", {"RiskAssessment/risk-high"}),
    ("RiskAssessment?probability=le0.25", {"RiskAssessment/risk-low"}),
    ("RiskAssessment?probability=ne0.25", {"RiskAssessment/risk-high"}),
    ("RiskAssessment?probability=ap0.68", {"RiskAssessment/risk-high"}),
    ("Observation?value-quantity=120", {"Observation/bp-1"}),
    ("Observation?value-quantity=135.5|http://unitsofmeasure.org|mm[Hg]", {"Observation/bp-2"}),
    ("Observation?value-quantity=gt100||mm[Hg]", {"Observation/bp-1", "Observation/bp-2"}),
    ("Observation?value-quantity=gt100||kg", set()),
    ("Observation?value-quantity=lt100", {"Observation/weight"}),
    ("Observation?value-quantity=ap130", {"Observation/bp-2", "Observation/bp-1"}),
    ("Observation?value-quantity=ap135", {"Observation/bp-2"}),
    ("Observation?value-quantity=1.2e2", {"Observation/bp-1"}),
    # composite
    ("Observation?code-value-quantity=http://loinc.org|8480-6$gt125", {"Observation/bp-2"}),
    ("Observation?component-code-value-quantity=http://loinc.org|8480-6$gt140", {"Observation/panel"}),
    ("Observation?component-code-value-quantity=http://loinc.org|8462-4$gt140", set()),
    ("Observation?component-code-value-quantity=8462-4$lt100", {"Observation/panel"}),
    ("Observation?combo-code-value-quantity=8480-6$150", {"Observation/panel"}),
    # uri
    ("ValueSet?url=https://hie.wuzhou.gov.cn/fhir/ValueSet/a", {"ValueSet/vs-a"}),
    ("ValueSet?url:below=https://hie.wuzhou.gov.cn/fhir/ValueSet/a", {"ValueSet/vs-a", "ValueSet/vs-a-sub"}),
    ("ValueSet?url:above=https://hie.wuzhou.gov.cn/fhir/ValueSet/a/sub/x", {"ValueSet/vs-a", "ValueSet/vs-a-sub"}),
    ("ValueSet?url:above=https://hie.wuzhou.gov.cn/fhir/ValueSet/a", {"ValueSet/vs-a"}),
    # reference: id, Type/id, absolute, :type, :identifier, :missing
    ("Observation?subject=zhangsan", {"Observation/bp-1", "Observation/bp-2"}),
    ("Observation?subject=Patient/zhangsan", {"Observation/bp-1", "Observation/bp-2"}),
    ("Observation?subject:Patient=zhangsan", {"Observation/bp-1", "Observation/bp-2"}),
    ("Observation?subject:Group=zhangsan", set()),
    ("Observation?patient=http://testserver/fhir/Patient/muller", {"Observation/weight", "Observation/panel"}),
    ("Observation?subject=http://other.example.org/fhir/Patient/999", {"Observation/remote"}),
    ("Observation?subject:identifier=urn:oid:2.16.156.10011.1.3|" + OTHER_RESIDENT_ID, {"Observation/by-identifier"}),
    ("Observation?subject:missing=true", set()),
    ("Observation?encounter:missing=false", {"Observation/bp-1"}),
    ("Observation?date:missing=true", {"Observation/dipstick", "Observation/by-identifier"}),
    ("Patient?telecom:missing=false", {"Patient/zhangsan"}),
    ("Observation?value-quantity:missing=true&code=8480-6", {"Observation/remote", "Observation/by-identifier"}),
    # chains, one and more levels, and reverse chains
    ("Observation?subject:Patient.name=张三", {"Observation/bp-1", "Observation/bp-2"}),
    ("Observation?subject.name=müller", {"Observation/weight", "Observation/panel"}),
    ("Observation?subject:Patient.gender=female&code=85354-9", {"Observation/panel"}),
    ("Observation?encounter.service-provider.name=梧州市红十字会", {"Observation/bp-1"}),
    ("Observation?encounter.service-provider.partof.name=wuzhou health", {"Observation/bp-1"}),
    ("Encounter?subject.general-practitioner.name=李", {"Encounter/enc-1"}),
    (
        "Observation?subject:Patient.organization.name=梧州",
        {
            "Observation/bp-1",
            "Observation/bp-2",
            "Observation/weight",
            "Observation/panel",
        },
    ),
    ("Patient?_has:Observation:patient:code=85354-9", {"Patient/muller"}),
    ("Patient?_has:Observation:subject:code=8480-6", {"Patient/zhangsan"}),
    ("Patient?_has:Observation:subject:_has:Provenance:target:agent=dr-li", {"Patient/zhangsan"}),
    ("Practitioner?_has:Observation:performer:subject.name=张", {"Practitioner/dr-li"}),
    ("Organization?_has:Patient:organization:gender=female", {"Organization/org-hongshizi"}),
    # special: near
    ("Location?near=23.48|111.28|5|km", {"Location/loc-wuzhou"}),
    ("Location?near=23.48|111.28|250|km", {"Location/loc-wuzhou", "Location/loc-guangzhou"}),
    ("Location?near=23.48|111.28|100|m", set()),
    ("Location?near=23.48|111.28|1000|m", {"Location/loc-wuzhou"}),
    ("Location?near=23.48|111.28|200|mi", {"Location/loc-wuzhou", "Location/loc-guangzhou"}),
    ("Location?near=23.48|111.28", {"Location/loc-wuzhou"}),
]


@pytest.mark.parametrize(("query", "expected"), CASES, ids=[c[0] for c in CASES])
def test_search(client, query, expected):
    assert found(client, "/fhir/" + query.replace("+", "%2B")) == expected


@pytest.mark.parametrize("system", sorted(REGIONAL_IDENTIFIERS))
def test_every_regional_identifier_system_finds_the_resident(client, system):
    value = REGIONAL_IDENTIFIERS[system]
    assert found(client, "/fhir/Patient", {"identifier": f"{system}|{value}"}) == {"Patient/zhangsan"}
    assert found(client, "/fhir/Patient", {"identifier": f"{system}|{value}0"}) == set()
    if system == MRN_SYSTEM:
        assert found(client, "/fhir/Patient", {"identifier": f"{system}|"}) == {"Patient/zhangsan"}


def test_post_search_merges_the_form_body_with_url_parameters(client):
    response = client.post(
        "/fhir/Observation/_search?status=final",
        content="code=8480-6&subject=Patient/zhangsan",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200
    assert {e["resource"]["id"] for e in response.json()["entry"]} == {"bp-1", "bp-2"}
    refused = client.post("/fhir/Observation/_search", json={"code": "x"})
    assert refused.status_code == 415


def test_system_search_by_type_and_common_parameters(client):
    assert found(client, "/fhir", {"_type": "Patient,Practitioner", "_id": "zhangsan,dr-li"}) == {
        "Patient/zhangsan",
        "Practitioner/dr-li",
    }
    assert found(client, "/fhir", {"_tag": "urn:test:tag|vip"}) == {"Patient/zhangsan"}
    assert found(client, "/fhir", {"_type": "Observation,Encounter", "patient": "zhangsan"}) == {
        "Observation/bp-1",
        "Observation/bp-2",
        "Encounter/enc-1",
    }
    response = client.post(
        "/fhir/_search",
        content="_type=Location&_id=loc-beijing",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert [e["resource"]["id"] for e in response.json()["entry"]] == ["loc-beijing"]


def test_compartment_search(client):
    assert found(client, "/fhir/Patient/zhangsan/Observation") == {"Observation/bp-1", "Observation/bp-2"}
    assert found(client, "/fhir/Patient/zhangsan/Observation", {"date": "2024-02"}) == {"Observation/bp-2"}
    assert found(client, "/fhir/Patient/muller/*") == {
        "Observation/weight",
        "Observation/panel",
        "RiskAssessment/risk-high",
    }
    assert found(client, "/fhir/Practitioner/dr-li/Observation") == {"Observation/bp-1"}
    assert client.get("/fhir/Patient/zhangsan/Organization").status_code == 404
    assert client.get("/fhir/Patient/zhangsan/_history").json()["type"] == "history"


def test_custom_search_parameter_becomes_active_and_reindex_fills_it(client, engine):
    from fhir_server.search.parameters import default_registry
    from fhir_server.search.reindex import reindex
    from fhir_server.storage.engine import unit_of_work

    parameter = {
        "resourceType": "SearchParameter",
        "url": LOCAL_BASE + "SearchParameter/Patient-gp-test",
        "name": "GeneralPractitionerFamily",
        "status": "active",
        "description": "Family names of the general practitioner's display (test)",
        "code": "test-line",
        "base": ["Patient"],
        "type": "string",
        "expression": "Patient.address.line",
    }
    assert client.post("/fhir/SearchParameter", json=parameter).status_code == 201
    # Active at once for searching; resources stored before it are found after a reindex.
    assert found(client, "/fhir/Patient", {"test-line": "新兴"}) == set()
    progress = []
    with unit_of_work(engine) as conn:
        count = reindex(
            conn, default_registry(), "Patient", progress=lambda done, total: progress.append((done, total))
        )
    assert count == 3 and progress[-1] == (3, 3)
    assert found(client, "/fhir/Patient", {"test-line": "新兴"}) == {"Patient/zhangsan"}
    retired = client.get("/fhir/SearchParameter", params={"code": "test-line"}).json()["entry"][0]["resource"]
    client.put(f"/fhir/SearchParameter/{retired['id']}", json={**retired, "status": "retired"})
    assert client.get("/fhir/Patient", params={"test-line": "新兴"}).status_code == 400
