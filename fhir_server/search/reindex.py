"""Rebuild the index rows of stored resources, e.g. after a SearchParameter became active."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection, Engine, delete, func, insert, select

from fhir_server.repository import Repository
from fhir_server.search.index import stored_rows
from fhir_server.search.parameters import Registry
from fhir_server.storage.engine import WRITE
from fhir_server.storage.tables import INDEX_TABLES, resources

Progress = Callable[[int, int], None]
"""``progress(done, total)`` after each batch."""


def reindex(
    conn: Connection,
    registry: Registry,
    res_type: str | None = None,
    progress: Progress | None = None,
    *,
    batch_size: int = 500,
    commit_each_batch: bool = False,
) -> int:
    """Re-extract every current resource (of ``res_type``) and replace its index rows; returns the count.

    Batches of ``batch_size`` resources are written with one statement per index table. With
    ``commit_each_batch`` the connection commits after each batch, so a long run holds no long transaction.
    """
    scope = [resources.c.deleted.is_(False)]
    if res_type is not None:
        scope.append(resources.c.res_type == res_type)
    total = conn.execute(select(func.count()).select_from(resources).where(*scope)).scalar_one()
    repository = Repository(registry)
    done, last = 0, 0
    while True:
        pks = list(
            conn.execute(
                select(resources.c.res_pk)
                .where(*scope, resources.c.res_pk > last)
                .order_by(resources.c.res_pk)
                .limit(batch_size)
            ).scalars()
        )
        if not pks:
            break
        rows: dict[str, list[dict]] = {}
        for version in repository.load_many(conn, pks):
            stored = stored_rows(conn, registry, version.res_type, version.resource(), version.res_pk)
            for kind, table_rows in stored.items():
                rows.setdefault(kind, []).extend(table_rows)
        for kind, table in INDEX_TABLES.items():
            conn.execute(delete(table).where(table.c.res_pk.in_(pks)))
            if rows.get(kind):
                conn.execute(insert(table), rows[kind])
        done += len(pks)
        last = pks[-1]
        if commit_each_batch:
            conn.commit()
        if progress is not None:
            progress(done, total)
    return done


def reindex_database(
    engine: Engine, registry: Registry, res_type: str | None = None, progress: Progress | None = None
) -> int:
    """:func:`reindex` as a maintenance task: the stored custom parameters first, a commit per batch."""
    from fhir_server.search.custom import sync_custom_parameters

    with engine.connect() as conn:
        conn.execution_options(**{WRITE: True})
        sync_custom_parameters(conn, registry)
        conn.commit()
        count = reindex(conn, registry, res_type, progress, commit_each_batch=True)
        conn.commit()
    return count
