"""Many rows into several tables in one call, with SQL text built once per set of tables.

SQLite gets ``executemany`` of a fixed ``INSERT … VALUES (?, …)`` per table; PostgreSQL one statement for every
table, ``INSERT … SELECT FROM unnest(arrays)`` chained as data-modifying ``WITH`` queries: one round trip for all
rows, where ``executemany`` sends one statement per row. SQLAlchemy compiles nothing per call: index rows are
most of a write's statements and rows (docs/PERFORMANCE.md, "What limits throughput").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import cache, lru_cache
from operator import itemgetter
from typing import Any

from sqlalchemy import Column, Connection, Table
from sqlalchemy.engine import Dialect

__all__ = ["delete_many", "insert_many", "insert_returning", "insert_rows", "insert_with_children"]

Values = Callable[[Mapping[str, Any]], tuple[Any, ...]]
"""A row's values in the statement's column order."""


def insert_rows(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert ``rows`` (dicts with a key for every column) into a table without column defaults."""
    insert_many(conn, {table: rows})


def insert_many(conn: Connection, batches: Mapping[Table, Sequence[Mapping[str, Any]]]) -> None:
    """Insert the rows of every table (as :func:`insert_rows`), in one statement on PostgreSQL."""
    tables = tuple(table for table, rows in batches.items() if rows)
    if not tables:
        return
    if conn.dialect.name == "postgresql":
        getters, sql = _unnest_statement(conn.dialect, tables)
        arrays: list[list[Any]] = []
        for table, values in zip(tables, getters, strict=True):
            arrays += map(list, zip(*map(values, batches[table]), strict=True))
        conn.exec_driver_sql(sql, tuple(arrays))
        return
    for table in tables:
        values, sql = _values_statement(conn.dialect, table)
        conn.exec_driver_sql(sql, list(map(values, batches[table])))


def insert_returning(
    conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]], returning: tuple[str, ...]
) -> list[tuple[Any, ...]]:
    """Insert ``rows`` (as :func:`insert_rows`) and give the ``returning`` columns of each new row, in no set order.

    One statement for all rows: ``INSERT … SELECT FROM unnest(arrays)`` on PostgreSQL, a multi-row ``VALUES`` on
    SQLite (``_RETURNING_ROWS`` rows a statement), where an ``executemany`` would run one statement per row.
    """
    if not rows:
        return []
    if conn.dialect.name == "postgresql":
        values, sql = _unnest_returning(conn.dialect, table, returning)
        arrays = list(map(list, zip(*map(values, rows), strict=True)))
        return [tuple(row) for row in conn.exec_driver_sql(sql, tuple(arrays))]
    found: list[tuple[Any, ...]] = []
    for start in range(0, len(rows), _RETURNING_ROWS):
        chunk = rows[start : start + _RETURNING_ROWS]
        values, sql = _values_returning(conn.dialect, table, len(chunk), returning)
        flat = [value for row in chunk for value in values(row)]
        found += map(tuple, conn.exec_driver_sql(sql, tuple(flat)))
    return found


def insert_with_children(
    conn: Connection,
    parent: Table,
    rows: Sequence[Mapping[str, Any]],
    key: tuple[str, ...],
    children: Mapping[Table, Sequence[dict[str, Any]]],
) -> list[tuple[Any, ...]]:
    """Insert ``rows`` into ``parent`` and the rows of ``children`` that refer to them; give the ``key`` columns
    and the new primary key of each parent row, in no set order.

    A child row's column named as the parent's primary key holds the position (from 1) of its parent in ``rows``;
    the new key takes its place. PostgreSQL: one statement, the parent's ``RETURNING`` read by the children's
    ``INSERT … SELECT FROM unnest(arrays)``. SQLite: :func:`insert_returning`, then :func:`insert_many`.
    """
    (pk,) = parent.primary_key.columns
    tables = tuple(table for table, batch in children.items() if batch)
    if conn.dialect.name != "postgresql" or not rows or not tables:
        returned = insert_returning(conn, parent, rows, (*key, pk.name))
        by_key = {found[:-1]: found[-1] for found in returned}
        pks = [by_key[tuple(row[name] for name in key)] for row in rows]
        for table in tables:
            for child in children[table]:
                child[pk.name] = pks[child[pk.name] - 1]
        insert_many(conn, {table: children[table] for table in tables})
        return returned
    getters, sql = _family_statement(conn.dialect, parent, key, tables)
    arrays: list[list[Any]] = list(map(list, zip(*map(getters[0], rows), strict=True)))
    arrays += map(list, zip(*map(getters[1], rows), strict=True))
    for table, values in zip(tables, getters[2:], strict=True):
        arrays += map(list, zip(*map(values, children[table]), strict=True))
    return [tuple(found) for found in conn.exec_driver_sql(sql, tuple(arrays))]


_RETURNING_ROWS = 500
"""Rows of one SQLite ``INSERT … RETURNING``: their values stay below its bound on variables (32,766)."""


def delete_many(conn: Connection, tables: Sequence[Table], column: str, value: Any) -> None:
    """Delete the rows of every table whose ``column`` equals ``value``: one statement on PostgreSQL."""
    if not tables:
        return
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(_delete_statement(conn.dialect, tuple(tables), column), {"value": value})
        return
    for table in tables:
        conn.exec_driver_sql(_delete_statement(conn.dialect, (table,), column), (value,))


