"""The physical limit beside the server: what the database alone does with the same documents and index rows.

The documents are stamped (id, meta) and indexed with the server's own extraction (``index_rows``) before the
clock starts; then they go into scratch copies of the server's tables (same columns and indexes) with the driver
directly: batched INSERT (``executemany``, 500 resources a transaction) on both backends and COPY on PostgreSQL.
Point reads by (type, id) and a full scan of the stored bodies give the read-side limits.
"""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from bench.regional.load import Cell, LatencyRecorder
from bench.regional.server import Database
from fhir_server.search.index import index_rows
from fhir_server.search.parameters import default_registry
from fhir_server.storage.codec import encode_body
from fhir_server.storage.tables import INDEX_TABLES, metadata, resource_versions, resources

__all__ = ["physical_limits"]

BATCH = 500


def _prepared(documents: list[dict[str, Any]]) -> dict[str, list[tuple[Any, ...]]]:
    """Rows per table, in column order, for res_pk 1..n (timestamps as the server writes them)."""
    registry = default_registry()
    ts = time.time_ns() // 1000
    rows: dict[str, list[tuple[Any, ...]]] = {"resources": [], "resource_versions": []}
    param_ids: dict[tuple[str, str], int] = {}  # as search_param_ids gives them: 1, 2, … in order of meeting
    for pk, resource in enumerate(documents, start=1):
        res_type = resource["resourceType"]
        resource = dict(resource)
        resource["meta"] = {"versionId": "1", "lastUpdated": "2025-06-30T00:00:00.000000+00:00"}
        body = encode_body(orjson.dumps(resource))  # stored as the server stores it
        head = {"res_pk": pk, "res_type": res_type, "res_id": resource["id"], "version": 1, "ts": ts}
        rows["resources"].append(tuple((head | {"deleted": False}).get(n) for n in _columns("resources")))
        version = head | {"method": "POST", "body": body}
        rows["resource_versions"].append(tuple(version.get(n) for n in _columns("resource_versions")))
        for param_type, index in index_rows(registry, res_type, resource).items():
            table = INDEX_TABLES[param_type]
            names = [c.name for c in table.columns]
            for row in index:
                row["param_id"] = param_ids.setdefault((res_type, row["param"]), len(param_ids) + 1)
            rows.setdefault(table.name, []).extend(tuple({"res_pk": pk, **row}.get(n) for n in names) for row in index)
    return rows


def _columns(name: str) -> list[str]:
    return [c.name for c in metadata.tables[name].columns]


