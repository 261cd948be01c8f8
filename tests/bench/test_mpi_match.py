"""``bench/mpi_match.py`` at a smoke size on both backends: the index loads, ``$match`` finds the goldens, creates run.

No timing assertions: only that the benchmark runs end to end and measures what it says.
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from bench.mpi_match import run
from fhir_server.storage import unit_of_work
from fhir_server.storage.tables import mpi_blocking_keys, mpi_golden_queue, mpi_goldens, mpi_records, resources


@pytest.mark.parametrize("golden_rebuild", ["after-commit", "inline"])
def test_the_benchmark_loads_matches_and_creates(backend, golden_rebuild: str) -> None:  # type: ignore[no-untyped-def]
    with unit_of_work(backend.engine) as conn:  # each case starts from an empty index
        for table in (mpi_golden_queue, mpi_blocking_keys, mpi_records, mpi_goldens):
            conn.execute(table.delete())
        conn.execute(resources.delete().where(resources.c.res_type.in_(["Patient", "Task"])))
    figures = run(
        backend.engine, backend.settings, goldens=300, queries=40, creates=6, golden_rebuild=golden_rebuild, quiet=True
    )
    assert len(figures.match_ms) == 40
    assert figures.found >= 36  # the matcher's recall: a held-out record may share too little with its golden
    assert set(figures.create_ms) == {"create without the MPI", "create with the MPI"}
    assert all(len(values) == 6 for values in figures.create_ms.values())
    assert len(figures.after_commit_ms) == (6 if golden_rebuild == "after-commit" else 0)
    with unit_of_work(backend.engine, write=False) as conn:
        goldens = conn.execute(select(func.count()).select_from(mpi_goldens)).scalar_one()
        stored = conn.execute(
            select(func.count()).select_from(resources).where(resources.c.res_id.in_(select(mpi_goldens.c.golden_id)))
        ).scalar_one()
        queued = conn.execute(select(func.count()).select_from(mpi_golden_queue)).scalar_one()
    assert goldens > 300  # one per loaded resident, and the created residents not matched to one
    assert stored == goldens  # every golden, loaded or created, is a stored Patient: none left for later
    assert queued == 0
    assert figures.records >= 300
