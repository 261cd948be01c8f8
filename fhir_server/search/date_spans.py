"""The longest stored date range of each date parameter: what lets a bounded date window lead a search.

A resource matching ``date=ge2025-03-03&date=lt2025-03-10`` has a row of the parameter ending on or after March 3
and a row starting before March 10, perhaps not the same one. Its earliest row then starts before March 10 and no
earlier than March 3 less the distance from its earliest start to its latest end among its rows of the parameter:
``search_date_spans`` keeps, per ``param_id``, an upper bound of that distance over the stored resources, so the
window is one ``ix_date_low`` range. Rows with an open end are read apart and their resources left out of the
bound (``search.index.date_spans``). The bound is raised in the transaction that writes the index rows (a
rollback removes both) and never lowered: rows deleted since leave it too large, which is only slower.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from functools import lru_cache
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import Connection, ScalarSelect, select
from sqlalchemy.dialects import postgresql, sqlite

from fhir_server.storage.engine import database_cache, transaction_set
from fhir_server.storage.tables import search_date_spans

CHECK_INTERVAL = 0.25
"""Seconds a bound read for choosing a search's start is used again without reading it."""

_CACHES: WeakKeyDictionary[Any, dict[int, Any]] = WeakKeyDictionary()
_CHECKED: WeakKeyDictionary[Any, dict[int, Any]] = WeakKeyDictionary()
_LOCK = threading.Lock()
_RAISED = "search_date_spans.raised"
_SEEN = "search_date_spans.seen"


def widen(conn: Connection, spans: Mapping[int, int]) -> None:
    """Raise the stored bound of each parameter to at least its span, in the connection's transaction.

    A span no larger than a committed bound this process has read costs nothing; otherwise the bound is read,
    and raised by ``INSERT … ON CONFLICT DO UPDATE … WHERE span < new`` (concurrent writers on PostgreSQL wait
    for the row and compare with what the other one committed).
    """
    cache = _cache(conn)
    wider = {p: s for p, s in spans.items() if s > cache.get(p, -1)}
    if not wider:
        return
    seen = _seen(conn)
    wider = {p: s for p, s in wider.items() if s > seen.get(p, -1)}
    if not wider:
        return
    stored = _read(conn, sorted(wider))
    seen.update(stored)
    wider = {p: s for p, s in wider.items() if s > stored.get(p, -1)}
    if not wider:
        return
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(search_date_spans)
    statement = statement.on_conflict_do_update(
        index_elements=[search_date_spans.c.param_id],
        set_={"span": statement.excluded.span},
        where=search_date_spans.c.span < statement.excluded.span,
    )
    # in param_id order, so that two writers raising the same bounds wait for each other, never in a cycle
    conn.execute(statement, [{"param_id": p, "span": s} for p, s in sorted(wider.items())])
    _raised(conn).update(wider)
    seen.update(wider)


def longest(conn: Connection, param_id: int) -> int | None:
    """The stored bound of a parameter (None: no resource with a bounded row of it was written), for choosing
    what a search starts from: one read less than ``CHECK_INTERVAL`` seconds ago is taken from the cache (the
    statement itself reads the bound it filters by)."""
    checked = _cache(conn, _CHECKED)
    raised = conn.in_transaction() and param_id in _raised(conn)
    if not raised and time.monotonic() - checked.get(param_id, -CHECK_INTERVAL) < CHECK_INTERVAL:
        return _cache(conn).get(param_id)
    return _read(conn, [param_id]).get(param_id)


@lru_cache(maxsize=1024)
def bound_of(param_id: int) -> ScalarSelect[Any]:
    """The stored bound as a scalar subquery: a statement reads the bound of its own snapshot (built once per
    parameter)."""
    t = search_date_spans.c
    return select(t.span).where(t.param_id == param_id).scalar_subquery()


def forget(conn: Connection) -> None:
    """Drop the cached bounds of this connection's database (migrations that rebuild the table)."""
    with _LOCK:
        _CACHES.pop(conn.engine.pool, None)
        _CHECKED.pop(conn.engine.pool, None)


def _cache(conn: Connection, caches: WeakKeyDictionary[Any, dict[int, Any]] | None = None) -> dict[int, Any]:
    """Committed bounds this process has read, per database (they only grow, so a cached one is a floor); with
    ``caches``, another map of the database (when each bound was read)."""
    return database_cache(_CACHES if caches is None else caches, conn, _LOCK)


def _raised(conn: Connection) -> set[int]:
    """Parameters whose bound this connection's transaction raised (not committed: never cached)."""
    return transaction_set(conn, _RAISED)


def _seen(conn: Connection) -> dict[int, int]:
    """Bounds read or written in the innermost transaction or savepoint now open: valid while it is, since
    what it wrote is undone only with it (a savepoint rolled back inside it cannot lower them)."""
    transaction = conn.get_nested_transaction() or conn.get_transaction()
    held = conn.info.get(_SEEN)
    if held is None or held[0] is not transaction:
        held = conn.info[_SEEN] = (transaction, {})
    return held[1]


def _read(conn: Connection, param_ids: list[int]) -> dict[int, int]:
    t = search_date_spans.c
    found = {p: s for p, s in conn.execute(select(t.param_id, t.span).where(t.param_id.in_(param_ids)))}
    raised = _raised(conn) if conn.in_transaction() else set()
    committed = {p: s for p, s in found.items() if p not in raised}
    if committed:
        cache, checked, now = _cache(conn), _cache(conn, _CHECKED), time.monotonic()
        with _LOCK:
            for p, s in committed.items():
                cache[p] = max(cache.get(p, -1), s)
                checked[p] = now
    return found


__all__ = ["bound_of", "forget", "longest", "widen"]
