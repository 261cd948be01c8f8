"""Integer parameter ids (``search.param_ids``) and migration 0016, which moves index rows to them."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, insert, text

from fhir_server.migrations import downgrade, upgrade
from fhir_server.repository import Repository
from fhir_server.search import param_ids
from fhir_server.search.index import index_rows, search_hash
from fhir_server.search.parameters import default_registry
from fhir_server.search.query import search
from fhir_server.search.request import parse_request
from fhir_server.storage.engine import unit_of_work
from fhir_server.storage.tables import search_param_ids
from tests.conftest import database_at

REGISTRY = default_registry()
LOINC = "http://loinc.org"

RESOURCES = [
    {"resourceType": "Patient", "id": "p1", "name": [{"family": "黄", "given": ["小明"]}], "gender": "male"},
    {"resourceType": "Patient", "id": "p2", "name": [{"family": "Li", "given": ["Wei"]}], "gender": "female"},
    {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "2339-0"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2025-03-02T08:00:00+08:00",
        "valueQuantity": {"value": 5.4, "unit": "mmol/L", "system": "http://unitsofmeasure.org", "code": "mmol/L"},
    },
    {
        "resourceType": "Observation",
        "id": "o2",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "2339-0"}]},
        "subject": {"reference": "Patient/p2"},
        "effectivePeriod": {"start": "2025-03-01", "end": "2025-03-20"},
        "component": [
            {"code": {"coding": [{"system": LOINC, "code": "8480-6"}]}, "valueQuantity": {"value": 120}},
        ],
    },
]

SEARCHES = {
    ("Observation", (("code", "2339-0"), ("date", "ge2025-03-02"), ("date", "lt2025-03-09"))): ["o1", "o2"],
    ("Observation", (("code", "2339-0"), ("date", "ge2025-03-02T09:00:00+08:00"), ("date", "lt2025-03-03"))): ["o2"],
    ("Observation", (("subject", "Patient/p2"),)): ["o2"],
    ("Observation", (("subject:Patient.name", "黄"),)): ["o1"],
    ("Observation", (("value-quantity", "lt6"),)): ["o1"],
    ("Observation", (("component-code", "8480-6"),)): ["o2"],
    ("Patient", (("_has:Observation:subject:code", "2339-0"), ("gender", "female"))): ["p2"],
    ("Patient", (("name", "li"),)): ["p2"],
    ("Patient", (("family:exact", "Li"),)): ["p2"],
    ("Patient", (("family:exact", "li"),)): [],
    ("Patient", (("family:exact", "黄"),)): ["p1"],
    ("Patient", (("name-pinyin:exact", "huangxiaoming"),)): ["p1"],
    ("Patient", (("name-pinyin:exact", "huang"),)): [],
    ("Patient", (("_sort", "-family"),)): ["p1", "p2"],
}


def _answers(engine: Engine) -> dict:
    with engine.connect() as conn:
        return {
            key: [hit.id for hit in search(conn, parse_request(REGISTRY, (key[0],), list(key[1]))).hits]
            for key in SEARCHES
        }


def _old_rows(engine: Engine) -> set[tuple]:
    """Every index row with its resource type and parameter names (as before migration 0016)."""
    found = set()
    with engine.connect() as conn:
        for table in ("idx_token", "idx_string", "idx_date", "idx_quantity", "idx_reference"):
            for row in conn.execute(text(f"SELECT * FROM {table}")).mappings():
                found.add((table, *sorted((k, v) for k, v in row.items())))
    return found


@pytest.fixture(params=["sqlite", "postgres"])
def kind(request) -> str:  # type: ignore[no-untyped-def]
    return request.param


@pytest.fixture
def fresh_answers(kind, tmp_path) -> dict:  # type: ignore[no-untyped-def]
    """The searches' answers in a database at the newest revision, the resources written by the repository."""
    (tmp_path / "fresh").mkdir()
    with database_at(kind, "head", tmp_path / "fresh") as engine:
        with unit_of_work(engine) as conn:
            for resource in RESOURCES:
                Repository(REGISTRY).create(conn, copy.deepcopy(resource), res_id=resource["id"])
        return _answers(engine)


