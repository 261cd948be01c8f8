"""``Patient/$match`` latency against a large master patient index, and the MPI's cost on Patient create.

Generates ``--goldens`` synthetic Wuzhou residents (``tests/ehr_archive/mpi_dataset.py``: households, homophones,
typos, card-only records; deterministic by ``--seed``) and bulk-loads the index directly into the tables, in
batches: every record but one of each resident becomes a row of ``mpi_records`` with its blocking keys
(``mpi_blocking_keys``), and each resident's golden Patient is built by survivorship (``build_golden``) and
stored as a resource (``resources`` and ``resource_versions`` rows, ``mpi_goldens``). PostgreSQL is loaded with
``COPY``, SQLite with multi-row inserts; PostgreSQL is ``ANALYZE``d afterwards. The goldens get no search index
rows (``$match`` reads goldens by ``_id``, which is the ``resources`` table) unless ``--index-goldens`` asks for
them (the repository's bulk path, about five times slower). The institutions' records themselves are not stored
as resources: ``$match`` reads only the MPI tables and the goldens.

The held-out record of each resident with several records is a query: ``Patient/$match`` runs in-process through
the real operation (inside a read-only unit of work, no HTTP), timed one by one. Then Patient creates are timed
with and without the MPI hook, interleaved, one unit of work each; ``--golden-rebuild`` chooses whether goldens are
rebuilt in the writer's unit of work (``inline``) or after commit (``after-commit``, as the server does by default;
the queued rebuild of each timed create is then run and timed separately, right after it).

    python -m bench.mpi_match [--backend postgres|sqlite] [--goldens 10000] [--queries 1000] [--creates 300]
    python -m bench.mpi_match --backend postgres --goldens 1000000 --queries 2000 --creates 300   # the 1M run

PostgreSQL: ``--postgres-url`` (default ``$HIE_BENCH_POSTGRES_URL`` or a ``hie_bench_mpi`` database on
127.0.0.1), dropped and created again for the run; only loopback addresses are accepted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Table, insert, text

from bench.scratch_db import check_loopback, postgres_version, recreate_postgres
from ehr_archive.matching import blocking_keys, person_record_from_patient
from ehr_archive.mpi import install_mpi, links, mpi_of
from ehr_archive.mpi.operations.match import OPERATION as MATCH
from ehr_archive.mpi.records import Member, build_golden, demographics
from fhir_server.auth.principal import SYSTEM
from fhir_server.config import Settings
from fhir_server.migrations import upgrade
from fhir_server.operations.base import Invocation
from fhir_server.repository import _deflate, _stamp
from fhir_server.service import FhirService
from fhir_server.storage import create_db_engine, unit_of_work
from fhir_server.storage.engine import refresh_statistics
from fhir_server.storage.tables import mpi_blocking_keys, mpi_goldens, mpi_records, resource_versions, resources
from tests.ehr_archive.mpi_dataset import generate_dataset

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/hie_bench_mpi"
DEFAULT_GOLDENS = 10_000
BATCH = 5000


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def summary(name: str, values: list[float]) -> str:
    return (
        f"{name:<28} n={len(values):>5}  mean {statistics.fmean(values):7.2f} ms  "
        f"p50 {percentile(values, 0.50):7.2f} ms  p99 {percentile(values, 0.99):7.2f} ms"
    )


@dataclass
class Figures:
    """What a run measured (milliseconds), for the smoke test and for a caller that prints them differently."""

    goldens: int = 0
    records: int = 0
    load_seconds: float = 0.0
    match_ms: list[float] = field(default_factory=list)
    found: int = 0
    first: int = 0
    create_ms: dict[str, list[float]] = field(default_factory=dict)
    create_cpu_ms: dict[str, list[float]] = field(default_factory=dict)
    """The same creates in CPU time of this process (``time.process_time``): steadier on a shared machine."""
    after_commit_ms: list[float] = field(default_factory=list)
    after_commit_cpu_ms: list[float] = field(default_factory=list)


# -- loading --------------------------------------------------------------------------------------------------------


def _copy(conn: Connection, table: Table, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """PostgreSQL ``COPY … FROM STDIN`` on the unit of work's own connection, inside its transaction."""
    if not conn.in_transaction():
        conn.begin()
    driver = conn.connection.driver_connection
    assert driver is not None
    statement = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN"
    with driver.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)


def bulk_insert(conn: Connection, table: Table, columns: Sequence[str], rows: list[Sequence[Any]]) -> None:
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        _copy(conn, table, columns, rows)
    else:
        conn.execute(insert(table), [dict(zip(columns, row, strict=True)) for row in rows])


def next_res_pk(conn: Connection) -> int:
    return int(conn.execute(text("SELECT COALESCE(MAX(res_pk), 0) + 1 FROM resources")).scalar_one())


