"""``Patient/$match`` latency against a large master patient index, and the MPI's cost on Patient create.

Loads ``--residents`` synthetic Wuzhou residents (``tests/ehr_archive/mpi_dataset.py``: households, homophones,
typos, card-only records) into a scratch database: every record but one of each resident is filed in the MPI
tables with bulk inserts (``ehr_archive.mpi.links.load_records``), and each resident's golden Patient is built by
survivorship and stored through the repository's bulk path (``Repository.create_many``, index rows included).
The institutions' records themselves are not stored as resources: ``$match`` reads only the MPI tables and the
goldens. The held-out record of each resident with several records is a query: ``$match`` runs in-process
(the operation inside a read-only unit of work, no HTTP), timed one by one. Then Patient creates are timed with
and without the MPI hook, interleaved, one unit of work each.

    python -m bench.mpi_match [--backend postgres|sqlite] [--residents 100000] [--queries 1000] [--creates 300]

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
from pathlib import Path
from typing import Any

from bench.scratch_db import check_loopback, postgres_version, recreate_postgres
from ehr_archive.matching import blocking_keys, person_record_from_patient
from ehr_archive.mpi import install_mpi, links
from ehr_archive.mpi.operations.match import OPERATION as MATCH
from ehr_archive.mpi.records import Member, build_golden, demographics
from fhir_server.config import Settings
from fhir_server.migrations import upgrade
from fhir_server.operations.base import Invocation
from fhir_server.service import FhirService
from fhir_server.storage import create_db_engine, unit_of_work
from tests.ehr_archive.mpi_dataset import generate_dataset

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/hie_bench_mpi"
BATCH = 2000


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def summary(name: str, values: list[float]) -> str:
    return (
        f"{name:<28} n={len(values):>5}  mean {statistics.fmean(values):7.2f} ms  "
        f"p50 {percentile(values, 0.50):7.2f} ms  p99 {percentile(values, 0.99):7.2f} ms"
    )


def load(engine: Any, service: FhirService, residents: int, seed: int) -> list[tuple[str, dict[str, Any]]]:
    """File the master index; the queries ``(golden id, held-out record)``."""
    started = time.perf_counter()
    dataset = generate_dataset(residents=residents, seed=seed)
    elapsed = time.perf_counter() - started
    print(f"generated {len(dataset.records):,} records of {residents:,} residents in {elapsed:.1f} s")
    by_person: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in dataset.records:
        by_person[record.person_id].append({**record.patient, "id": record.record_id})
    people = sorted(by_person)
    queries: list[tuple[str, dict[str, Any]]] = []
    loaded = 0
    started = time.perf_counter()
    for start in range(0, len(people), BATCH):
        rows, goldens = [], []
        for person in people[start : start + BATCH]:
            records = by_person[person]
            golden_id = f"g-{person}"
            if len(records) > 1:
                queries.append((golden_id, records.pop()))
            members = []
            for patient in records:
                folded = person_record_from_patient(patient, patient["id"])
                rows.append((patient["id"], golden_id, "auto", demographics(patient), blocking_keys(folded)))
                members.append(Member(patient["id"], demographics(patient), 0))
            goldens.append((build_golden(golden_id, members), golden_id))
        with unit_of_work(engine) as conn:
            links.load_records(conn, rows)
            service.repository.create_many(conn, goldens)
        loaded += len(goldens)
        elapsed = time.perf_counter() - started
        print(f"  loaded {loaded:>9,} goldens ({loaded / elapsed:,.0f}/s, {elapsed:,.0f} s)", flush=True)
    return queries


def time_matches(
    engine: Any, service: FhirService, settings: Settings, queries: list[tuple[str, dict[str, Any]]]
) -> None:
    latencies, top_right, found = [], 0, 0
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
        )
        started = time.perf_counter()
        with unit_of_work(engine, write=False) as conn:
            bundle = MATCH.run(call, conn)
        latencies.append((time.perf_counter() - started) * 1000)
        ids = [e["resource"]["id"] for e in bundle["entry"] if e["search"]["mode"] == "match"]
        found += golden_id in ids
        top_right += bool(ids) and ids[0] == golden_id
    print(summary("$match (count=10)", latencies))
    print(f"  the resident's golden: first in {top_right / len(queries):.1%}, returned in {found / len(queries):.1%}")


def time_creates(engine: Any, plain: FhirService, mpi: FhirService, creates: int, seed: int) -> None:
    dataset = generate_dataset(residents=creates * 2, seed=seed + 1)
    bodies = [{k: v for k, v in r.patient.items() if k != "id"} for r in dataset.records][: creates * 2]
    timings: dict[str, list[float]] = {"create without the MPI": [], "create with the MPI": []}
    for index, body in enumerate(bodies):
        name, service = ("create with the MPI", mpi) if index % 2 else ("create without the MPI", plain)
        started = time.perf_counter()
        with unit_of_work(engine) as conn:
            service.create(conn, dict(body))
        timings[name].append((time.perf_counter() - started) * 1000)
    for name, values in timings.items():
        print(summary(name, values))
    added = statistics.fmean(timings["create with the MPI"]) - statistics.fmean(timings["create without the MPI"])
    print(f"  MPI cost per Patient create: {added:+.2f} ms (mean)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--backend", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--postgres-url", default=os.environ.get("HIE_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL))
    parser.add_argument("--residents", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--creates", type=int, default=300)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args(argv)
    if args.backend == "postgres":
        check_loopback(args.postgres_url)
        recreate_postgres(args.postgres_url)
        url = args.postgres_url
        print(postgres_version(url))
    else:
        url = f"sqlite:///{Path(tempfile.mkdtemp()) / 'mpi.db'}"
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} cores; {args.backend}, {args.residents:,} residents")
    settings = Settings(database_url=url)
    engine = create_db_engine(settings)
    try:
        upgrade(engine)
        plain = FhirService()
        mpi = FhirService()
        install_mpi(mpi)
        queries = load(engine, plain, args.residents, args.seed)
        time_matches(engine, mpi, settings, queries[: args.queries])
        time_creates(engine, plain, mpi, args.creates, args.seed)
    finally:
        engine.dispose()
        if args.backend == "postgres":
            recreate_postgres(args.postgres_url, drop_only=True)


if __name__ == "__main__":
    main()
