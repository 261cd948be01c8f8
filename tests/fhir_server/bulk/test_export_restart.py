"""Export jobs survive their worker: a stopped worker gives the job back, a crashed one's lease runs out."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fhir_server.api.app import create_app
from fhir_server.bulk.export import Exporter, ExportFile, job_dir
from tests.conftest import auth_headers
from tests.fhir_server.bulk.helpers import dataset, download, kickoff, stored_counts, wait_complete


class StoppingExporter(Exporter):
    """Asked to stop (as on shutdown) once it has recorded ``files`` files."""

    def __init__(self, *args: Any, files: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.left = files

    def _record(self, job_id: str, owner: str, done: ExportFile) -> None:
        super()._record(job_id, owner, done)
        self.left -= 1
        if self.left == 0:
            self.stopping.set()


class CrashingExporter(Exporter):
    """Dies without a word (no release, a temporary file left behind) after its first recorded file."""

    def _record(self, job_id: str, owner: str, done: ExportFile) -> None:
        super()._record(job_id, owner, done)
        (job_dir(self.settings, job_id) / ".Patient.009.ndjson.partial").write_bytes(b'{"resourceType":')
        raise KeyboardInterrupt


@pytest.fixture(scope="module")
def api(backend, tmp_path_factory) -> Iterator[tuple[TestClient, Any]]:  # type: ignore[no-untyped-def]
    settings = backend.settings.model_copy(
        update={"export_dir": tmp_path_factory.mktemp("exports"), "export_file_max_resources": 5, "background": "off"}
    )
    app = create_app(settings, backend.engine)
    with TestClient(app, base_url="http://testserver", headers=auth_headers(backend)) as client:
        for n in range(3):
            assert client.post("/fhir", json=dataset(f"restart-{n}")).status_code == 200
        yield client, settings


def run_to_completion(client: TestClient, exporter: Exporter, status: str) -> dict[str, Any]:
    assert exporter.run_next() is not None
    return wait_complete(client, status, timeout=5)


def assert_whole(client: TestClient, backend: Any, manifest: dict[str, Any]) -> None:
    files = download(client, manifest)
    assert Counter({t: len(found) for t, found in files.items()}) == stored_counts(backend.engine)
    for found in files.values():
        assert len({r["id"] for r in found}) == len(found), "a resource was exported twice"


def test_a_stopped_worker_gives_the_job_back(api, backend) -> None:
    client, settings = api
    registry = client.app.state.context.service.registry  # type: ignore[attr-defined]
    status = kickoff(client, "/fhir/$export")
    first = StoppingExporter(backend.engine, settings, registry, chunk=3, files=2)
    assert first.run_next() is not None
    waiting = client.get(f"/fhir{status}")
    assert waiting.status_code == 202 and "resources written" in waiting.headers["X-Progress"]
    second = Exporter(backend.engine, settings, registry, chunk=3)
    manifest = run_to_completion(client, second, status)
    assert_whole(client, backend, manifest)


def test_a_crashed_worker_is_taken_over_when_its_lease_runs_out(api, backend) -> None:
    client, settings = api
    registry = client.app.state.context.service.registry  # type: ignore[attr-defined]
    status = kickoff(client, "/fhir/$export")
    crashing = CrashingExporter(backend.engine, settings, registry, chunk=3, lease_seconds=0.3)
    with pytest.raises(KeyboardInterrupt):
        crashing.run_next()
    successor = Exporter(backend.engine, settings, registry, chunk=3)
    assert successor.claimable() == []  # the dead worker still holds its lease
    time.sleep(0.4)
    manifest = run_to_completion(client, successor, status)
    assert_whole(client, backend, manifest)
    job_id = status.rsplit("/", 1)[1]
    assert not any(p.name.endswith(".partial") for p in job_dir(settings, job_id).iterdir())


def test_a_job_that_keeps_failing_ends_in_error(api, backend) -> None:
    client, settings = api
    registry = client.app.state.context.service.registry  # type: ignore[attr-defined]
    group = client.get("/fhir/Group", params={"_tag": "urn:test:bulk|restart-0"}).json()["entry"][0]["resource"]
    status = kickoff(client, f"/fhir/Group/{group['id']}/$export")
    assert client.delete(f"/fhir/Group/{group['id']}").status_code == 200  # the Group goes before the job runs
    worker = Exporter(backend.engine, settings, registry)
    for _ in range(3):
        assert client.get(f"/fhir{status}").status_code == 202
        assert worker.run_next() is not None
    failed = client.get(f"/fhir{status}")
    assert failed.status_code == 500 and "deleted" in failed.text
    assert worker.run_next() is None
