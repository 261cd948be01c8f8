"""Integer ids of (resource type, search parameter): index rows carry the id instead of the two names.

An id is given once per database (``search_param_ids``, unique on the pair) and never changes, so each process
keeps the ids it has seen. A pair met first inside a write transaction is given its id there; the id is cached
only once a later transaction reads it back (a rollback takes the row away). Two processes giving the same pair
an id: the second insert does nothing (unique constraint) and the row is read again.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import ColumnElement, Connection, Select, and_, or_, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite

from fhir_server.storage.engine import database_cache, transaction_set
from fhir_server.storage.tables import search_param_ids

Pair = tuple[str, str]
NO_ID = 0
"""Never given (ids start at 1): a condition on it matches no index row."""

_CACHES: WeakKeyDictionary[Any, dict[Pair, int]] = WeakKeyDictionary()
_LOCK = threading.Lock()
_FRESH = "search_param_ids.fresh"


def _cache(conn: Connection) -> dict[Pair, int]:
    """Ids of one database, shared by the engines of its connection pool."""
    return database_cache(_CACHES, conn, _LOCK)


def forget(conn: Connection) -> None:
    """Drop the cached ids of this connection's database (migrations that rebuild the table)."""
    with _LOCK:
        _CACHES.pop(conn.engine.pool, None)


def _fresh(conn: Connection) -> set[Pair]:
    """Pairs given an id in the connection's current transaction (not cached until it has committed)."""
    return transaction_set(conn, _FRESH)


def _read(conn: Connection, pairs: list[Pair] | None) -> dict[Pair, int]:
    """The ids this transaction sees (of ``pairs``, or all); those given in an earlier transaction are cached."""
    t = search_param_ids.c
    query = select(t.param_id, t.res_type, t.param)
    if pairs is not None:
        query = query.where(tuple_(t.res_type, t.param).in_(pairs))
    seen = {(res_type, param): param_id for param_id, res_type, param in conn.execute(query)}
    fresh = _fresh(conn) if conn.in_transaction() else set()
    committed = {pair: param_id for pair, param_id in seen.items() if pair not in fresh}
    if committed:
        cache = _cache(conn)
        with _LOCK:
            cache.update(committed)
    return seen


def lookup(conn: Connection, res_type: str, param: str) -> int:
    """The id of a pair, or ``NO_ID`` when no resource has had a value of it (searches: nothing to find)."""
    cache = _cache(conn)
    found = cache.get((res_type, param))
    if found is not None:
        return found
    return _read(conn, None if not cache else [(res_type, param)]).get((res_type, param), NO_ID)


def assign(conn: Connection, pairs: Iterable[Pair]) -> dict[Pair, int]:
    """Ids of the pairs, giving new ones in the connection's transaction (index rows about to be written)."""
    cache = _cache(conn)
    wanted = set(pairs)
    missing = [pair for pair in wanted if pair not in cache]
    if not missing:
        return cache
    seen = _read(conn, missing if cache else None)  # a process's first write reads every id once
    new = [pair for pair in missing if pair not in seen]
    if new:
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        conn.execute(
            dialect.insert(search_param_ids).on_conflict_do_nothing(),
            [{"res_type": res_type, "param": param} for res_type, param in sorted(new)],
        )
        _fresh(conn).update(new)
        seen.update(_read(conn, new))
    return {**cache, **seen}


def ids_named(params: Iterable[str] | None, res_types: Iterable[str] | None = None) -> Select:
    """``SELECT param_id`` of these parameter codes (None: every one), of any resource type or of ``res_types``:
    for SQL that filters index rows of several types (the ids are read by the statement itself)."""
    t = search_param_ids.c
    condition: list[ColumnElement[bool]] = []
    if params is not None:
        condition.append(t.param.in_(sorted(set(params))))
    if res_types is not None:
        condition.append(t.res_type.in_(sorted(set(res_types))))
    return select(t.param_id).where(*condition)


def ids_of(params_by_type: Mapping[str, Iterable[str]]) -> Select:
    """``SELECT param_id`` of the parameter codes given for each resource type."""
    t = search_param_ids.c
    return select(t.param_id).where(
        or_(
            *(
                and_(t.res_type == res_type, t.param.in_(sorted(set(params))))
                for res_type, params in params_by_type.items()
            )
        )
    )


__all__ = ["NO_ID", "assign", "forget", "ids_named", "ids_of", "lookup"]
