"""The benchmark suite at a smoke size, on both backends: every workload gives figures and the data arrives.

No timing assertions: the figures of a shared CI machine mean nothing; that the suite runs end to end does.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from bench.regional.generate import RegionalData, institutions
from bench.regional.run import ALL_WORKLOADS, run_suite, smoke_plan
from bench.regional.server import Database
from bench.regional.workloads import W4_QUERIES

RESIDENTS = 20
HEAVY = 60


@pytest.fixture(scope="module")
def suite(backend, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    workdir = tmp_path_factory.mktemp("bench")
    sqlite = backend.name == "sqlite"
    database = Database.sqlite(workdir) if sqlite else Database.postgres(backend.url, recreate=False)
    plan = smoke_plan()
    result = run_suite(
        sizes=[RESIDENTS], databases=[database], plan=plan, selected=set(ALL_WORKLOADS), heavy=HEAVY, workdir=workdir
    )
    return result, plan, database.backend


def _cells(result, workload: str):  # type: ignore[no-untyped-def]
    return [c for c in result.cells if c.workload == workload]


def test_every_workload_produced_figures_without_failures(suite) -> None:  # type: ignore[no-untyped-def]
    result, plan, _ = suite
    assert result.errors == []
    for workload in ("W1", "W2", "W3", "W4", "W5", "W7", "W8", "limit", "load"):
        cells = _cells(result, workload)
        assert cells, workload
        for cell in cells:
            assert cell.recorder.failures == [], (workload, cell.label, cell.recorder.failures[:3])
            assert cell.count > 0, (workload, cell.label)
    assert [c.clients for c in _cells(result, "W2")] == list(plan.w2_clients)
    assert [c.clients for c in _cells(result, "W3")] == list(plan.w3_clients)
    assert [c.label for c in _cells(result, "W4")] == [f"search: {kind}" for kind in W4_QUERIES]
    assert all(c.count == plan.w4_requests for c in _cells(result, "W4"))


def test_the_data_arrived(suite) -> None:  # type: ignore[no-untyped-def]
    result, plan, backend = suite
    data = RegionalData(RESIDENTS, heavy=HEAVY)
    expected = Counter(r["resourceType"] for record in data.records(range(RESIDENTS)) for r in record.resources)
    small_transactions = plan.w2_transactions * len(plan.w2_clients)
    expected.update({"Organization": len(institutions()), "Patient": small_transactions})
    expected["Observation"] += small_transactions
    counts = {t: result.counts[backend].get(t, 0) for t in expected}
    # The master patient index may add Patients of its own (golden records) for Patients written over REST.
    assert counts.pop("Patient") >= expected.pop("Patient")
    assert counts == dict(expected)
    w1 = _cells(result, "W1")[0]
    assert w1.recorder.units == sum(len(r.resources) for r in data.records(range(1, 1 + plan.w1_residents)))
    (load,) = _cells(result, "load")
    assert load.extra["report"] == f"accepted {load.resources}, rejected 0"


def test_reads_searches_and_operations_return_the_data(suite) -> None:  # type: ignore[no-untyped-def]
    result, _, backend = suite
    data = RegionalData(RESIDENTS, heavy=HEAVY)
    searches = {c.label.removeprefix("search: "): c.extra["matches"] for c in _cells(result, "W4")}
    assert searches["token + patient"] > 0
    assert searches["chained"] > 0
    assert searches["string prefix"] > 0
    (everything,) = _cells(result, "W5")
    assert everything.extra["resources"] >= len(data.record(0).resources)
    (export,) = _cells(result, "W7")
    assert export.recorder.units == sum(result.counts[backend].values())
    (footprint,) = _cells(result, "W8")
    assert footprint.extra["bytes/resource"] > 0
    assert footprint.extra["rss bytes"] > 0


def test_the_database_alone_figures_are_there(suite) -> None:  # type: ignore[no-untyped-def]
    result, _, backend = suite
    labels = [c.label for c in _cells(result, "limit")]
    assert "database alone: batched INSERT (500/commit)" in labels
    assert "database alone: point read by id" in labels
    assert ("database alone: COPY (500/commit)" in labels) == (backend == "postgresql")
    assert all(c.recorder.units > 0 for c in _cells(result, "limit"))


def test_the_report_has_every_table(suite) -> None:  # type: ignore[no-untyped-def]
    result, _, _ = suite
    text = "\n".join(result.lines)
    for heading in ("| workload | backend | residents", "| backend | database alone", "Target vs measured"):
        assert heading in text
    assert "load average at start" in text


def test_profile_of_ingest_and_read(tmp_path: Path) -> None:
    """The in-process profile uses a scratch SQLite database of its own, whatever the backend under test."""
    from bench.regional.profile import profile_lines, profile_paths

    results = profile_paths(tmp_path, residents=2, reads=5)
    assert set(results) == {"W1", "W3"}
    assert all(r["packages"] and r["functions"] and r["cumulative"] and r["plain ms"] > 0 for r in results.values())
    assert "### Profile of W1" in "\n".join(profile_lines(results))
