"""Result parameters (includes, sort, count, total, summary, elements) and every refused search, both backends."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest

from tests.fhir_server.search.dataset import RESOURCES


@pytest.fixture(scope="module")
def client(client):
    """The application's client, with the data set stored (once per backend)."""
    for resource in RESOURCES:
        response = client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource)
        assert response.status_code == 201, response.text
    return client


def bundle(client, path: str, params=None, **kwargs) -> dict:
    response = client.get(path, params=params, **kwargs)
    assert response.status_code == 200, response.text
    return response.json()


def entries(result: dict, mode: str) -> list[str]:
    return [
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in result.get("entry", [])
        if e["search"]["mode"] == mode
    ]


def link(result: dict, relation: str) -> str | None:
    return next((x["url"] for x in result["link"] if x["relation"] == relation), None)


# -- includes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "included"),
    [
        ({"_id": "bp-1", "_include": "Observation:subject"}, {"Patient/zhangsan"}),
        ({"_id": "bp-1", "_include": "Observation:performer:Practitioner"}, {"Practitioner/dr-li"}),
        ({"_id": "bp-1", "_include": "Observation:performer:Organization"}, set()),
        (
            {"_id": "bp-1", "_include": "*"},
            {"Patient/zhangsan", "Encounter/enc-1", "Practitioner/dr-li"},
        ),
        (
            {"_id": "bp-1", "_include": ["Observation:encounter", "Encounter:service-provider"]},
            {"Encounter/enc-1"},
        ),
        (
            {"_id": "bp-1", "_include": "Observation:encounter", "_include:iterate": "Encounter:service-provider"},
            {"Encounter/enc-1", "Organization/org-hongshizi"},
        ),
        (
            {
                "_id": "bp-1",
                "_include:iterate": ["Observation:encounter", "Encounter:service-provider", "Organization:partof"],
            },
            {"Encounter/enc-1", "Organization/org-hongshizi", "Organization/org-weijian"},
        ),
        ({"_id": "muller", "_revinclude": "Observation:subject"}, {"Observation/weight", "Observation/panel"}),
        (
            {"_id": "zhangsan", "_revinclude": "Observation:subject", "_revinclude:iterate": "Provenance:target"},
            {"Observation/bp-1", "Observation/bp-2", "Provenance/prov-1"},
        ),
        (
            {"_id": "muller", "_revinclude": "Observation:subject", "_include": "Patient:organization"},
            {"Observation/weight", "Observation/panel", "Organization/org-hongshizi"},
        ),
    ],
)
def test_include_and_revinclude(client, params, included):
    res_type = "Observation" if params["_id"].startswith("bp") else "Patient"
    result = bundle(client, f"/fhir/{res_type}", params)
    assert len(entries(result, "match")) == 1
    assert set(entries(result, "include")) == included
    assert result["total"] == 1
    for entry in result["entry"]:
        assert (
            entry["fullUrl"] == f"http://testserver/fhir/{entry['resource']['resourceType']}/{entry['resource']['id']}"
        )


# -- sorting -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "order"),
    [
        ({"_sort": "birthdate"}, ["muller", "zhangsan", "shan"]),
        ({"_sort": "-birthdate"}, ["shan", "zhangsan", "muller"]),
        ({"_sort": "family"}, ["muller", "shan", "zhangsan"]),
        ({"_sort": "-family"}, ["zhangsan", "shan", "muller"]),
        ({"_sort": "gender,-_id"}, ["muller", "zhangsan", "shan"]),
        ({"_sort": "-_id"}, ["zhangsan", "shan", "muller"]),
        ({"_sort": "telecom,_id"}, ["zhangsan", "muller", "shan"]),
        ({"_sort": "-telecom,_id"}, ["zhangsan", "muller", "shan"]),
        ({"_sort": "organization,_id"}, ["muller", "zhangsan", "shan"]),
    ],
)
def test_sort(client, params, order):
    result = bundle(client, "/fhir/Patient", params)
    assert [e["resource"]["id"] for e in result["entry"]] == order


