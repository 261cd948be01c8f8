"""Rows written with the prepared bulk inserts read back exactly as given, on both backends."""

from __future__ import annotations

import math

from sqlalchemy import Engine, delete, insert, select

from fhir_server.storage.engine import unit_of_work
from fhir_server.storage.inserts import delete_many, insert_many, insert_rows
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
