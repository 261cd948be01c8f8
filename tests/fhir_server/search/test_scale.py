"""Search at scale: hash columns, the leading criterion, bounded totals and migration 0010's backfill; both backends."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from fhir_server.migrations import upgrade
from fhir_server.repository import Repository
from fhir_server.search.index import index_rows, search_hash
from fhir_server.search.parameters import default_registry
from fhir_server.search.query import search
from fhir_server.search.request import parse_request
from tests.conftest import auth_headers, database_at

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
REGISTRY = default_registry()


def _observation(number: int, code: str = "2339-0") -> dict:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": f"Patient/p{number % 2}"},
        "valueQuantity": {"value": 100 + number, "unit": "mg/dL", "system": UCUM, "code": "mg/dL"},
    }


PATIENTS = [
    {"resourceType": "Patient", "name": [{"family": "张", "given": ["三"]}], "gender": "male"},
    {"resourceType": "Patient", "name": [{"family": "李", "given": ["四"]}], "gender": "female"},
]


@pytest.fixture(scope="module")
def stored(engine: Engine) -> Engine:
    repository = Repository(REGISTRY)
    with engine.begin() as conn:
        repository.create_many(conn, [(p, f"p{i}") for i, p in enumerate(PATIENTS)])
        repository.create_many(conn, [(_observation(i), f"o{i}") for i in range(5)])
        repository.create_many(conn, [(_observation(9, "8480-6"), "bp")])
    return engine


def run(engine: Engine, res_type: str, params: list[tuple[str, str]], **kwargs) -> tuple[list[str], object]:
    with engine.connect() as conn:
        page = search(conn, parse_request(REGISTRY, (res_type,), params), **kwargs)
    return sorted(hit.id for hit in page.hits), page


def test_index_rows_carry_hashes():
    rows = index_rows(REGISTRY, "Observation", _observation(1))
    code = next(r for r in rows["token"] if r["param"] == "code")
    assert code["hash_value"] == search_hash("Observation", "code", "2339-0")
    assert code["hash_sys_value"] == search_hash("Observation", "code", LOINC, "2339-0")
    quantity = next(r for r in rows["quantity"] if r["param"] == "value-quantity")
    assert quantity["canon_code"] == "m-3.g" and quantity["canon_low"] == pytest.approx(1010.0)
    names = index_rows(REGISTRY, "Patient", PATIENTS[0])["string"]
    family = next(r for r in names if r["param"] == "family")
    assert family["hash_prefix"] == search_hash("Patient", "family", "张")
    assert "hash_exact" not in family  # :exact is served by the prefix index (migration 0016)


def test_search_hash_is_a_signed_64_bit_integer_that_separates_parts():
    value = search_hash("Observation", "code", "abc")
    assert -(2**63) <= value < 2**63
    assert search_hash("Observation", "code", "ab", "c") != search_hash("Observation", "code", "a", "bc")
    assert search_hash("Observation", "code", None, "x") == search_hash("Observation", "code", "", "x")


@pytest.mark.parametrize(
    ("res_type", "params", "expected"),
    [
        ("Observation", [("code", "2339-0")], ["o0", "o1", "o2", "o3", "o4"]),
        ("Observation", [("code", f"{LOINC}|2339-0"), ("subject", "Patient/p1")], ["o1", "o3"]),
        ("Observation", [("code", "|2339-0")], []),
        ("Observation", [("code:not", "2339-0")], ["bp"]),
        ("Observation", [("subject:Patient.name", "张"), ("code", "8480-6,2339-0")], ["o0", "o2", "o4"]),
        ("Observation", [("subject:Patient.gender", "female"), ("value-quantity", "gt102")], ["o3", "bp"]),
        ("Patient", [("_has:Observation:subject:code", "8480-6")], ["p1"]),
        ("Patient", [("_has:Observation:subject:code", "8480-6"), ("gender", "male")], []),
        ("Patient", [("name", "张三")], ["p0"]),
        ("Patient", [("family:exact", "李")], ["p1"]),
        ("Patient", [("gender", "male"), ("_id", "p0,p1")], ["p0"]),
    ],
)
def test_searches_starting_from_each_kind_of_criterion(stored, res_type, params, expected):
    assert run(stored, res_type, params)[0] == sorted(expected)


def test_total_within_the_count_limit_is_exact(stored):
    _, page = run(stored, "Observation", [("code", "2339-0"), ("_count", "2")], count_limit=5)
    assert page.total == 5 and not page.total_estimated


def test_total_past_the_count_limit(stored):
    _, page = run(stored, "Observation", [("code", "2339-0"), ("_count", "1")], count_limit=2)
    if stored.dialect.name == "postgresql":
        assert page.total_estimated and page.total >= 3
    else:  # SQLite has no planner statistics to estimate from: it counts on
        assert page.total == 5 and not page.total_estimated
    _, page = run(stored, "Observation", [("code", "2339-0"), ("_count", "0")], count_limit=2)
    assert page.total_estimated == (stored.dialect.name == "postgresql")


def test_total_accurate_when_asked_counts_everything(stored):
    params = [("code", "2339-0"), ("_count", "1"), ("_total", "accurate")]
    _, page = run(stored, "Observation", params, count_limit=2)
    assert page.total == 5 and not page.total_estimated


def test_estimated_total_is_said_in_an_outcome_entry(stored, backend):
    from fastapi.testclient import TestClient

    from fhir_server.api.app import create_app

    settings = backend.settings.model_copy(update={"search_count_limit": 2})
    app = create_app(settings, backend.engine)
    with TestClient(app, base_url="http://testserver", headers=auth_headers(backend)) as client:
        bundle = client.get("/fhir/Observation", params={"code": "2339-0", "_count": "1"}).json()
        outcomes = [e for e in bundle.get("entry", []) if e["search"]["mode"] == "outcome"]
        if stored.dialect.name == "postgresql":
            assert bundle["total"] >= 3
            assert "estimate" in outcomes[0]["resource"]["issue"][0]["diagnostics"]
        else:
            assert bundle["total"] == 5 and not outcomes
        exact = client.get("/fhir/Observation", params={"code": "2339-0", "_count": "1", "_total": "accurate"})
        assert exact.json()["total"] == 5
        assert not [e for e in exact.json().get("entry", []) if e["search"]["mode"] == "outcome"]


# -- migration 0010 fills the new columns of rows written before it -----------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def old_database(request, tmp_path) -> Iterator[Engine]:
    """A fresh database at revision 0009 (before the hash and canonical columns)."""
    with database_at(request.param, "0009", tmp_path) as engine:
        yield engine


def test_migration_fills_hashes_and_canonical_quantities(old_database):
    engine = old_database
    with engine.begin() as conn:
        pk = conn.execute(
            text(
                "INSERT INTO resources (res_type, res_id, version, ts, deleted) "
                "VALUES ('Observation', 'old', 1, 0, false) RETURNING res_pk"
            )
        ).scalar_one()
        conn.execute(
            text(
                "INSERT INTO idx_token (res_pk, res_type, param, system, code) VALUES "
                "(:pk, 'Observation', 'code', :loinc, '2339-0'), (:pk, 'Observation', 'status', NULL, 'final')"
            ),
            {"pk": pk, "loinc": LOINC},
        )
        conn.execute(
            text(
                "INSERT INTO idx_string (res_pk, res_type, param, norm, exact) "
                "VALUES (:pk, 'Observation', 'x', 'ab', 'Ab')"
            ),
            {"pk": pk},
        )
        conn.execute(
            text(
                "INSERT INTO idx_quantity (res_pk, res_type, param, system, code, low, high) VALUES "
                "(:pk, 'Observation', 'value-quantity', :ucum, 'mg', 5400, 5400), "
                "(:pk, 'Observation', 'value-quantity', 'urn:local', 'tablets', 5, 5)"
            ),
            {"pk": pk, "ucum": UCUM},
        )
    upgrade(engine, "0010")
    with engine.connect() as conn:
        tokens = dict(conn.execute(text("SELECT param, hash_sys_value FROM idx_token")).all())
        assert tokens == {
            "code": search_hash("Observation", "code", LOINC, "2339-0"),
            "status": search_hash("Observation", "status", None, "final"),
        }
        assert conn.execute(text("SELECT hash_value FROM idx_token WHERE param = 'code'")).scalar_one() == (
            search_hash("Observation", "code", "2339-0")
        )
        assert conn.execute(text("SELECT hash_prefix, hash_exact FROM idx_string")).one() == (
            search_hash("Observation", "x", "a"),
            search_hash("Observation", "x", "Ab"),
        )
        quantities = dict(conn.execute(text("SELECT code, canon_low FROM idx_quantity")).all())
        assert quantities["mg"] == pytest.approx(5.4) and quantities["tablets"] is None
    upgrade(engine)  # the searches of this code read the newest schema
    with engine.connect() as conn:
        request = parse_request(REGISTRY, ("Observation",), [("value-quantity", f"5.4|{UCUM}|g")])
        assert [hit.id for hit in search(conn, request).hits] == ["old"]
        request = parse_request(REGISTRY, ("Observation",), [("code", f"{LOINC}|2339-0"), ("status", "final")])
        assert [hit.id for hit in search(conn, request).hits] == ["old"]
