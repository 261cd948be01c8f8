"""In-process writers pass through the MPI too: ``hie import`` (NDJSON and Bundles) on both backends."""

from __future__ import annotations

from pathlib import Path

import orjson

from ehr_archive.mpi.records import golden_of, is_golden
from fhir_server.api.app import Context
from fhir_server.bulk.importer import Importer
from fhir_server.storage import unit_of_work
from tests.ehr_archive.conftest import patient, resident_id, unique_org


def test_imported_patients_are_linked_to_goldens(backend, tmp_path: Path) -> None:
    settings = backend.settings.model_copy(update={"mpi_enabled": True})
    service = Context(settings, backend.engine).service
    rid = resident_id("19490101", 201)
    records = [
        {**patient(unique_org(), "IM-1", family="龙", given="海", born="1949-01-01", rid=rid), "id": "im-1"},
        {**patient(unique_org(), "IM-2", family="龙", given="海", born="1949-01-01", rid=rid), "id": "im-2"},
    ]
    path = tmp_path / "patients.ndjson"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))

    report = Importer(backend.engine, service).run([path])

    assert report.accepted == 2, report
    with unit_of_work(backend.engine, write=False) as conn:
        first, second = (service.read(conn, "Patient", i).resource() for i in ("im-1", "im-2"))
        golden = service.read(conn, "Patient", golden_of(first)).resource()  # type: ignore[arg-type]
    assert golden_of(first) == golden_of(second)
    assert is_golden(golden)
    assert {link["other"]["reference"] for link in golden["link"]} == {"Patient/im-1", "Patient/im-2"}
