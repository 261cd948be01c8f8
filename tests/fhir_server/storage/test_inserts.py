"""Rows written with the prepared bulk inserts read back exactly as given, on both backends."""

from __future__ import annotations

import math

import pytest
from sqlalchemy import Engine, delete, insert, select

from fhir_server.storage import inserts
from fhir_server.storage.engine import unit_of_work
from fhir_server.storage.inserts import delete_many, insert_many, insert_returning, insert_rows, insert_with_children
from fhir_server.storage.tables import quantity_index, resource_versions, resources, token_index


def _resource(conn, res_id: str) -> int:  # type: ignore[no-untyped-def]
    row = {"res_type": "Observation", "res_id": res_id, "version": 1, "ts": 1, "deleted": False, "owner_org": None}
    return conn.execute(insert(resources).values(**row).returning(resources.c.res_pk)).scalar_one()


def test_rows_of_several_tables_arrive_as_given(engine: Engine) -> None:
    with unit_of_work(engine) as conn:
        pk = _resource(conn, "bulk-insert-1")
        token = {"res_pk": pk, "param_id": 1, "grp": None, "system": "http://loinc.org"}
        tokens = [
            {**token, "code": "8867-4", "text": "心率", "hash_value": -(2**63), "hash_sys_value": 2**63 - 1},
            {**token, "system": None, "code": None, "text": "heart rate", "hash_value": None, "hash_sys_value": None},
        ]
        quantity = {"res_pk": pk, "param_id": 2, "grp": 0, "system": None}
        quantities = [{**quantity, "code": "/min", "low": -math.inf, "high": 72.5, "canon_code": None}]
        quantities[0] |= {"canon_low": None, "canon_high": None}
        version = {"res_pk": pk, "version": 1, "res_type": "Observation", "ts": 1, "method": "POST"}
        insert_many(
            conn, {resource_versions: [{**version, "body": b"\x00{}"}], token_index: tokens, quantity_index: quantities}
        )
    with unit_of_work(engine, write=False) as conn:
        stored_tokens = [dict(r._mapping) for r in conn.execute(select(token_index).where(token_index.c.res_pk == pk))]
        stored_quantity = conn.execute(select(quantity_index).where(quantity_index.c.res_pk == pk)).one()._mapping
        body = conn.execute(select(resource_versions.c.body).where(resource_versions.c.res_pk == pk)).scalar_one()
    assert sorted(stored_tokens, key=lambda r: r["text"]) == sorted(tokens, key=lambda r: r["text"])
    assert dict(stored_quantity) == quantities[0]
    assert bytes(body) == b"\x00{}"


def test_nothing_to_insert_sends_nothing_and_one_table_alone_works(engine: Engine) -> None:
    with unit_of_work(engine) as conn:
        pk = _resource(conn, "bulk-insert-2")
        insert_many(conn, {token_index: [], quantity_index: []})
        row = {"res_pk": pk, "param_id": 3, "grp": None, "system": None}
        insert_rows(conn, token_index, [{**row, "code": "final", "text": None, "hash_value": 1, "hash_sys_value": 2}])
        codes = conn.execute(select(token_index.c.code).where(token_index.c.res_pk == pk)).scalars().all()
        conn.execute(delete(token_index).where(token_index.c.res_pk == pk))
    assert codes == ["final"]


def test_delete_many_removes_the_rows_of_one_key_from_every_table(engine: Engine) -> None:
    with unit_of_work(engine) as conn:
        kept, dropped = _resource(conn, "bulk-delete-1"), _resource(conn, "bulk-delete-2")
        token = {"param_id": 4, "grp": None, "system": None, "text": None, "hash_value": 1, "hash_sys_value": 2}
        quantity = {"param_id": 5, "grp": 0, "system": None, "code": None, "low": 1.0, "high": 1.0}
        quantity |= {"canon_code": None, "canon_low": None, "canon_high": None}
        insert_many(
            conn,
            {
                token_index: [{**token, "res_pk": pk, "code": "final"} for pk in (kept, dropped)],
                quantity_index: [{**quantity, "res_pk": pk} for pk in (kept, dropped)],
            },
        )
        delete_many(conn, (token_index, quantity_index), "res_pk", dropped)
        tokens = conn.execute(select(token_index.c.res_pk).where(token_index.c.res_pk.in_([kept, dropped])))
        quantities = conn.execute(select(quantity_index.c.res_pk).where(quantity_index.c.res_pk.in_([kept, dropped])))
        assert (tokens.scalars().all(), quantities.scalars().all()) == ([kept], [kept])
        delete_many(conn, (token_index, quantity_index), "res_pk", kept)


def _new_resources(prefix: str, count: int) -> list[dict]:
    return [
        {
            "res_type": "Observation",
            "res_id": f"{prefix}-{i}",
            "version": 1,
            "ts": i,
            "deleted": False,
            "owner_org": None,
        }
        for i in range(count)
    ]


def test_insert_returning_gives_each_new_row_its_key(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inserts, "_RETURNING_ROWS", 2)  # several SQLite statements
    rows = _new_resources("returning", 5)
    with unit_of_work(engine) as conn:
        returned = insert_returning(conn, resources, rows, ("res_id", "res_pk"))
        stored = conn.execute(
            select(resources.c.res_id, resources.c.res_pk, resources.c.ts).where(
                resources.c.res_id.in_([r["res_id"] for r in rows])
            )
        ).all()
        assert insert_returning(conn, resources, [], ("res_pk",)) == []
    assert sorted(returned) == sorted((res_id, res_pk) for res_id, res_pk, _ in stored)
    assert sorted((res_id, ts) for res_id, _, ts in stored) == [(r["res_id"], r["ts"]) for r in rows]


def test_insert_with_children_gives_children_the_new_keys_of_their_parents(engine: Engine) -> None:
    rows = _new_resources("family", 3)
    token = {"param_id": 6, "grp": None, "system": None, "text": None, "hash_value": 1, "hash_sys_value": 2}
    with unit_of_work(engine) as conn:
        returned = insert_with_children(
            conn,
            resources,
            rows,
            ("res_type", "res_id"),
            {
                resource_versions: [
                    {"res_pk": position, "version": 1, "res_type": "Observation", "ts": 1, "method": "POST"}
                    | {"body": f"body of {position}".encode()}
                    for position in (3, 1, 2)
                ],
                token_index: [{**token, "res_pk": position, "code": f"code of {position}"} for position in (2, 2, 3)],
                quantity_index: [],
            },
        )
        pk_of = {res_id: res_pk for _, res_id, res_pk in returned}
        pks = [pk_of[r["res_id"]] for r in rows]
        bodies = conn.execute(
            select(resource_versions.c.res_pk, resource_versions.c.body).where(resource_versions.c.res_pk.in_(pks))
        ).all()
        codes = conn.execute(
            select(token_index.c.res_pk, token_index.c.code).where(token_index.c.res_pk.in_(pks))
        ).all()
    assert len(set(pks)) == 3
    assert sorted((pk, bytes(body)) for pk, body in bodies) == [
        (pk, f"body of {i}".encode()) for i, pk in enumerate(pks, 1)
    ]
    assert sorted(codes) == sorted([(pks[1], "code of 2"), (pks[1], "code of 2"), (pks[2], "code of 3")])
