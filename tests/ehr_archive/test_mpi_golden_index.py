"""A golden rebuild writes again only the index rows of what changed: they equal a full reindex (both backends)."""

from __future__ import annotations

from typing import Any

from ehr_archive.mpi import install_mpi
from fhir_server.service import FhirService
from fhir_server.storage import unit_of_work
from tests.ehr_archive.conftest import patient, resident_id, unique_org
from tests.fhir_server.test_repository_reindex_changed import full_reindex, stored_index


def _golden_of(record: dict[str, Any]) -> str:
    [golden] = [link["other"]["reference"] for link in record["link"] if link["type"] == "refer"]
    return golden.removeprefix("Patient/")


def test_index_rows_of_rebuilt_goldens_equal_a_full_reindex(engine) -> None:
    service = FhirService()
    mpi = install_mpi(service, rebuild="queued")
    rid = resident_id("19710305", 411)
    writes = [
        patient(unique_org(), "G-1", family="韦", given="明", born="1971-03-05", rid=rid),
        patient(unique_org(), "G-2", family="韦", given="明", born="1971-03-05", rid=rid),  # only seealso changes
        patient(unique_org(), "G-3", family="韦", given="明辉", born="1971-03-05", rid=rid, phone="13977400002"),
        patient(unique_org(), "G-4", family="韦", given="明辉", born="1971-03-05", rid=rid, district="万秀区"),
    ]
    golden_id = None
    for body in writes:
        with unit_of_work(engine) as conn:
            record = service.create(conn, body).version.resource()
        golden_id = golden_id or _golden_of(record)
        assert _golden_of(record) == golden_id
        assert mpi.rebuild_pending(engine) == 1
        with unit_of_work(engine) as conn:
            golden = service.repository.read(conn, "Patient", golden_id)
            rebuilt = stored_index(conn, golden.res_pk)
            assert full_reindex(conn, service.repository, "Patient", golden_id) == rebuilt
    with unit_of_work(engine, write=False) as conn:
        golden_body = service.repository.read(conn, "Patient", golden_id).resource()
    assert len([link for link in golden_body["link"] if link["type"] == "seealso"]) == 4
    assert golden_body["name"][0]["given"] == ["明辉"]
    assert golden_body["address"][0]["district"] == "万秀区"
