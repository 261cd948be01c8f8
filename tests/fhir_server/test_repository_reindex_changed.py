"""An update that writes again only the rows of what changed (``reindex_changed``) leaves the same index rows as
one that writes every row again (both backends)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from sqlalchemy import Connection, select

from bench.regional.generate import RegionalData
from fhir_server.repository import Repository
from fhir_server.search.index import unchanged_rows
from fhir_server.search.parameters import Registry, default_registry
from fhir_server.storage import unit_of_work
from fhir_server.storage.tables import INDEX_TABLES


def stored_index(conn: Connection, res_pk: int) -> dict[str, list[bytes]]:
    """Every index row of a resource, by table, as sorted JSON (the tables have no surrogate key)."""
    found = {}
    for name, table in INDEX_TABLES.items():
        rows = [
            {str(k): v for k, v in row._asdict().items()}
            for row in conn.execute(select(table).where(table.c.res_pk == res_pk))
        ]
        found[name] = sorted(orjson.dumps(row, option=orjson.OPT_SORT_KEYS, default=str) for row in rows)
    return found


def full_reindex(conn: Connection, repository: Repository, res_type: str, res_id: str) -> dict[str, list[bytes]]:
    """The rows after every row of the current version was written again."""
    current = repository.current(conn, res_type, res_id)
    assert current is not None
    repository.reindex(conn, current)
    return stored_index(conn, current.res_pk)


def _link(p: dict[str, Any]) -> None:
    p["link"] = [{"other": {"reference": "Patient/golden-1"}, "type": "seealso"}]


def _rename(p: dict[str, Any]) -> None:
    p["name"] = [{"family": "黄", "given": ["志强"]}]


def _drop_identifiers(p: dict[str, Any]) -> None:
    p.pop("identifier", None)


def _deceased(p: dict[str, Any]) -> None:
    del p["deceasedBoolean"]
    p["deceasedDateTime"] = "2024-02-03"


def _tag(p: dict[str, Any]) -> None:
    p["meta"] = {"tag": [{"system": "urn:test", "code": "amended"}]}


def _nothing(p: dict[str, Any]) -> None:
    p["gender"] = p.get("gender")


@pytest.mark.parametrize("change", [_link, _rename, _drop_identifiers, _deceased, _tag, _nothing])
def test_rows_of_an_update_of_what_changed_equal_a_full_reindex(engine, change: Callable[[dict[str, Any]], None]):
    repository = Repository(default_registry())
    patient = {k: v for k, v in RegionalData(3, seed=5).record(1).patient.items() if k != "id"}
    patient |= {"link": [{"other": {"reference": "Patient/golden-0"}, "type": "seealso"}], "deceasedBoolean": False}
    patient["meta"] = {"tag": [{"system": "urn:test", "code": "first"}]}
    with unit_of_work(engine) as conn:
        created = repository.create(conn, copy.deepcopy(patient)).version
    changed = created.resource()
    change(changed)
    with unit_of_work(engine) as conn:
        current = repository.current(conn, "Patient", created.res_id, lock=True)
        updated = repository.update(conn, "Patient", created.res_id, changed, read=current, reindex_changed=True)
        partial = stored_index(conn, created.res_pk)
    with unit_of_work(engine) as conn:
        assert full_reindex(conn, repository, "Patient", created.res_id) == partial
        assert repository.read(conn, "Patient", created.res_id).version == updated.version.version == 2
    assert any(partial.values())


def test_decimals_written_differently_are_a_change(engine):
    repository = Repository(default_registry())
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "weight"},
        "valueQuantity": {"value": 70, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"},
    }
    with unit_of_work(engine) as conn:
        created = repository.create(conn, observation).version
    changed = created.resource()
    changed["valueQuantity"]["value"] = 70.0  # equal in Python, another precision in the quantity rows
    with unit_of_work(engine) as conn:
        repository.update(conn, "Observation", created.res_id, changed, reindex_changed=True)
        partial = stored_index(conn, created.res_pk)
    with unit_of_work(engine) as conn:
        assert full_reindex(conn, repository, "Observation", created.res_id) == partial


def test_no_row_is_kept_for_a_type_with_parameters_posted_at_run_time():
    registry = Registry()
    assert "identifier" in unchanged_rows(registry, "Patient", frozenset({"link"}))
    assert "link" not in unchanged_rows(registry, "Patient", frozenset({"link"}))
    assert "deceased" not in unchanged_rows(registry, "Patient", frozenset())  # no element: always written
    registry.add(
        {
            "resourceType": "SearchParameter",
            "url": "urn:test:patient-nickname",
            "status": "active",
            "code": "nickname",
            "base": ["Patient"],
            "type": "string",
            "expression": "Patient.name.given",
        }
    )
    assert unchanged_rows(registry, "Patient", frozenset({"link"})) == frozenset()
    assert "code" in unchanged_rows(registry, "Observation", frozenset({"subject"}))


def test_a_bulk_create_stores_each_resource_as_a_create_of_it_alone(engine):
    """``create_many`` (one statement for every resource's rows, each row given its resource's new key) stores the
    body, version and index rows that ``create`` stores for each resource on its own."""
    repository = Repository(default_registry())
    records = RegionalData(4, seed=7).records(range(1, 4))
    resources = [{k: v for k, v in r.items() if k != "id"} for record in records for r in record.resources]
    assert len({r["resourceType"] for r in resources}) > 3
    with unit_of_work(engine) as conn:
        alone = [repository.create(conn, copy.deepcopy(r), res_id=f"alone-{i}") for i, r in enumerate(resources)]
        bulk = repository.create_many(conn, [(copy.deepcopy(r), f"bulk-{i}") for i, r in enumerate(resources)])
        for one, many in zip([a.version for a in alone], bulk, strict=True):
            assert (many.res_type, many.version, many.method) == (one.res_type, 1, "POST")
            assert _without_key(stored_index(conn, many.res_pk)) == _without_key(stored_index(conn, one.res_pk))
            read = repository.read(conn, many.res_type, many.res_id)
            assert (read.res_pk, read.body, read.ts) == (many.res_pk, many.body, many.ts)
            assert _unstamped(read.resource()) == _unstamped(one.resource())
    assert len({v.res_pk for v in bulk}) == len(resources)


def _without_key(stored: dict[str, list[bytes]]) -> dict[str, list[bytes]]:
    rows = {name: [orjson.loads(row) for row in found] for name, found in stored.items()}
    return {name: sorted(orjson.dumps({**row, "res_pk": None}) for row in found) for name, found in rows.items()}


def _unstamped(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k not in ("id", "meta")} | {"meta": sorted(resource["meta"])}