def test_sort_quantity_and_date_descending_and_lastupdated(client):
    result = bundle(client, "/fhir/Observation", {"code": "8480-6", "_sort": "-value-quantity,_id"})
    assert [e["resource"]["id"] for e in result["entry"]] == ["bp-2", "bp-1", "by-identifier", "remote"]
    result = bundle(client, "/fhir/Observation", {"_sort": "-date", "_count": 3})
    assert [e["resource"]["id"] for e in result["entry"]] == ["panel", "bp-2", "remote"]
    result = bundle(client, "/fhir/Location", {"_sort": "-_lastUpdated"})
    assert [e["resource"]["id"] for e in result["entry"]] == ["loc-beijing", "loc-guangzhou", "loc-wuzhou"]


def test_sorted_pages_follow_next_and_previous(client):
    first = bundle(client, "/fhir/Observation", {"_sort": "-date,_id", "_count": 2})
    seen, page, pages = [], first, []
    while True:
        pages.append([e["resource"]["id"] for e in page["entry"]])
        seen += pages[-1]
        nxt = link(page, "next")
        if nxt is None:
            break
        page = bundle(client, nxt.replace("http://testserver", ""))
    everything = bundle(client, "/fhir/Observation", {"_sort": "-date,_id", "_count": 100})
    assert seen == [e["resource"]["id"] for e in everything["entry"]]
    assert len(seen) == 7 and link(first, "previous") is None
    back = [[e["resource"]["id"] for e in page["entry"]]]
    while (previous := link(page, "previous")) is not None:
        page = bundle(client, previous.replace("http://testserver", ""))
        back.append([e["resource"]["id"] for e in page["entry"]])
    assert list(reversed(back)) == pages


# -- count, total, summary, elements ---------------------------------------------------------------


def test_count_total_summary_elements(client):
    result = bundle(client, "/fhir/Patient", {"_count": 0})
    assert result["total"] == 3 and "entry" not in result
    result = bundle(client, "/fhir/Patient", {"_summary": "count"})
    assert result["total"] == 3 and "entry" not in result
    result = bundle(client, "/fhir/Patient", {"_total": "none", "_count": 1})
    assert "total" not in result and len(result["entry"]) == 1
    assert bundle(client, "/fhir/Patient", {"_total": "estimate"})["total"] >= 1
    assert bundle(client, "/fhir/Patient", {"_total": "accurate", "_count": 1})["total"] == 3
    summary = bundle(client, "/fhir/Patient", {"_id": "zhangsan", "_summary": "true"})["entry"][0]["resource"]
    assert "birthDate" in summary and "generalPractitioner" not in summary
    assert summary["meta"]["tag"][-1]["code"] == "SUBSETTED"
    data = bundle(client, "/fhir/Patient", {"_id": "zhangsan", "_summary": "data"})["entry"][0]["resource"]
    assert "text" not in data and "name" in data
    elements = bundle(client, "/fhir/Patient", {"_id": "zhangsan", "_elements": "gender,birthDate"})["entry"][0]
    assert set(elements["resource"]) == {"resourceType", "id", "meta", "gender", "birthDate"}


def test_count_is_capped_and_defaults(client):
    result = bundle(client, "/fhir/Observation")
    assert len(result["entry"]) == 7 and result["total"] == 7
    result = bundle(client, "/fhir/Observation", {"_count": 2})
    assert len(result["entry"]) == 2 and result["total"] == 7
    assert dict(parse_qsl(urlsplit(link(result, "next")).query))["_count"] == "2"


# -- refused searches ---------------------------------------------------------------------------