def load(
    engine: Engine, service: FhirService, goldens: int, seed: int, *, index_goldens: bool = False, quiet: bool = False
) -> tuple[list[tuple[str, dict[str, Any]]], int]:
    """File the master index directly in the tables; ``(queries (golden id, held-out record), records filed)``."""
    say = (lambda *_: None) if quiet else print
    started = time.perf_counter()
    dataset = generate_dataset(residents=goldens, seed=seed)
    say(f"generated {len(dataset.records):,} records of {goldens:,} residents in {time.perf_counter() - started:.1f} s")
    by_person: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in dataset.records:
        by_person[record.person_id].append({**record.patient, "id": record.record_id})
    del dataset
    people = sorted(by_person)
    queries: list[tuple[str, dict[str, Any]]] = []
    loaded = filed = 0
    started = time.perf_counter()
    with unit_of_work(engine) as conn:
        res_pk = next_res_pk(conn)
    for start in range(0, len(people), BATCH):
        record_rows: list[tuple[Any, ...]] = []
        key_rows: list[tuple[int, str]] = []
        built: list[tuple[dict[str, Any], str]] = []
        stamp = links.now_micros()
        for person in people[start : start + BATCH]:
            records = by_person.pop(person)
            golden_id = f"g-{person}"
            if len(records) > 1:
                queries.append((golden_id, records.pop()))
            members = []
            for patient in records:
                folded = person_record_from_patient(patient, patient["id"])
                kept = demographics(patient)
                record_rows.append((patient["id"], golden_id, "auto", True, _json(kept), stamp))
                key_rows.extend((h, patient["id"]) for h in sorted({links.key_hash(k) for k in blocking_keys(folded)}))
                members.append(Member(patient["id"], kept, stamp))
            built.append((build_golden(golden_id, members), golden_id))
        with unit_of_work(engine) as conn:
            bulk_insert(conn, mpi_goldens, ("golden_id", "active"), [(g, True) for _, g in built])
            bulk_insert(
                conn,
                mpi_records,
                ("source_id", "golden_id", "link_kind", "active", "demographics", "updated_at"),
                record_rows,
            )
            bulk_insert(conn, mpi_blocking_keys, ("key_hash", "source_id"), key_rows)
            if index_goldens:
                service.repository.create_many(conn, built)
            else:
                res_pk = _store_goldens(conn, built, res_pk, stamp)
        loaded += len(built)
        filed += len(record_rows)
        elapsed = time.perf_counter() - started
        say(f"  loaded {loaded:>9,} goldens, {filed:>9,} records ({loaded / elapsed:,.0f} goldens/s, {elapsed:,.0f} s)")
    with unit_of_work(engine) as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT setval(pg_get_serial_sequence('resources', 'res_pk'), :pk)"), {"pk": res_pk})
    analyzed = time.perf_counter()
    refresh_statistics(engine)
    say(f"  ANALYZE {time.perf_counter() - analyzed:.1f} s")
    return queries, filed


def _json(value: Any) -> str:
    import orjson

    return orjson.dumps(value).decode()


def _store_goldens(conn: Connection, built: list[tuple[dict[str, Any], str]], res_pk: int, ts: int) -> int:
    """The goldens as version-1 resources of the exchange (no owner), bodies as the repository stores them."""
    resource_rows, version_rows = [], []
    for golden, golden_id in built:
        body = _stamp(golden, golden_id, 1, ts)
        resource_rows.append((res_pk, "Patient", golden_id, 1, ts, False, None))
        version_rows.append((res_pk, 1, "Patient", ts, "POST", _deflate(body)))
        res_pk += 1
    bulk_insert(
        conn, resources, ("res_pk", "res_type", "res_id", "version", "ts", "deleted", "owner_org"), resource_rows
    )
    bulk_insert(conn, resource_versions, ("res_pk", "version", "res_type", "ts", "method", "body"), version_rows)
    return res_pk


# -- timing ---------------------------------------------------------------------------------------------------------


def time_matches(
    engine: Engine,
    service: FhirService,
    settings: Settings,
    queries: list[tuple[str, dict[str, Any]]],
    figures: Figures,
) -> None:
    for golden_id, patient in queries:
        query = {k: v for k, v in patient.items() if k != "id"}
        call = Invocation(
            service=service,
            settings=settings,
            base="http://bench/fhir",
            path="Patient/$match",
            res_type="Patient",
            res_id=None,
            inputs={"resource": [query], "count": [10]},
            principal=SYSTEM,
        )
        started = time.perf_counter()
        with unit_of_work(engine, write=False) as conn:
            bundle = MATCH.run(call, conn)
        figures.match_ms.append((time.perf_counter() - started) * 1000)
        ids = [e["resource"]["id"] for e in bundle["entry"] if e["search"]["mode"] == "match"]
        figures.found += golden_id in ids
        figures.first += bool(ids) and ids[0] == golden_id