def _batches(rows: dict[str, list[tuple[Any, ...]]], count: int) -> Iterator[dict[str, list[tuple[Any, ...]]]]:
    """The rows of resources [start, start + BATCH) per table, by res_pk (the first column of every table)."""
    buckets: list[dict[str, list[tuple[Any, ...]]]] = [{} for _ in range((count + BATCH - 1) // BATCH)]
    for name, table in rows.items():
        for row in table:
            buckets[(row[0] - 1) // BATCH].setdefault(name, []).append(row)
    yield from buckets


def _order(rows: dict[str, list[tuple[Any, ...]]]) -> list[str]:
    first = ["resources", "resource_versions"]
    return first + sorted(n for n in rows if n not in first)


def _sqlite_limits(folder: Path, documents: list[dict[str, Any]], rows: dict[str, list]) -> list[tuple[str, float]]:
    path = folder / "physical.db"
    path.unlink(missing_ok=True)
    engine = create_engine(f"sqlite:///{path}")
    metadata.create_all(engine, tables=[resources, resource_versions, *INDEX_TABLES.values()])
    engine.dispose()
    batches = list(_batches(rows, len(documents)))
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        started = time.perf_counter()
        for batch in batches:
            conn.execute("BEGIN IMMEDIATE")
            for name in _order(batch):
                if batch.get(name):
                    cols = _columns(name)
                    sql = f"INSERT INTO {name} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
                    conn.executemany(sql, batch[name])
            conn.execute("COMMIT")
        insert = time.perf_counter() - started
        read, scan = _reads(lambda sql, args: conn.execute(sql, args).fetchall(), documents, "?")
    return [("batched INSERT (500/commit)", len(documents) / insert), ("point read by id", read), ("body scan", scan)]


def _reads(query: Any, documents: list[dict[str, Any]], mark: str) -> tuple[float, float]:
    """(point reads of the current body by type and id per second, bodies scanned per second), one connection."""
    rng = random.Random(7)
    picks = [rng.choice(documents) for _ in range(min(2000, 4 * len(documents)))]
    sql = (
        "SELECT v.body FROM resources r JOIN resource_versions v ON v.res_pk = r.res_pk AND v.version = r.version "
        f"WHERE r.res_type = {mark} AND r.res_id = {mark}"
    )
    started = time.perf_counter()
    for doc in picks:
        query(sql, (doc["resourceType"], doc["id"]))
    read = len(picks) / (time.perf_counter() - started)
    started = time.perf_counter()
    count = len(query("SELECT body FROM resource_versions", ()))
    scan = count / (time.perf_counter() - started)
    return read, scan


def _postgres_limits(url: str, documents: list[dict[str, Any]], rows: dict[str, list]) -> list[tuple[str, float]]:
    import psycopg
    from psycopg import sql

    parsed = make_url(url)
    conninfo = {
        "host": parsed.host or "127.0.0.1",
        "port": parsed.port or 5432,
        "user": parsed.username or "postgres",
        "dbname": parsed.database,
    }
    if parsed.password:
        conninfo["password"] = parsed.password
    schema = f"bench_physical_{os.getpid()}"
    figures = []
    with psycopg.connect(**conninfo, autocommit=True) as conn:
        for method in ("batched INSERT (500/commit)", "COPY (500/commit)"):
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
            engine = create_engine(url, connect_args={"options": f"-csearch_path={schema}"})
            metadata.create_all(engine, tables=[resources, resource_versions, *INDEX_TABLES.values()])
            engine.dispose()
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
            batches = list(_batches(rows, len(documents)))
            started = time.perf_counter()
            for batch in batches:
                with conn.transaction(), conn.cursor() as cur:
                    for name in _order(batch):
                        if not batch.get(name):
                            continue
                        cols = _columns(name)
                        if method.startswith("COPY"):
                            statement = f"COPY {name} ({', '.join(cols)}) FROM STDIN"
                            with cur.copy(statement) as copy:
                                for row in batch[name]:
                                    copy.write_row(row)
                        else:
                            statement = (
                                f"INSERT INTO {name} ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))})"
                            )
                            cur.executemany(statement, batch[name])
            figures.append((method, len(documents) / (time.perf_counter() - started)))
        read, scan = _reads(lambda q, args: conn.execute(q, args).fetchall(), documents, "%s")
        figures += [("point read by id", read), ("body scan", scan)]
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    return figures


def physical_limits(db: Database, documents: list[dict[str, Any]], workdir: Path) -> list[Cell]:
    """Rows of resources/s (or reads/s) the database alone reaches with the documents of the ingest workload."""
    rows = _prepared(documents)
    index_count = sum(len(v) for k, v in rows.items() if k not in ("resources", "resource_versions"))
    if db.backend == "sqlite":
        figures = _sqlite_limits(workdir, documents, rows)
    else:
        figures = _postgres_limits(db.url, documents, rows)
    cells = []
    for label, rate in figures:
        recorder = LatencyRecorder()
        recorder.started, recorder.ended = 0.0, 1.0
        recorder.ok(0.0, round(rate))
        cells.append(
            Cell(
                "limit",
                db.backend,
                f"database alone: {label}",
                1,
                recorder,
                resources=len(documents),
                unit="res/s",
                extra={"index rows/resource": index_count / max(len(documents), 1)},
            )
        )
    return cells