BAD = [
    ("Patient?shoe-size=42", "shoe-size"),
    ("Patient?name:fuzzy=x", "name:fuzzy"),
    ("Patient?gender:below=male", "gender:below"),
    ("Patient?gender:in=http://x", "gender:in"),
    ("Patient?birthdate=yesterday", "birthdate"),
    ("Patient?birthdate=xx2020", "birthdate"),
    ("Patient?birthdate=2020-13-01", "birthdate"),
    ("RiskAssessment?probability=gtx", "probability"),
    ("Observation?value-quantity=5|mg", "value-quantity"),
    ("Observation?code-value-quantity=8480-6", "code-value-quantity"),
    ("Observation?subject.shoe=1", "subject.shoe"),
    ("Observation?status.name=x", "status.name"),
    ("Observation?subject:Nonsense.name=x", "subject:Nonsense.name"),
    ("Patient?_has:Observation:code:status=final", "_has:Observation:code:status"),
    ("Patient?_has:Observation=x", "_has:Observation"),
    ("Patient?_has:Nonsense:subject:code=x", "_has:Nonsense:subject:code"),
    ("Patient?name:missing=maybe", "name:missing"),
    ("Location?near=north|south", "near"),
    ("Location?near=23|111|5|furlong", "near"),
    ("Patient?_sort=shoe", "_sort"),
    ("Location?_sort=near", "_sort"),
    ("Patient?_sort=name.family", "_sort"),
    ("Patient?_count=many", "_count"),
    ("Patient?_total=some", "_total"),
    ("Patient?_summary=short", "_summary"),
    ("Patient?_include=Patient:name", "_include"),
    ("Patient?_include=Patient", "_include"),
    ("Patient?_include:deep=Patient:organization", "_include:deep"),
    ("Patient?_revinclude=Nonsense:subject", "_revinclude"),
    ("Patient?_text=cough", "_text"),
    ("Patient?_type=Patient", "_type"),
    ("Patient?_contained=true", "_contained"),
    ("Patient?_cursor=garbage", "_cursor"),
    ("Patient?general-practitioner=Practitioner/a/b/c", "general-practitioner"),
    ("Patient?general-practitioner:Practitioner=Organization/x", "general-practitioner:Practitioner"),
    ("?_type=Nonsense", "_type"),
    ("?_type=Patient,Observation&name=x", "name"),
    ("?shoe=1", "shoe"),
    ("?_type=Patient,Observation&_sort=name", "_sort"),
]


@pytest.mark.parametrize(("query", "name"), BAD, ids=[b[0] for b in BAD])
def test_refused_search_names_the_parameter(client, query, name):
    response = client.get(("/fhir" if query.startswith("?") else "/fhir/") + query)
    assert response.status_code == 400, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == [name]


@pytest.mark.parametrize(
    ("query", "name"), [b for b in BAD if b[1] != "_type"], ids=[b[0] for b in BAD if b[1] != "_type"]
)
def test_lenient_handling_ignores_and_reports(client, query, name):
    path = ("/fhir" if query.startswith("?") else "/fhir/") + query + "&_id=zhangsan"
    response = client.get(path, headers={"Prefer": "handling=lenient"})
    assert response.status_code == 200, response.text
    result = response.json()
    applied = parse_qsl(urlsplit(link(result, "self")).query)
    assert name not in [k for k, _ in applied]
    outcome = result["entry"][-1]
    assert outcome["search"]["mode"] == "outcome"
    assert name.split(":")[0].split(".")[0] in outcome["resource"]["issue"][0]["diagnostics"]


def test_unknown_type_is_404_and_other_routes_still_answer(client):
    assert client.get("/fhir/Nonsense").status_code == 404
    assert client.get("/fhir/metadata").json()["resourceType"] == "CapabilityStatement"
    assert client.get("/fhir/Patient/zhangsan").json()["id"] == "zhangsan"
    assert client.get("/fhir/_history").json()["type"] == "history"
    assert client.get("/fhir/Patient", headers={"Accept": "application/fhir+xml"}).status_code == 406
