"""Many rows into several tables in one call, with SQL text built once per set of tables.

SQLite gets ``executemany`` of a fixed ``INSERT … VALUES (?, …)`` per table; PostgreSQL one statement for every
table, ``INSERT … SELECT FROM unnest(arrays)`` chained as data-modifying ``WITH`` queries: one round trip for all
rows, where ``executemany`` sends one statement per row. SQLAlchemy compiles nothing per call: index rows are
most of a write's statements and rows (docs/PERFORMANCE.md, "What limits throughput").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import cache
from operator import itemgetter
from typing import Any

from sqlalchemy import Column, Connection, Table
from sqlalchemy.engine import Dialect

__all__ = ["delete_many", "insert_many", "insert_rows"]

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
