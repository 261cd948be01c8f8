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


def test_hie_bench_hands_every_option_to_the_suite(monkeypatch: pytest.MonkeyPatch) -> None:
    import bench.regional.run

    seen: list[list[str]] = []
    monkeypatch.setattr(bench.regional.run, "main", lambda argv: seen.append(argv) or 0)
    options = ["--size", "50", "--backend", "sqlite", "--workloads", "W1s,W5", "--workers", "3"]
    options += ["--everything-size", "2000", "--synthea-bundles", "4", "--no-profile", "--smoke"]
    result = CliRunner().invoke(app, ["bench", *options])

    assert result.exit_code == 0, result.output
    argv = seen[0]
    pairs = dict(zip(argv[::2], argv[1::2], strict=False))
    assert {k: pairs.get(k) for k in ("--size", "--workloads", "--workers", "--everything-size")} == {
        "--size": "50",
        "--workloads": "W1s,W5",
        "--workers": "3",
        "--everything-size": "2000",
    }
    assert argv[argv.index("--synthea-bundles") + 1] == "4"
    assert "--no-profile" in argv and "--smoke" in argv


def test_nearest_rank_percentiles() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(list(reversed(values)), 100) == 100.0
    assert percentile([3.0], 99) == 3.0
    assert percentile([], 50) != percentile([], 50)  # NaN when nothing was measured
