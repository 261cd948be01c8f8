"""Synthea bundles in, ``$export`` out, re-imported into an empty server: the same resources per type."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from fhir_server.api.app import Context, create_app
from fhir_server.bulk.importer import Importer, import_files
from fhir_server.storage.engine import unit_of_work
from fhir_server.storage.tables import resources
from tests.conftest import Backend, auth_headers, corpus_dir
from tests.fhir_server.bulk.helpers import kickoff, stored_counts, wait_complete

BUNDLES = 12
"""The smallest Synthea patients: about 2,100 resources of 16 types (the whole corpus takes minutes)."""


def current_ids(backend: Backend) -> set[tuple[str, str]]:
    with unit_of_work(backend.engine, write=False) as conn:
        rows = conn.execute(select(resources.c.res_type, resources.c.res_id).where(resources.c.deleted.is_(False)))
        return {(r.res_type, r.res_id) for r in rows}


@pytest.mark.corpus
def test_synthea_export_reimports_into_an_empty_server(backend: Backend, tmp_path: Path) -> None:
    bundles = sorted((corpus_dir() / "synthea").glob("*.json"), key=lambda p: p.stat().st_size)[:BUNDLES]
    loaded = Importer(backend.engine, Context(backend.settings, backend.engine).service).run(bundles)
    assert loaded.rejected == 0, loaded.rejects
    assert loaded.accepted > 2000
    settings = backend.settings.model_copy(update={"export_dir": tmp_path / "exports", "background_poll_seconds": 0.1})
    downloaded = tmp_path / "downloaded"
    downloaded.mkdir()
    with TestClient(
        create_app(settings, backend.engine), base_url="http://testserver", headers=auth_headers(backend)
    ) as client:
        manifest = wait_complete(client, kickoff(client, "/fhir/$export"), timeout=120)
        for output in manifest["output"]:
            response = client.get("/fhir" + output["url"].split("/fhir", 1)[1])
            assert response.status_code == 200
            (downloaded / output["url"].rsplit("/", 1)[1]).write_bytes(response.content)
    assert sum(o["count"] for o in manifest["output"]) == sum(stored_counts(backend.engine).values())

    fresh = Backend(backend.name, tmp_path / "fresh")
    try:
        report = Importer(fresh.engine, Context(fresh.settings, fresh.engine).service).run(import_files(downloaded))
        assert report.rejected == 0, report.rejects[:5]
        assert stored_counts(fresh.engine) == stored_counts(backend.engine)
        assert current_ids(fresh) == current_ids(backend)
    finally:
        fresh.close()
