"""UCUM unit conversion in quantity search: canonical values at write time, compared in base units; both backends."""

from __future__ import annotations

import pytest

from fhir_server.search.ucum import canonical

UCUM = "http://unitsofmeasure.org"


def _observation(res_id: str, code: str, value: float, unit: str, system: str | None = UCUM) -> dict:
    quantity = {"value": value, "unit": unit, "code": unit, **({"system": system} if system else {})}
    return {
        "resourceType": "Observation",
        "id": res_id,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "valueQuantity": quantity,
    }


RESOURCES = [
    _observation("mass-ug", "mass", 5400, "ug"),
    _observation("mass-g", "mass", 0.006, "g"),
    _observation("mass-mg", "mass", 5.4, "mg"),
    _observation("mass-kg", "mass", 0.000001, "kg"),  # 1 mg
    _observation("vol-ml", "volume", 250, "mL"),
    _observation("vol-l", "volume", 1.5, "L"),
    _observation("glucose-mgdl", "glucose", 100, "mg/dL"),
    _observation("glucose-mmol", "glucose", 5.5, "mmol/L"),
    _observation("temp-cel", "temp", 37.5, "Cel"),
    _observation("temp-degf", "temp", 97.7, "[degF]"),  # 36.5 Cel
    _observation("time-min", "time", 90, "min"),
    _observation("time-h", "time", 1, "h"),
    _observation("time-s", "time", 30, "s"),
    _observation("local-unit", "local", 5, "tablets", system="urn:local:units"),
]


@pytest.fixture(scope="module")
def client(client):
    for resource in RESOURCES:
        response = client.put(f"/fhir/Observation/{resource['id']}", json=resource)
        assert response.status_code == 201, response.text
    return client


def ids(client, code: str, quantity: str) -> set[str]:
    response = client.get("/fhir/Observation", params={"code": code, "value-quantity": quantity, "_count": "100"})
    assert response.status_code == 200, response.text
    return {e["resource"]["id"] for e in response.json().get("entry", [])}


@pytest.mark.parametrize(
    ("code", "quantity", "expected"),
    [
        # mass: 5400 ug = 5.4 mg = 0.0054 g; 0.006 g = 6 mg; 0.000001 kg = 1 mg
        ("mass", f"gt5.3|{UCUM}|mg", {"mass-ug", "mass-g", "mass-mg"}),
        ("mass", f"gt5.4|{UCUM}|mg", {"mass-g"}),
        ("mass", f"ge5.4|{UCUM}|mg", {"mass-ug", "mass-g", "mass-mg"}),
        ("mass", f"5.4|{UCUM}|mg", {"mass-ug", "mass-mg"}),
        ("mass", f"5400|{UCUM}|ug", {"mass-ug", "mass-mg"}),
        ("mass", f"lt2|{UCUM}|mg", {"mass-kg"}),
        ("mass", f"0.006|{UCUM}|g", {"mass-g"}),
        ("mass", f"ne5.4|{UCUM}|mg", {"mass-g", "mass-kg"}),
        # volume: 250 mL = 0.25 L
        ("volume", f"lt0.3|{UCUM}|L", {"vol-ml"}),
        ("volume", f"gt1000|{UCUM}|mL", {"vol-l"}),
        ("volume", f"250|{UCUM}|mL", {"vol-ml"}),
        # temperature with offsets: 37.5 Cel = 99.5 [degF]; 97.7 [degF] = 36.5 Cel
        ("temp", f"gt98.6|{UCUM}|[degF]", {"temp-cel"}),
        ("temp", f"lt37|{UCUM}|Cel", {"temp-degf"}),
        ("temp", f"36.5|{UCUM}|Cel", {"temp-degf"}),
        ("temp", f"ge300|{UCUM}|K", {"temp-cel", "temp-degf"}),
        # time: 90 min = 1.5 h; 1 h; 30 s
        ("time", f"gt1|{UCUM}|h", {"time-min"}),
        ("time", f"ge60|{UCUM}|min", {"time-min", "time-h"}),
        ("time", f"lt1|{UCUM}|min", {"time-s"}),
        # original units: the literal code without a system, and a unit that is not UCUM
        ("mass", "5400||ug", {"mass-ug"}),
        ("mass", "5.4", {"mass-mg"}),
        ("local", "5|urn:local:units|tablets", {"local-unit"}),
        ("local", "5||tablets", {"local-unit"}),
    ],
)
def test_quantity_search_converts_ucum_units(client, code, quantity, expected):
    assert ids(client, code, quantity) == expected


def test_concentration_by_mass_never_matches_by_substance(client):
    """mmol/L and mg/dL differ in dimension (UCUM's mol is a count): no conversion without a molar mass."""
    assert ids(client, "glucose", f"gt1|{UCUM}|mg/dL") == {"glucose-mgdl"}
    assert ids(client, "glucose", f"gt1|{UCUM}|mmol/L") == {"glucose-mmol"}
    assert ids(client, "glucose", f"gt0.001|{UCUM}|g/L") == {"glucose-mgdl"}
    assert ids(client, "glucose", f"gt5000|{UCUM}|umol/L") == {"glucose-mmol"}


def test_unknown_ucum_code_compares_literally(client):
    assert ids(client, "local", f"5|{UCUM}|tablets") == set()
    assert ids(client, "mass", f"5.4|{UCUM}|no-such-unit") == set()


def test_quantity_search_with_unit_is_still_a_bad_request_when_malformed(client):
    response = client.get("/fhir/Observation", params={"value-quantity": f"gtfive|{UCUM}|mg"})
    assert response.status_code == 400
    assert "value-quantity" in response.text


@pytest.mark.parametrize(
    ("code", "base", "factor"),
    [
        ("mg", "g", 1e-3),
        ("mg/dL", "m-3.g", 10.0),
        ("10*9/L", "m-3", 1e12),
        ("mm[Hg]", "m-1.g.s-2", 133322.0),
        ("/min", "s-1", 1 / 60),
        ("{beats}/min", "s-1", 1 / 60),
        ("kg/m2", "m-2.g", 1000.0),
        ("mg/(24.h)", "g.s-1", 1e-3 / 86400),
        ("m[IU]/mL", "m-3.[IU]", 1000.0),
        ("%", "1", 0.01),
    ],
)
def test_canonical_units(code, base, factor):
    unit = canonical(code)
    assert unit is not None
    assert unit.code == base
    assert unit.factor == pytest.approx(factor)


@pytest.mark.parametrize("code", ["", "abc", "mg/", "(mg", "Cel.m", "k[degF]", "mg dL", "mIU/L"])
def test_codes_outside_ucum_are_not_converted(code):
    assert canonical(code) is None


def test_temperature_offsets():
    assert canonical("Cel").convert(37.0) == pytest.approx(310.15)
    assert canonical("[degF]").convert(98.6) == pytest.approx(310.15)
