"""``hie bench`` and ``python -m bench.regional.run``: bad arguments are refused before anything starts."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from bench.regional.load import percentile
from bench.regional.run import main
from fhir_server.cli import app


def test_an_unknown_workload_is_refused() -> None:
    with pytest.raises(SystemExit, match="unknown workloads: W9"):
        main(["--workloads", "W1,W9", "--backend", "sqlite"])


def test_a_size_too_small_is_refused() -> None:
    with pytest.raises(SystemExit, match="at least 4 residents"):
        main(["--size", "2", "--backend", "sqlite"])


def test_a_postgres_url_off_this_machine_is_refused() -> None:
    with pytest.raises(SystemExit, match="only loopback"):
        main(["--backend", "postgres", "--postgres-url", "postgresql+psycopg://postgres@db.example.org/x"])


def test_hie_bench_passes_its_options_to_the_suite() -> None:
    result = CliRunner().invoke(app, ["bench", "--workloads", "W9", "--backend", "sqlite"])
    assert result.exit_code != 0
    assert "unknown workloads: W9" in str(result.exception)


def test_nearest_rank_percentiles() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(list(reversed(values)), 100) == 100.0
    assert percentile([3.0], 99) == 3.0
    assert percentile([], 50) != percentile([], 50)  # NaN when nothing was measured
