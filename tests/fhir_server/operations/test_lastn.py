"""``Observation/$lastn`` on both backends: grouping by subject and code, search filters, bad inputs."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from fhir_server.api.app import create_app
from tests.conftest import auth_headers
from tests.fhir_server.operations.conftest import FHIR

LOINC = "http://loinc.org"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"


def _observation(subject: str, code: str, when: str | None, category: str = "vital-signs", *extra_codes: str) -> dict:
    resource = {
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": CATEGORY, "code": category}]}],
        "code": {"coding": [{"system": LOINC, "code": c} for c in (code, *extra_codes)]},
        "subject": {"reference": subject},
        "valueQuantity": {"value": 1},
    }
    if when:
        resource["effectiveDateTime"] = when
    return resource


@pytest.fixture(scope="module")
def record(client) -> dict[str, str]:
    """Two patients' observations; returns a name → id map."""
    ids: dict[str, str] = {}
    for name in ("a", "b"):
        ids[name] = client.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=FHIR).json()["id"]
    a, b = f"Patient/{ids['a']}", f"Patient/{ids['b']}"
    observations = {
        "bp1": _observation(a, "85354-9", "2024-01-01"),
        "bp3": _observation(a, "85354-9", "2024-03-01"),
        "bp2": _observation(a, "85354-9", "2024-02-01"),
        "hr1": _observation(a, "8867-4", "2024-01-05"),
        "hr2": _observation(a, "8867-4", "2024-02-05T10:00:00+08:00"),
        "hr-undated": _observation(a, "8867-4", None),
        "glu1": _observation(a, "2339-0", "2023-12-01", "laboratory"),
        "glu2": _observation(a, "2339-0", "2024-04-01", "laboratory", "15074-8"),
        "b-hr": _observation(b, "8867-4", "2020-01-01"),
    }
    for name, resource in observations.items():
        ids[name] = client.post("/fhir/Observation", json=resource, headers=FHIR).json()["id"]
    return ids


def _names(record: dict[str, str], response) -> list[str]:
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert bundle["type"] == "searchset"
    by_id = {v: k for k, v in record.items()}
    names = [by_id[e["resource"]["id"]] for e in bundle.get("entry", [])]
    assert bundle["total"] == len(names)
    return names


def test_the_latest_of_each_code(client, record):
    names = _names(record, client.get(f"/fhir/Observation/$lastn?patient={record['a']}"))
    assert sorted(names) == ["bp3", "glu2", "hr2"]


def test_max_per_code_with_undated_last(client, record):
    names = _names(record, client.get(f"/fhir/Observation/$lastn?patient={record['a']}&max=3"))
    assert names[names.index("hr2") : names.index("hr2") + 3] == ["hr2", "hr1", "hr-undated"]
    assert names[names.index("bp3") : names.index("bp3") + 3] == ["bp3", "bp2", "bp1"]
    assert sorted(names) == sorted(["bp3", "bp2", "bp1", "hr2", "hr1", "hr-undated", "glu2", "glu1"])


def test_an_observation_with_two_codings_is_answered_once(client, record):
    names = _names(record, client.get(f"/fhir/Observation/$lastn?subject=Patient/{record['a']}&code=15074-8"))
    assert names == ["glu2"]
    names = _names(record, client.get(f"/fhir/Observation/$lastn?patient={record['a']}&category=laboratory&max=2"))
    assert sorted(names) == ["glu1", "glu2"]


def test_search_filters_apply(client, record):
    vital = _names(record, client.get(f"/fhir/Observation/$lastn?patient={record['a']}&category=vital-signs"))
    assert sorted(vital) == ["bp3", "hr2"]
    coded = _names(record, client.get(f"/fhir/Observation/$lastn?patient={record['a']}&code={LOINC}|8867-4&max=2"))
    assert coded == ["hr2", "hr1"]
    dated = _names(record, client.get(f"/fhir/Observation/$lastn?patient={record['a']}&date=lt2024-02&max=5"))
    assert sorted(dated) == ["bp1", "glu1", "hr1"]


def test_every_subject_gets_its_own_groups(client, record):
    both = f"{record['a']},{record['b']}"
    names = _names(record, client.get(f"/fhir/Observation/$lastn?patient={both}&code=8867-4"))
    assert sorted(names) == ["b-hr", "hr2"]


def test_post_with_parameters(client, record):
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "max", "valuePositiveInt": 2},
            {"name": "patient", "valueString": record["a"]},
            {"name": "code", "valueString": "85354-9"},
        ],
    }
    assert _names(record, client.post("/fhir/Observation/$lastn", json=body, headers=FHIR)) == ["bp3", "bp2"]


def test_no_match_is_an_empty_bundle(client, record):
    assert _names(record, client.get("/fhir/Observation/$lastn?patient=nobody")) == []


@pytest.mark.parametrize(
    ("query", "name", "words"),
    [
        ("max=0", "max", "must be a positiveInt"),
        ("max=two", "max", "must be a positiveInt"),
        ("max=1&max=2", "max", "at most 1 time(s)"),
        ("colour=red", "colour", "Unknown search parameter 'colour'"),
        ("date=yesterday", "date", "not a FHIR date"),
        ("_sort=date", "_sort", "not the result parameter '_sort'"),
        ("_count=5", "_count", "not the result parameter '_count'"),
        ("_include=Observation:subject", "_include", "not the result parameter"),
    ],
)
def test_bad_lastn_requests(client, query, name, words):
    response = client.get(f"/fhir/Observation/$lastn?{query}")
    assert response.status_code == 400, response.text
    issue = response.json()["issue"][0]
    assert words in issue["diagnostics"]
    assert issue["expression"] == [name]


def test_too_many_results_ask_to_narrow(backend, record):
    settings = backend.settings.model_copy(update={"max_page_size": 2})
    with TestClient(create_app(settings, backend.engine), headers=auth_headers(backend)) as small:
        response = small.get(f"/fhir/Observation/$lastn?patient={record['a']}")
    assert response.status_code == 413
    assert "narrow it" in response.json()["issue"][0]["diagnostics"]
