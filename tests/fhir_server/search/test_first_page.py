"""The leading criterion pins the resource type, and a first page is read in key order; both backends."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlalchemy import create_engine, inspect
from sqlalchemy.engine import Engine

from fhir_server.migrations import downgrade, upgrade
from fhir_server.repository import Repository
from fhir_server.search.parameters import default_registry
from fhir_server.search.query import conditions, search
from fhir_server.search.request import parse_request
from fhir_server.storage.tables import resources

LOINC = "http://loinc.org"
REGISTRY = default_registry()
START = date(2024, 3, 1)


def _observation(day: int, code: str) -> dict:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": "Patient/fp0"},
        "effectiveDateTime": (START + timedelta(days=day)).isoformat() + "T08:00:00+08:00",
    }


@pytest.fixture(scope="module")
def stored(engine: Engine) -> Engine:
    """60 heart rates (one a day), 60 of another code on the same days, and other types with the same code."""
    repository = Repository(REGISTRY)
    condition = {
        "resourceType": "Condition",
        "subject": {"reference": "Patient/fp0"},
        "code": {"coding": [{"system": LOINC, "code": "8867-4"}]},
        "recordedDate": "2024-03-05",
    }
    encounter = {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": "Patient/fp0"},
    }
    with engine.begin() as conn:
        repository.create_many(conn, [({"resourceType": "Patient"}, "fp0")])
        repository.create_many(conn, [(_observation(d, "8867-4"), f"hr{d:02}") for d in range(60)])
        repository.create_many(conn, [(_observation(d, "8310-5"), f"bt{d:02}") for d in range(60)])
        repository.create_many(conn, [(condition, "fc0"), (encounter, "fe0")])
    return engine


def _pages(engine: Engine, res_type: str, params: list[tuple[str, str]]) -> tuple[list[str], set[int | None]]:
    ids: list[str] = []
    totals: set[int | None] = set()
    cursor: str | None = None
    with engine.connect() as conn:
        for _ in range(50):
            query = [*params, ("_count", "5"), *([("_cursor", cursor)] if cursor else [])]
            page = search(conn, parse_request(REGISTRY, (res_type,), query), count_limit=10_000)
            ids += [hit.id for hit in page.hits]
            totals.add(page.total)
            cursor = page.next_cursor
            if cursor is None:
                break
    return ids, totals


def test_code_and_date_range_pages_are_exact(stored):
    params = [("code", f"{LOINC}|8867-4"), ("date", "ge2024-03-10"), ("date", "lt2024-03-24")]
    ids, totals = _pages(stored, "Observation", params)
    assert ids == [f"hr{d:02}" for d in range(9, 23)]
    assert totals == {14}


@pytest.mark.parametrize(
    ("res_type", "params", "expected"),
    [
        ("Observation", [("code", f"{LOINC}|8867-4"), ("date", "2024-03-05")], ["hr04"]),
        ("Condition", [("code", f"{LOINC}|8867-4")], ["fc0"]),
        ("Encounter", [("subject", "Patient/fp0")], ["fe0"]),
        ("Condition", [("subject:Patient._id", "fp0")], ["fc0"]),
    ],
)
def test_the_leading_criterion_keeps_to_the_searched_type(stored, res_type, params, expected):
    ids, totals = _pages(stored, res_type, params)
    assert ids == expected and totals == {len(expected)}


def test_sqlite_reads_the_first_page_in_key_order(stored):
    """No sort of every match before the LIMIT: the page stops at its last row (SQLite's plan)."""
    if stored.dialect.name != "sqlite":
        pytest.skip("SQLite's query plan")
    request = parse_request(
        REGISTRY, ("Observation",), [("code", f"{LOINC}|8867-4"), ("date", "ge2024-03-10"), ("date", "lt2024-03-24")]
    )
    with stored.connect() as conn:
        query = (
            resources.select()
            .with_only_columns(resources.c.res_pk)
            .where(*conditions(conn, request, resources))
            .order_by(resources.c.res_pk)
            .limit(6)
        )
        compiled = query.compile(conn, compile_kwargs={"literal_binds": True})
        plan = [row[3] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}")]
    assert not any("TEMP B-TREE" in step for step in plan), plan
    assert any("ix_token_sys_value" in step for step in plan), plan


def test_date_rows_are_probed_by_resource_and_parameter(engine):
    """Migration 0012: one index serves the per-candidate date probe (and deletes by ``res_pk``)."""
    indexes = {i["name"]: i["column_names"] for i in inspect(engine).get_indexes("idx_date")}
    assert indexes["ix_date_res_param"] == ["res_pk", "param_id", "low", "high"]
    assert "ix_date_res" not in indexes


def test_migration_0012_goes_down_and_up(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'm.db'}")
    upgrade(engine, "0012")
    downgrade(engine, "0011")
    assert "ix_date_res" in {i["name"] for i in inspect(engine).get_indexes("idx_date")}
    upgrade(engine)
    assert "ix_date_res_param" in {i["name"] for i in inspect(engine).get_indexes("idx_date")}
    engine.dispose()
