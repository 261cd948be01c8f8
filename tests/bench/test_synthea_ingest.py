"""W1s at a tiny size, on both backends: Synthea Bundles of the shared corpus go in as they are and arrive.

Two of the smallest corpus Bundles, plus one refused Bundle written here, so that a refusal is reported with its
reason. No timing assertions.
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import orjson
import pytest

from bench.regional import run
from bench.regional.generate import RegionalData, institutions
from bench.regional.run import run_suite, smoke_plan
from bench.regional.server import Database
from bench.regional.workloads import synthea_bundles
from tests.conftest import corpus_dir

RESIDENTS = 4
HEAVY = 40
BUNDLES = 2
REFUSED = "zz-refused.json"
REFUSED_BUNDLE = {
    "resourceType": "Bundle",
    "type": "transaction",
    "entry": [
        {
            "fullUrl": "urn:uuid:0c2f5d0e-0000-4000-8000-00000000000a",
            "resource": {"resourceType": "Patient", "gender": "not-a-gender"},
            "request": {"method": "POST", "url": "Patient"},
        }
    ],
}


@pytest.fixture(scope="module")
def corpus_copy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """A corpus folder with the smallest Synthea Bundles, copied byte for byte, and one refused Bundle."""
    source = sorted((corpus_dir() / "synthea").glob("*.json"), key=lambda p: p.stat().st_size)[:BUNDLES]
    root = tmp_path_factory.mktemp("corpus")
    (root / "synthea").mkdir()
    for path in source:
        shutil.copyfile(path, root / "synthea" / path.name)
    (root / "synthea" / REFUSED).write_bytes(orjson.dumps(REFUSED_BUNDLE))
    return root, source


@pytest.fixture(scope="module")
def synthea_run(backend, corpus_copy, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    root, source = corpus_copy
    workdir = tmp_path_factory.mktemp("bench-w1s")
    database = Database.sqlite(workdir) if backend.name == "sqlite" else Database.postgres(backend.url, recreate=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HIE_CORPUS_DIR", str(root))
        result = run_suite(
            sizes=[RESIDENTS], databases=[database], plan=smoke_plan(), selected={"W1s"}, heavy=HEAVY, workdir=workdir
        )
    return result, source, database.backend


@pytest.mark.corpus
def test_the_synthea_bundles_arrived_as_they_are(synthea_run) -> None:  # type: ignore[no-untyped-def]
    result, source, backend = synthea_run
    assert result.errors == []
    (cell,) = [c for c in result.cells if c.workload == "W1s"]
    bundles = [orjson.loads(path.read_bytes()) for path in source]
    entries = [len(b["entry"]) for b in bundles]
    assert cell.count == BUNDLES
    assert cell.clients == 4
    assert cell.recorder.units == sum(entries)
    assert cell.extra["bundles"] == BUNDLES + 1
    low, _, high = cell.extra["entries min/median/max"].split("/")
    assert (int(low), int(high)) == (1, max(entries))
    expected = Counter(e["resource"]["resourceType"] for b in bundles for e in b["entry"])
    data = RegionalData(RESIDENTS, heavy=HEAVY)
    loaded = [0, *range(1 + RESIDENTS // 2, RESIDENTS)]  # the residents beyond W1's share go in by bulk load
    expected.update(r["resourceType"] for record in data.records(loaded) for r in record.resources)
    expected["Organization"] += len(institutions())
    counts = {t: result.counts[backend].get(t, 0) for t in expected}
    # The master patient index may add Patients of its own (golden records) for Patients written over REST.
    assert counts.pop("Patient") >= expected.pop("Patient")
    assert counts == dict(expected)


@pytest.mark.corpus
def test_a_refused_bundle_is_reported_with_its_reason(synthea_run) -> None:  # type: ignore[no-untyped-def]
    result, _, _ = synthea_run
    (cell,) = [c for c in result.cells if c.workload == "W1s"]
    (failure,) = cell.recorder.failures
    assert failure.startswith(f"{REFUSED}: HTTP 4")
    assert cell.extra["failure reasons"].startswith("1× HTTP 4")
    text = "\n".join(result.lines)
    assert "| W1s |" in text
    assert "--workloads W1s" in text


def test_w1s_without_the_corpus_says_why(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HIE_CORPUS_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match="HIE_CORPUS_DIR is not set"):
        synthea_bundles()
    with pytest.raises(SystemExit, match="HIE_CORPUS_DIR is not set"):
        run.main(["--smoke", "--backend", "sqlite", "--workloads", "W1s"])
    monkeypatch.setenv("HIE_CORPUS_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"no \*\.json"):
        synthea_bundles()


@pytest.mark.corpus
def test_w1s_takes_the_smallest_bundles_when_limited(corpus_copy, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    root, source = corpus_copy
    monkeypatch.setenv("HIE_CORPUS_DIR", str(root))
    assert [b.name for b in synthea_bundles()] == sorted([*(p.name for p in source), REFUSED])
    (smallest,) = synthea_bundles(1)
    assert smallest.name == REFUSED
    assert smallest.entries == 1
    assert smallest.body == orjson.dumps(REFUSED_BUNDLE)


def test_the_everything_size_option(tmp_path: Path) -> None:
    assert run.parse_args(["--everything-size", "2000"]).heavy == 2000
    assert run.parse_args([]).heavy == 1000
