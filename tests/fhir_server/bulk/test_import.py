"""``hie import`` on both backends: NDJSON with ids kept, Bundle files, rejects with reasons, resuming."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from fhir_server import cli
from fhir_server.api.app import Context
from fhir_server.bulk.importer import Importer, import_files
from fhir_server.storage.engine import unit_of_work
from fhir_server.storage.tables import resources
from tests.conftest import corpus_dir


def importer(backend: Any, batch: int = 500) -> Importer:
    return Importer(backend.engine, Context(backend.settings, backend.engine).service, batch=batch)


def patient(res_id: str, family: str = "陈", **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": res_id, "name": [{"family": family}], **extra}


def write_ndjson(path: Path, records: list[Any]) -> Path:
    path.write_bytes(b"".join((r if isinstance(r, bytes) else orjson.dumps(r)) + b"\n" for r in records))
    return path


def versions(backend: Any, prefix: str) -> dict[str, int]:
    with unit_of_work(backend.engine, write=False) as conn:
        rows = conn.execute(
            select(resources.c.res_type, resources.c.res_id, resources.c.version).where(
                resources.c.res_id.like(f"{prefix}%")
            )
        )
        return {f"{r.res_type}/{r.res_id}": r.version for r in rows}


def test_ndjson_keeps_ids_and_reports_every_reject_with_its_reason(backend, tmp_path: Path) -> None:
    source = write_ndjson(
        tmp_path / "mixed.ndjson",
        [
            patient("nd-p1"),
            b"{not json",
            {"hello": "world"},
            patient("nd-p2", gender="unknown-gender"),
            patient("nd bad id"),
            {"resourceType": "Observation", "id": "nd-o1", "status": "final", "code": {"text": "心率"}},
            b"",
            patient("nd-p1", family="李"),
        ],
    )
    report = importer(backend).run([source])
    (outcome,) = report.files
    assert (outcome.records, outcome.accepted, outcome.rejected) == (8, 3, 4)
    reasons = {r.record: r.reason for r in report.rejects}
    assert set(reasons) == {2, 3, 4, 5}
    assert "not JSON" in reasons[2]
    assert "no resourceType" in reasons[3]
    assert "gender" in reasons[4] and reasons[4].startswith("400")
    assert "nd bad id" in reasons[5]
    assert {(r.res_type, r.res_id) for r in report.rejects if r.record == 4} == {("Patient", "nd-p2")}
    assert versions(backend, "nd-") == {"Patient/nd-p1": 2, "Observation/nd-o1": 1}  # the repeat is an update
    again = importer(backend).run([source])
    assert again.files[0].skipped and versions(backend, "nd-") == {"Patient/nd-p1": 2, "Observation/nd-o1": 1}
    assert len(again.rejects) == 4  # still reported


def test_an_interrupted_import_resumes_and_applies_no_record_twice(backend, tmp_path: Path) -> None:
    source = write_ndjson(tmp_path / "residents.ndjson", [patient(f"rs-{n:02d}") for n in range(20)])
    calls = []

    def interrupt(done: int) -> None:
        calls.append(done)
        if len(calls) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        importer(backend, batch=4).run([source], interrupt)
    assert len(versions(backend, "rs-")) == 12  # three batches were committed
    report = importer(backend, batch=4).run([source])
    (outcome,) = report.files
    assert (outcome.resumed_at, outcome.records, outcome.accepted, outcome.rejected) == (12, 20, 20, 0)
    assert set(versions(backend, "rs-").values()) == {1}
    source.write_bytes(source.read_bytes() + orjson.dumps(patient("rs-20")) + b"\n")  # the file changed: start over
    changed = importer(backend).run([source]).files[0]
    assert (changed.resumed_at, changed.accepted) == (0, 21)
    assert versions(backend, "rs-")["Patient/rs-20"] == 1 and versions(backend, "rs-")["Patient/rs-00"] == 2


def test_bundle_and_resource_files(backend, tmp_path: Path) -> None:
    def entry(resource: dict[str, Any], full_url: str | None = None) -> dict[str, Any]:
        return {"fullUrl": full_url, "resource": resource, "request": {"method": "POST", "url": "Patient"}}

    good = {"resourceType": "Bundle", "type": "transaction", "entry": [entry(patient("x")), entry(patient("y"))]}
    bad = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [entry(patient("x")), entry(patient("y", gender="nope"))],
    }
    batch = {**bad, "type": "batch"}
    collection = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": patient("bf-c1")}]}
    folder = tmp_path / "bundles"
    folder.mkdir()
    for name, document in {"a.json": good, "b.json": bad, "c.json": batch, "d.json": collection}.items():
        (folder / name).write_bytes(orjson.dumps(document))
    (folder / "e.json").write_bytes(orjson.dumps(patient("bf-single")))
    (folder / "f.json").write_bytes(b"[1, 2")
    (folder / "LICENSE").write_text("not imported")
    report = importer(backend).run(import_files(folder))
    summary = {Path(f.source).name: (f.records, f.accepted, f.rejected) for f in report.files}
    assert summary == {
        "a.json": (2, 2, 0),
        "b.json": (2, 0, 2),
        "c.json": (2, 1, 1),
        "d.json": (1, 1, 0),
        "e.json": (1, 1, 0),
        "f.json": (1, 0, 1),
    }
    rejects = {(Path(r.source).name, r.record): r.reason for r in report.rejects}
    assert rejects[("b.json", 0)].startswith("transaction refused") and "entry[1]" in rejects[("b.json", 0)]
    assert rejects[("c.json", 2)].startswith("HTTP 400") and "gender" in rejects[("c.json", 2)]
    assert "not JSON" in rejects[("f.json", 0)]
    assert versions(backend, "bf-") == {"Patient/bf-c1": 1, "Patient/bf-single": 1}


def test_hie_import_command(backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "feed"
    folder.mkdir()
    write_ndjson(folder / "Patient.000.ndjson", [patient("cli-1"), patient("cli-2"), {"resourceType": "Nope"}])
    monkeypatch.setenv("HIE_DATABASE_URL", backend.url)
    report = tmp_path / "rejects.ndjson"
    result = CliRunner().invoke(cli.app, ["import", str(folder), "--report", str(report)])
    assert result.exit_code == 0, result.output
    assert "accepted 2, rejected 1" in result.output
    (reject,) = [orjson.loads(line) for line in report.read_bytes().splitlines()]
    assert reject["record"] == 3 and "Nope" in reject["reason"]
    assert versions(backend, "cli-") == {"Patient/cli-1": 1, "Patient/cli-2": 1}
    missing = CliRunner().invoke(cli.app, ["import", str(tmp_path / "absent")])
    assert missing.exit_code != 0


@pytest.mark.corpus
def test_bulk_ndjson_corpus_with_its_log_file(backend, tmp_path: Path) -> None:
    """Synthea's own bulk output: resources load with their ids; the export log's lines are reported."""
    folder = tmp_path / "bulk"
    folder.mkdir()
    for name in ("Organization.000.ndjson", "Location.000.ndjson", "Patient.000.ndjson", "log.ndjson"):
        shutil.copy(corpus_dir() / "bulk-ndjson" / name, folder / name)
    report = importer(backend).run(import_files(folder))
    counts = {Path(f.source).name: (f.accepted, f.rejected) for f in report.files}
    assert counts == {
        "Location.000.ndjson": (44, 0),
        "Organization.000.ndjson": (43, 0),
        "Patient.000.ndjson": (13, 0),
        "log.ndjson": (0, 4),
    }
    assert {r.reason for r in report.rejects} == {"not a FHIR resource (no resourceType)"}
