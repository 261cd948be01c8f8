"""``hie mpi backfill`` (both backends): Patients stored before the MPI was on are filed, resumably, with counts."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from ehr_archive.mpi import install_mpi, links
from ehr_archive.mpi.backfill import backfill
from ehr_archive.mpi.records import is_golden
from fhir_server.service import FhirService
from fhir_server.storage import unit_of_work
from fhir_server.storage.tables import mpi_records, resources
from tests.ehr_archive.conftest import patient, resident_id, unique_org


def _reset(engine) -> None:  # type: ignore[no-untyped-def]
    """Each test starts without Patients or MPI rows (the module shares one database)."""
    from fhir_server.storage.tables import mpi_blocking_keys, mpi_distinct, mpi_golden_queue, mpi_goldens

    with unit_of_work(engine) as conn:
        for table in (mpi_golden_queue, mpi_blocking_keys, mpi_distinct, mpi_records, mpi_goldens):
            conn.execute(table.delete())
        conn.execute(resources.delete().where(resources.c.res_type.in_(["Patient", "Task", "Provenance"])))


def _store_without_mpi(engine, bodies: list[dict[str, Any]]) -> list[str]:  # type: ignore[no-untyped-def]
    plain = FhirService()
    ids = []
    with unit_of_work(engine) as conn:
        for body in bodies:
            ids.append(plain.create(conn, body).version.res_id)
    return ids


def _refer(engine, res_id: str) -> list[str]:  # type: ignore[no-untyped-def]
    with unit_of_work(engine, write=False) as conn:
        body = FhirService().repository.read(conn, "Patient", res_id).resource()
    return [link["other"]["reference"] for link in body.get("link", []) if link["type"] == "refer"]


def _history_length(engine, res_id: str) -> int:  # type: ignore[no-untyped-def]
    with unit_of_work(engine, write=False) as conn:
        return FhirService().repository.read(conn, "Patient", res_id).version


@pytest.fixture
def legacy(engine) -> list[str]:  # type: ignore[no-untyped-def]
    """Four Patients written while the MPI was off: a resident held twice, a namesake without an ID, a stranger."""
    _reset(engine)
    rid = resident_id("19580312", 41)
    return _store_without_mpi(
        engine,
        [
            patient(unique_org(), "L-1", rid=rid, phone="13907741001"),
            patient(unique_org(), "L-2", given="建囯", rid=rid),
            patient(unique_org(), "L-3"),  # same name and birth date, no ID number: probable, a reviewer decides
            patient(unique_org(), "L-4", family="覃", given="秀英", born="1971-06-02", gender="female"),
        ],
    )


def test_backfill_files_every_patient_and_reports_what_it_did(engine, legacy: list[str]) -> None:
    mpi = install_mpi(FhirService(), rebuild="queued")
    seen: list[tuple[int, int]] = []

    report = backfill(engine, mpi, batch=3, progress=lambda done, total: seen.append((done, total)))

    assert (report.total, report.filed, report.failed, report.skipped) == (4, 4, 0, 0)
    assert (report.new, report.linked, report.review) == (2, 1, 1)
    assert report.errors == []
    assert seen[0] == (0, 4) and seen[-1] == (4, 4)
    assert report.goldens_rebuilt >= 3
    first, second, namesake, stranger = legacy
    assert _refer(engine, first) == _refer(engine, second)  # one resident, one golden
    assert _refer(engine, namesake) != _refer(engine, first)
    assert len({_refer(engine, i)[0] for i in legacy}) == 3
    assert _history_length(engine, stranger) == 2  # the refer link is a new version of the record
    with unit_of_work(engine, write=False) as conn:
        golden = FhirService().repository.read(conn, "Patient", _refer(engine, first)[0].removeprefix("Patient/"))
        assert is_golden(golden.resource())
        assert {link["other"]["reference"] for link in golden.resource()["link"]} == {
            f"Patient/{first}",
            f"Patient/{second}",
        }
        assert links.queue_length(conn) == 0
        tasks = FhirService().matches(conn, "Task", [("focus", f"Patient/{namesake}")], limit=10)
        assert len(tasks) == 1


def test_backfill_is_resumable_and_idempotent(engine, legacy: list[str]) -> None:
    mpi = install_mpi(FhirService(), rebuild="queued")

    part = backfill(engine, mpi, batch=1, limit=2)
    rest = backfill(engine, mpi, batch=2)
    again = backfill(engine, mpi)

    assert (part.total, part.filed) == (2, 2)
    assert (rest.total, rest.filed) == (2, 2)
    assert (again.total, again.filed) == (0, 0)
    assert part.new + part.linked + rest.new + rest.linked + rest.review == 4
    with unit_of_work(engine, write=False) as conn:
        assert conn.execute(select(func.count()).select_from(mpi_records)).scalar_one() == 4
    assert _history_length(engine, legacy[0]) == 2  # filed once, not once per run


def test_a_patient_that_fails_is_reported_with_its_reason_and_the_rest_are_filed(
    engine, legacy: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    mpi = install_mpi(FhirService(), rebuild="queued")
    broken = legacy[3]
    original = mpi.file_record

    def failing(conn, source_id, patient, **kwargs):  # type: ignore[no-untyped-def]
        if source_id == broken:
            raise ValueError("demographics unreadable")
        return original(conn, source_id, patient, **kwargs)

    monkeypatch.setattr(mpi, "file_record", failing)
    report = backfill(engine, mpi)

    assert (report.filed, report.failed) == (3, 1)
    assert report.errors == [(broken, "ValueError: demographics unreadable")]
    assert _history_length(engine, broken) == 1  # nothing of it was kept
    monkeypatch.setattr(mpi, "file_record", original)
    assert backfill(engine, mpi).filed == 1  # the next run tries it again


def test_the_command_prints_the_counts(backend, legacy: list[str], monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from fhir_server.cli import app

    monkeypatch.setenv("HIE_DATABASE_URL", backend.url)
    result = CliRunner().invoke(app, ["mpi", "backfill", "--batch", "2"])

    assert result.exit_code == 0, result.output
    assert "Filed 4 of 4 Patients: 1 linked with certainty to an existing golden, 1 sent to review, 2 new" in (
        result.output
    )
    again = CliRunner().invoke(app, ["mpi", "backfill"])
    assert "Filed 0 of 0 Patients" in again.output
