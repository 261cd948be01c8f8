"""The exporter's chunks: file boundaries inside a chunk, chunks ending exactly at a type's end, skipped types."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fhir_server.api.app import create_app
from fhir_server.bulk.export import Exporter
from fhir_server.bulk.scope import present_types
from fhir_server.storage.engine import unit_of_work
from tests.conftest import auth_headers
from tests.fhir_server.bulk.helpers import dataset, download, kickoff, stored_counts, wait_complete


@pytest.fixture(scope="module")
def api(backend, tmp_path_factory) -> Iterator[tuple[TestClient, Any]]:  # type: ignore[no-untyped-def]
    settings = backend.settings.model_copy(
        update={"export_dir": tmp_path_factory.mktemp("exports"), "export_file_max_resources": 3, "background": "off"}
    )
    with TestClient(
        create_app(settings, backend.engine), base_url="http://testserver", headers=auth_headers(backend)
    ) as client:
        for n in range(2):
            assert client.post("/fhir", json=dataset(f"stream-{n}")).status_code == 200
        yield client, settings


@pytest.mark.parametrize("chunk", [1, 2, 5, 9, 10_000])
def test_every_resource_is_written_once_whatever_the_chunk(api, backend, chunk) -> None:
    client, settings = api
    registry = client.app.state.context.service.registry  # type: ignore[attr-defined]
    status = kickoff(client, "/fhir/$export")
    assert Exporter(backend.engine, settings, registry, chunk=chunk).run_next() is not None
    manifest = wait_complete(client, status, timeout=5)
    assert all(output["count"] <= 3 for output in manifest["output"])
    files = download(client, manifest)
    assert Counter({t: len(found) for t, found in files.items()}) == stored_counts(backend.engine)
    for found in files.values():
        assert len({r["id"] for r in found}) == len(found), "a resource was exported twice"


def test_present_types_are_the_stored_ones(api, backend) -> None:
    with unit_of_work(backend.engine, write=False) as conn:
        present = present_types(conn)
    assert set(stored_counts(backend.engine)) <= present
    assert "Observation" in present and "Medication" not in present