def time_creates(
    engine: Engine, plain: FhirService, mpi: FhirService, creates: int, seed: int, figures: Figures
) -> None:
    dataset = generate_dataset(residents=creates * 2, seed=seed + 1)
    bodies = [{k: v for k, v in r.patient.items() if k != "id"} for r in dataset.records][: creates * 2]
    timings: dict[str, list[float]] = {"create without the MPI": [], "create with the MPI": []}
    cpu: dict[str, list[float]] = {name: [] for name in timings}
    index = mpi_of(mpi)
    assert index is not None
    for number, body in enumerate(bodies):
        name, service = ("create with the MPI", mpi) if number % 2 else ("create without the MPI", plain)
        started, started_cpu = time.perf_counter(), time.process_time()
        with unit_of_work(engine) as conn:
            service.create(conn, dict(body))
        timings[name].append((time.perf_counter() - started) * 1000)
        cpu[name].append((time.process_time() - started_cpu) * 1000)
        if service is mpi and index.rebuild != "inline":
            started, started_cpu = time.perf_counter(), time.process_time()
            index.rebuild_pending(engine)
            figures.after_commit_ms.append((time.perf_counter() - started) * 1000)
            figures.after_commit_cpu_ms.append((time.process_time() - started_cpu) * 1000)
    figures.create_ms = timings
    figures.create_cpu_ms = cpu


def run(
    engine: Engine,
    settings: Settings,
    *,
    goldens: int,
    queries: int,
    creates: int,
    seed: int = 11,
    index_goldens: bool = False,
    golden_rebuild: str = "after-commit",
    quiet: bool = False,
) -> Figures:
    """Load, then time ``$match`` and creates on an already migrated, empty database."""
    figures = Figures(goldens=goldens)
    plain = FhirService()
    mpi = FhirService()
    install_mpi(mpi, rebuild="inline" if golden_rebuild == "inline" else "queued")
    started = time.perf_counter()
    held_out, figures.records = load(engine, plain, goldens, seed, index_goldens=index_goldens, quiet=quiet)
    figures.load_seconds = time.perf_counter() - started
    time_matches(engine, mpi, settings, held_out[:queries], figures)
    if creates:
        time_creates(engine, plain, mpi, creates, seed, figures)
    return figures


def report(figures: Figures, queries: int) -> None:
    print(f"loaded {figures.goldens:,} goldens ({figures.records:,} records) in {figures.load_seconds:,.0f} s")
    print(summary("$match (count=10)", figures.match_ms))
    shown = max(1, len(figures.match_ms))
    print(f"  the resident's golden: first in {figures.first / shown:.1%}, returned in {figures.found / shown:.1%}")
    for name, values in figures.create_ms.items():
        print(summary(name, values))
    if figures.create_ms:
        added = statistics.fmean(figures.create_ms["create with the MPI"]) - statistics.fmean(
            figures.create_ms["create without the MPI"]
        )
        print(f"  MPI cost per Patient create (in the writer's unit of work): {added:+.2f} ms (mean)")
        for name, values in figures.create_cpu_ms.items():
            print(summary(f"{name} (CPU)", values))
        added_cpu = statistics.fmean(figures.create_cpu_ms["create with the MPI"]) - statistics.fmean(
            figures.create_cpu_ms["create without the MPI"]
        )
        print(f"  MPI CPU per Patient create (in the writer's unit of work): {added_cpu:+.2f} ms (mean)")
    if figures.after_commit_ms:
        print(summary("golden rebuild after commit", figures.after_commit_ms))
        print(summary("golden rebuild (CPU)", figures.after_commit_cpu_ms))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--backend", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--postgres-url", default=os.environ.get("HIE_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL))
    parser.add_argument(
        "--goldens", "--residents", dest="goldens", type=int, default=DEFAULT_GOLDENS, help="residents (goldens)"
    )
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--creates", type=int, default=300)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--index-goldens", action="store_true", help="store goldens with their search index rows")
    parser.add_argument("--golden-rebuild", choices=("after-commit", "inline"), default="after-commit")
    args = parser.parse_args(argv)
    if args.backend == "postgres":
        check_loopback(args.postgres_url)
        recreate_postgres(args.postgres_url)
        url = args.postgres_url
        print(postgres_version(url))
    else:
        url = f"sqlite:///{Path(tempfile.mkdtemp()) / 'mpi.db'}"
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} cores; {args.backend}, {args.goldens:,} goldens")
    settings = Settings(database_url=url)
    engine = create_db_engine(settings)
    try:
        upgrade(engine)
        figures = run(
            engine,
            settings,
            goldens=args.goldens,
            queries=args.queries,
            creates=args.creates,
            seed=args.seed,
            index_goldens=args.index_goldens,
            golden_rebuild=args.golden_rebuild,
        )
        report(figures, args.queries)
    finally:
        engine.dispose()
        if args.backend == "postgres":
            recreate_postgres(args.postgres_url, drop_only=True)


if __name__ == "__main__":
    main()
