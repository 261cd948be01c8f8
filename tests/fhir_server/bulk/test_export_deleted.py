"""$export with _since: changed resources in their current version, deletions in the manifest's deleted array."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from fhir_server.api.app import create_app
from fhir_server.bulk.export import Exporter, ExportFile
from fhir_server.validation import validate_resource
from tests.conftest import auth_headers
from tests.fhir_server.bulk.helpers import dataset, download, kickoff, wait_complete

FHIR = {"Content-Type": "application/fhir+json"}


def _instant(moment: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment)) + f".{int(moment % 1 * 1e6):06d}Z"


def _ids(client: TestClient, query: str) -> list[str]:
    bundle = client.get(f"/fhir/{query}").json()
    return [e["resource"]["id"] for e in bundle.get("entry", [])]


@pytest.fixture(scope="module")
def world(backend, tmp_path_factory) -> Iterator[dict[str, Any]]:  # type: ignore[no-untyped-def]
    """Three residents (陈 and 黄 in the Group), changed and deleted after ``since``; one deletion before it."""
    settings = backend.settings.model_copy(
        update={"export_dir": tmp_path_factory.mktemp("exports"), "background": "off"}
    )
    with TestClient(
        create_app(settings, backend.engine), base_url="http://testserver", headers=auth_headers(backend)
    ) as client:
        assert client.post("/fhir", json=dataset("deleted")).status_code == 200
        chen, li, huang = (_ids(client, f"Patient?family={name}")[0] for name in ("陈", "李", "黄"))
        early = _ids(client, f"Observation?subject=Patient/{chen}")[0]
        assert client.delete(f"/fhir/Observation/{early}").status_code in (200, 204)
        time.sleep(0.01)
        since = _instant(time.time())
        time.sleep(0.01)
        patient = client.get(f"/fhir/Patient/{chen}").json()
        assert client.put(f"/fhir/Patient/{chen}", json={**patient, "gender": "male"}, headers=FHIR).status_code == 200
        deleted = {
            "huang_obs": f"Observation/{_ids(client, f'Observation?subject=Patient/{huang}')[0]}",
            "li_condition": f"Condition/{_ids(client, f'Condition?subject=Patient/{li}')[0]}",
            "li": f"Patient/{li}",
            "organization": f"Organization/{_ids(client, 'Organization?_tag=urn:test:bulk|deleted')[0]}",
        }
        for url in deleted.values():
            assert client.delete(f"/fhir/{url}").status_code in (200, 204)
        group = _ids(client, "Group?_tag=urn:test:bulk|deleted")[0]
        yield {
            "client": client,
            "engine": backend.engine,
            "settings": settings,
            "since": since,
            "chen": chen,
            "early": f"Observation/{early}",
            "group": group,
            **deleted,
        }


def _deleted(client: TestClient, manifest: dict[str, Any]) -> list[str]:
    """``Type/id`` of every DELETE entry of the deleted files; each line checked as a transaction Bundle."""
    found = []
    for item in manifest["deleted"]:
        assert item["type"] == "Bundle"
        response = client.get("/fhir" + item["url"].split("/fhir", 1)[1])
        assert response.status_code == 200, response.text
        lines = [orjson.loads(line) for line in response.content.splitlines()]
        assert len(lines) == item["count"]
        for bundle in lines:
            assert validate_resource(bundle) == "Bundle"
            assert bundle["type"] == "transaction" and bundle["meta"]["lastUpdated"]
            for entry in bundle["entry"]:
                assert entry["request"]["method"] == "DELETE" and "resource" not in entry
                found.append(entry["request"]["url"])
    return found


def _export(world: dict[str, Any], path: str, **params: str) -> dict[str, Any]:
    """Kick off and run the job here (no background worker in this module), then read the manifest."""
    client = world["client"]
    status = kickoff(client, path, **params)
    registry = client.app.state.context.service.registry
    assert Exporter(world["engine"], world["settings"], registry).run_next() is not None
    return wait_complete(client, status, timeout=5)


def test_system_export_since_lists_deletions_and_current_versions(world) -> None:
    client = world["client"]
    manifest = _export(world, "/fhir/$export", _since=world["since"])
    assert sorted(_deleted(client, manifest)) == sorted(
        [world["huang_obs"], world["li_condition"], world["li"], world["organization"]]
    )
    assert world["early"] not in _deleted(client, manifest)  # deleted before _since
    files = download(client, manifest)
    assert [p["id"] for p in files["Patient"]] == [world["chen"]]  # the one changed since
    assert files["Patient"][0]["gender"] == "male" and files["Patient"][0]["meta"]["versionId"] == "2"
    assert all(f["type"] != "Bundle" for f in manifest["output"])


def test_type_narrows_the_deletions(world) -> None:
    client = world["client"]
    manifest = _export(world, "/fhir/$export", _since=world["since"], _type="Observation,Patient")
    assert sorted(_deleted(client, manifest)) == sorted([world["huang_obs"], world["li"]])


def test_patient_and_group_level_list_deletions_of_their_compartments(world) -> None:
    client = world["client"]
    everyone = _export(world, "/fhir/Patient/$export", _since=world["since"])
    assert sorted(_deleted(client, everyone)) == sorted([world["huang_obs"], world["li_condition"], world["li"]])
    group = _export(world, f"/fhir/Group/{world['group']}/$export", _since=world["since"])
    assert _deleted(client, group) == [world["huang_obs"]]  # 李 is not a member: neither the Patient nor its Condition


def test_without_since_the_deleted_array_is_empty(world) -> None:
    manifest = _export(world, "/fhir/$export", _type="Observation")
    assert manifest["deleted"] == []
    assert {o["type"] for o in manifest["output"]} == {"Observation"}


def test_a_later_since_lists_nothing(world) -> None:
    time.sleep(0.01)
    manifest = _export(world, "/fhir/$export", _since=_instant(time.time()))
    assert manifest["deleted"] == [] and manifest["output"] == []


class StopAtFirstDeletedFile(Exporter):
    """Asked to stop (as on shutdown) once it has recorded its first file of the deleted array."""

    def _record(self, job_id: str, owner: str, done: ExportFile) -> None:
        super()._record(job_id, owner, done)
        if done.deleted:
            self.stopping.set()


def test_the_deleted_files_resume_after_a_stopped_worker(world, backend, tmp_path) -> None:
    client = world["client"]
    settings = backend.settings.model_copy(
        update={"export_dir": tmp_path, "export_file_max_resources": 1, "background": "off"}
    )
    registry = client.app.state.context.service.registry  # type: ignore[attr-defined]
    with TestClient(
        create_app(settings, backend.engine), base_url="http://testserver", headers=auth_headers(backend)
    ) as quiet:
        status = kickoff(quiet, "/fhir/$export", _since=world["since"], _type="Observation,Condition,Patient")
        first = StopAtFirstDeletedFile(backend.engine, settings, registry, chunk=1)
        assert first.run_next() is not None
        assert quiet.get(f"/fhir{status}").status_code == 202
        assert Exporter(backend.engine, settings, registry, chunk=1).run_next() is not None
        manifest = wait_complete(quiet, status, timeout=5)
        deleted = _deleted(quiet, manifest)
    assert len(manifest["deleted"]) == 3 and [d["count"] for d in manifest["deleted"]] == [1, 1, 1]
    assert sorted(deleted) == sorted([world["huang_obs"], world["li_condition"], world["li"]])
