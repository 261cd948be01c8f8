"""``Observation/$stats`` on both backends: statistics per code and unit, windows, sources, bad inputs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from fhir_server.validation import validate_resource
from tests.fhir_server.operations.conftest import FHIR

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"


def _reading(subject: str, when: str, systolic: float | None, diastolic: float, status: str = "final") -> dict:
    def component(code: str, value: float | None) -> dict:
        part: dict = {"code": {"coding": [{"system": LOINC, "code": code}]}}
        if value is None:
            part["dataAbsentReason"] = {"text": "cuff slipped"}
        else:
            part["valueQuantity"] = {"value": value, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}
        return part

    return {
        "resourceType": "Observation",
        "status": status,
        "code": {"coding": [{"system": LOINC, "code": "85354-9"}]},
        "subject": {"reference": subject},
        "effectiveDateTime": when,
        "component": [component("8480-6", systolic), component("8462-4", diastolic)],
    }


@pytest.fixture(scope="module")
def subject(client) -> str:
    pid = client.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=FHIR).json()["id"]
    recent = (datetime.now(UTC) - timedelta(minutes=30)).isoformat()
    readings = [
        _reading(f"Patient/{pid}", "2024-03-01T08:00:00+08:00", 120, 80),
        _reading(f"Patient/{pid}", "2024-03-02T08:00:00+08:00", 140, 90),
        _reading(f"Patient/{pid}", "2024-03-03T08:00:00+08:00", None, 85),
        _reading(f"Patient/{pid}", "2024-03-04T08:00:00+08:00", 300, 200, status="entered-in-error"),
        _reading(f"Patient/{pid}", recent, 160, 100),
    ]
    for reading in readings:
        assert client.post("/fhir/Observation", json=reading, headers=FHIR).status_code == 201
    return f"Patient/{pid}"


def _statistics(response) -> dict[str, dict[str, object]]:
    assert response.status_code == 200, response.text
    found = {}
    for parameter in response.json().get("parameter", []):
        if parameter["name"] != "statistic":
            continue
        resource = parameter["resource"]
        assert validate_resource(resource) == "Observation"
        values = {}
        for component in resource["component"]:
            code = component["code"]["coding"][0]["code"]
            values[code] = component.get("valueInteger", component.get("valueQuantity", {}).get("value"))
        found[resource["code"]["coding"][0]["code"]] = values
    return found


def test_statistics_of_components_over_all_time(client, subject):
    query = f"subject={subject}&system={LOINC}&code=8480-6&code=8462-4"
    query += "&statistic=average&statistic=max&statistic=minimum&statistic=count&statistic=totalcount"
    found = _statistics(client.get(f"/fhir/Observation/$stats?{query}"))
    assert found == {
        "8462-4": {"average": 88.75, "maximum": 100, "minimum": 80, "count": 4, "totalcount": 4},
        "8480-6": {"average": 140, "maximum": 160, "minimum": 120, "count": 3, "totalcount": 4},
    }


def test_a_period_and_a_duration_select_the_window(client, subject):
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "subject", "valueUri": subject},
            {"name": "coding", "valueCoding": {"system": LOINC, "code": "8480-6"}},
            {"name": "period", "valuePeriod": {"start": "2024-03-01", "end": "2024-03-02"}},
            {"name": "statistic", "valueCode": "median"},
            {"name": "statistic", "valueCode": "sum"},
            {"name": "include", "valueBoolean": True},
        ],
    }
    response = client.post("/fhir/Observation/$stats", json=body, headers=FHIR)
    assert _statistics(response) == {"8480-6": {"median": 130, "sum": 260}}
    sources = [p for p in response.json()["parameter"] if p["name"] == "source"]
    assert len(sources) == 2
    statistic = next(p["resource"] for p in response.json()["parameter"] if p["name"] == "statistic")
    assert statistic["effectivePeriod"] == {"start": "2024-03-01", "end": "2024-03-02"}

    recent = _statistics(
        client.get(f"/fhir/Observation/$stats?subject={subject}&code=8480-6&duration=2&statistic=count")
    )
    assert recent == {"8480-6": {"count": 1}}


def test_spread_statistics(client, subject):
    query = f"subject={subject}&code=8462-4&statistic=std-dev&statistic=variance&statistic=4-lower&statistic=4-upper"
    found = _statistics(client.get(f"/fhir/Observation/$stats?{query}"))["8462-4"]
    assert found["variance"] == pytest.approx(72.916667)
    assert found["std-dev"] == pytest.approx(8.539126)
    assert found["4-lower"] == pytest.approx(83.75) and found["4-upper"] == pytest.approx(92.5)


def test_no_observations_no_statistics(client, subject):
    response = client.get(f"/fhir/Observation/$stats?subject={subject}&code=2339-0&statistic=average")
    assert response.status_code == 200
    assert response.json() == {"resourceType": "Parameters"}


@pytest.mark.parametrize(
    ("query", "name", "words"),
    [
        ("code=8480-6&statistic=average", "subject", "needs the parameter 'subject'"),
        ("subject=Patient/1&code=8480-6", "statistic", "needs the parameter 'statistic'"),
        ("subject=Patient/1&statistic=average", "code", "needs the codes"),
        ("subject=Patient/1&code=1&statistic=kurtosis", "statistic", "statistic=kurtosis is not offered"),
        ("subject=Patient/1&code=1&statistic=count&duration=-1", "duration", "positive number of hours"),
        ("subject=Patient/1&code=1&statistic=count&duration=x", "duration", "must be a decimal"),
        ("subject=Patient/1&code=1&statistic=count&period=2024", "period", "send it in a POST Parameters body"),
        ("subject=Patient/1&code=1&statistic=count&limit=0", "limit", "must be a positiveInt"),
    ],
)
def test_bad_stats_requests(client, query, name, words):
    response = client.get(f"/fhir/Observation/$stats?{query}")
    assert response.status_code == 400, response.text
    issue = response.json()["issue"][0]
    assert words in issue["diagnostics"] and issue["expression"] == [name]


def test_duration_and_period_together(client):
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "subject", "valueUri": "Patient/1"},
            {"name": "code", "valueString": "1"},
            {"name": "statistic", "valueCode": "count"},
            {"name": "duration", "valueDecimal": 1},
            {"name": "period", "valuePeriod": {"start": "2024-01-01"}},
        ],
    }
    response = client.post("/fhir/Observation/$stats", json=body, headers=FHIR)
    assert response.status_code == 400
    assert "duration or period, not both" in response.json()["issue"][0]["diagnostics"]