@pytest.fixture
def old_database(kind, tmp_path) -> Iterator[Engine]:  # type: ignore[no-untyped-def]
    """A fresh database at revision 0015, its index rows named by resource type and parameter."""
    with database_at(kind, "0015", tmp_path) as engine:
        with engine.begin() as conn:
            for pk, resource in enumerate(RESOURCES, start=1):
                conn.execute(
                    text(
                        "INSERT INTO resources (res_pk, res_type, res_id, version, ts, deleted) "
                        "VALUES (:pk, :type, :id, 1, 1, false)"
                    ),
                    {"pk": pk, "type": resource["resourceType"], "id": resource["id"]},
                )
                for kind, rows in index_rows(REGISTRY, resource["resourceType"], copy.deepcopy(resource)).items():
                    for row in rows if kind == "string" else []:  # as written before migration 0016
                        row["hash_exact"] = search_hash(resource["resourceType"], row["param"], row["exact"])
                    columns = sorted({"res_pk", "res_type", *rows[0]})
                    conn.execute(
                        text(
                            f"INSERT INTO idx_{kind} ({', '.join(columns)}) "
                            f"VALUES ({', '.join(':' + c for c in columns)})"
                        ),
                        [{**row, "res_pk": pk, "res_type": resource["resourceType"]} for row in rows],
                    )
        yield engine


def test_migration_keeps_every_row_and_every_answer(old_database, fresh_answers):
    engine = old_database
    before = _old_rows(engine)
    upgrade(engine)
    with engine.connect() as conn:
        pairs = conn.execute(text("SELECT count(*), count(DISTINCT param_id) FROM search_param_ids")).one()
        assert pairs[0] == pairs[1] > 10
        assert "res_type" not in list(conn.execute(text("SELECT * FROM idx_date")).keys())
    assert _answers(engine) == SEARCHES == fresh_answers
    downgrade(engine, "0015")
    assert _old_rows(engine) == before


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_ids_given_in_a_rolled_back_transaction_are_not_kept(engine):
    repository = Repository(REGISTRY)
    device = {"resourceType": "Device", "id": "d1", "status": "active", "lotNumber": "L1"}
    with pytest.raises(RuntimeError), unit_of_work(engine) as conn:
        repository.create(conn, copy.deepcopy(device), res_id="d1")
        assert param_ids.lookup(conn, "Device", "status") != param_ids.NO_ID
        raise RuntimeError("roll back")
    with engine.connect() as conn:
        assert param_ids.lookup(conn, "Device", "status") == param_ids.NO_ID
        conn.execute(insert(search_param_ids).values(res_type="Other", param="taken"))  # takes the freed id
        conn.commit()
    with unit_of_work(engine) as conn:
        repository.create(conn, copy.deepcopy(device), res_id="d1")
    with engine.connect() as conn:
        found = search(conn, parse_request(REGISTRY, ("Device",), [("status", "active")])).hits
        assert [hit.id for hit in found] == ["d1"]
        ids = dict(conn.execute(text("SELECT param, param_id FROM search_param_ids")).all())
        assert param_ids.lookup(conn, "Device", "status") == ids["status"] != ids["taken"]


def test_a_pair_given_by_another_process_is_read_back(engine):
    with engine.begin() as conn:
        conn.execute(insert(search_param_ids).values(res_type="Basic", param="made-elsewhere"))
    with engine.begin() as conn:
        given = param_ids.assign(conn, [("Basic", "made-elsewhere")])[("Basic", "made-elsewhere")]
        assert given == param_ids.lookup(conn, "Basic", "made-elsewhere") != param_ids.NO_ID
        count = conn.execute(text("SELECT count(*) FROM search_param_ids WHERE param = 'made-elsewhere'")).scalar()
        assert count == 1