@cache
def _delete_statement(dialect: Dialect, tables: tuple[Table, ...], column: str) -> str:
    preparer = dialect.identifier_preparer
    marker = "?" if dialect.paramstyle == "qmark" else "%(value)s"
    deletes = [f"DELETE FROM {preparer.format_table(t)} WHERE {preparer.quote(column)} = {marker}" for t in tables]
    chained = ", ".join(f"d{i} AS ({sql})" for i, sql in enumerate(deletes[:-1]))
    return f"WITH {chained} {deletes[-1]}" if chained else deletes[-1]


def _columns(table: Table) -> tuple[Column[Any], ...]:
    return tuple(column for column in table.columns if not (column.primary_key and column.autoincrement is True))


def _values_of(columns: tuple[Column[Any], ...]) -> Values:
    names = [column.name for column in columns]
    return itemgetter(*names) if len(names) > 1 else lambda row: (row[names[0]],)


@cache
def _values_statement(dialect: Dialect, table: Table) -> tuple[Values, str]:
    preparer = dialect.identifier_preparer
    columns = _columns(table)
    names = ", ".join(preparer.quote(column.name) for column in columns)
    marker = "?" if dialect.paramstyle == "qmark" else "%s"
    sql = f"INSERT INTO {preparer.format_table(table)} ({names}) VALUES ({', '.join([marker] * len(columns))})"
    return _values_of(columns), sql


@cache
def _unnest_statement(dialect: Dialect, tables: tuple[Table, ...]) -> tuple[tuple[Values, ...], str]:
    preparer = dialect.identifier_preparer
    inserts = []
    for table in tables:
        columns = _columns(table)
        names = ", ".join(preparer.quote(column.name) for column in columns)
        arrays = ", ".join(f"%s::{column.type.compile(dialect=dialect)}[]" for column in columns)
        inserts.append(f"INSERT INTO {preparer.format_table(table)} ({names}) SELECT * FROM unnest({arrays})")
    # Data-modifying WITH queries run exactly once, whether or not the main query reads them.
    chained = ", ".join(f"w{i} AS ({sql})" for i, sql in enumerate(inserts[:-1]))
    sql = f"WITH {chained} {inserts[-1]}" if chained else inserts[-1]
    return tuple(_values_of(_columns(table)) for table in tables), sql


@cache
def _unnest_returning(dialect: Dialect, table: Table, returning: tuple[str, ...]) -> tuple[Values, str]:
    (values,), sql = _unnest_statement(dialect, (table,))
    return values, f"{sql} RETURNING {', '.join(dialect.identifier_preparer.quote(name) for name in returning)}"


@lru_cache(maxsize=128)
def _values_returning(dialect: Dialect, table: Table, count: int, returning: tuple[str, ...]) -> tuple[Values, str]:
    preparer = dialect.identifier_preparer
    columns = _columns(table)
    names = ", ".join(preparer.quote(column.name) for column in columns)
    marker = "?" if dialect.paramstyle == "qmark" else "%s"
    row = f"({', '.join([marker] * len(columns))})"
    sql = (
        f"INSERT INTO {preparer.format_table(table)} ({names}) VALUES {', '.join([row] * count)} "
        f"RETURNING {', '.join(preparer.quote(name) for name in returning)}"
    )
    return _values_of(columns), sql


@cache
def _family_statement(
    dialect: Dialect, parent: Table, key: tuple[str, ...], tables: tuple[Table, ...]
) -> tuple[tuple[Values, ...], str]:
    """``WITH p AS (INSERT parent … RETURNING), k AS (the new keys as an array in the rows' order), w0 AS
    (INSERT child … SELECT k.pks[position], …), … SELECT FROM p``: the positions index the array of new keys."""
    preparer = dialect.identifier_preparer
    (pk,) = parent.primary_key.columns
    (values,), parent_sql = _unnest_statement(dialect, (parent,))
    key_columns = [parent.c[name] for name in key]
    keys = ", ".join(preparer.quote(name) for name in key)
    key_arrays = ", ".join(f"%s::{column.type.compile(dialect=dialect)}[]" for column in key_columns)
    matched = " AND ".join(f"p.{preparer.quote(name)} = o.{preparer.quote(name)}" for name in key)
    parts = [
        f"p AS ({parent_sql} RETURNING {keys}, {preparer.quote(pk.name)})",
        f"k AS (SELECT array_agg(p.{preparer.quote(pk.name)} ORDER BY o.n) AS pks "
        f"FROM unnest({key_arrays}) WITH ORDINALITY AS o({keys}, n) JOIN p ON {matched})",
    ]
    for i, table in enumerate(tables):
        columns = _columns(table)
        names = ", ".join(preparer.quote(column.name) for column in columns)
        arrays = ", ".join(f"%s::{column.type.compile(dialect=dialect)}[]" for column in columns)
        aliases = [f"c{j}" for j in range(len(columns))]
        picked = ", ".join(
            f"k.pks[u.{alias}::integer]" if column.name == pk.name else f"u.{alias}"
            for alias, column in zip(aliases, columns, strict=True)
        )
        parts.append(
            f"w{i} AS (INSERT INTO {preparer.format_table(table)} ({names}) SELECT {picked} "
            f"FROM k, unnest({arrays}) AS u({', '.join(aliases)}))"
        )
    sql = f"WITH {', '.join(parts)} SELECT {keys}, {preparer.quote(pk.name)} FROM p"
    getters = (values, _values_of(tuple(key_columns)), *(_values_of(_columns(table)) for table in tables))
    return getters, sql
