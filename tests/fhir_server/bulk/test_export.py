"""Bulk Data $export on both backends: system, Patient and Group level, parameters, errors, cancel, expiry."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fhir_server.api.app import create_app
from fhir_server.bulk.export import expire, job_dir
from fhir_server.bulk.tables import export_jobs
from fhir_server.storage.engine import unit_of_work
from tests.conftest import auth_headers
from tests.fhir_server.bulk.helpers import ASYNC, dataset, download, kickoff, stored_counts, wait_complete


@pytest.fixture(scope="module")
def app(backend, tmp_path_factory) -> Iterator[tuple[TestClient, Any]]:  # type: ignore[no-untyped-def]
    settings = backend.settings.model_copy(
        update={
            "export_dir": tmp_path_factory.mktemp("exports"),
            "export_file_max_resources": 4,
            "background_poll_seconds": 0.1,
        }
    )
    application = create_app(settings, backend.engine)
    with TestClient(application, base_url="http://testserver", headers=auth_headers(backend)) as client:
        result = client.post("/fhir", json=dataset("first"))
        assert result.status_code == 200, result.text
        yield client, settings


def ids_by_type(files: dict[str, list[dict[str, Any]]]) -> dict[str, set[str]]:
    return {res_type: {r["id"] for r in found} for res_type, found in files.items()}


def test_system_export_holds_every_current_resource_once(app, backend) -> None:
    client, _ = app
    status = kickoff(client, "/fhir/$export")
    manifest = wait_complete(client, status)
    assert manifest["requiresAccessToken"] is True
    assert manifest["request"].endswith("/fhir/$export") and manifest["error"] == []
    assert manifest["transactionTime"].endswith("Z")
    files = download(client, manifest)
    counts = Counter({t: len(found) for t, found in files.items()})
    assert counts == stored_counts(backend.engine)
    for found in files.values():
        assert len({r["id"] for r in found}) == len(found)
    observations = [o for o in manifest["output"] if o["type"] == "Observation"]
    assert len(observations) >= 3 and {o["count"] for o in observations} <= {1, 2, 3, 4}  # split at 4 per file
    some = files["Patient"][0]
    assert client.get(f"/fhir/Patient/{some['id']}").json() == some  # the stored JSON, as a read returns it


def test_type_since_and_type_filter(app) -> None:
    client, _ = app
    mark = time.time()
    time.sleep(0.01)
    client.post("/fhir", json=dataset("second"))
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(mark)) + f".{int(mark % 1 * 1e6):06d}Z"
    files = download(client, wait_complete(client, kickoff(client, "/fhir/$export", _type="Patient,Group")))
    assert set(files) == {"Patient", "Group"}
    recent = download(client, wait_complete(client, kickoff(client, "/fhir/$export", _since=since)))
    assert len(recent["Patient"]) == 3 and all(
        r["meta"]["tag"][0]["code"] == "second" for t in recent.values() for r in t
    )
    filtered = download(
        client,
        wait_complete(
            client,
            kickoff(
                client,
                "/fhir/$export",
                _type="Observation,Patient",
                _typeFilter="Observation?value-quantity=gt61&_tag=urn:test:bulk|first",
            ),
        ),
    )
    assert len(filtered["Observation"]) == 1 + 2  # 62 of the second resident, 62 and 63 of the third
    assert len(filtered["Patient"]) == 6  # no filter for Patient: all of them


def test_patient_and_group_level(app) -> None:
    client, _ = app
    everyone = download(client, wait_complete(client, kickoff(client, "/fhir/Patient/$export")))
    assert "Organization" not in everyone and {"Patient", "Observation", "Condition", "Group"} <= set(everyone)
    group = client.get("/fhir/Group", params={"_tag": "urn:test:bulk|first"}).json()["entry"][0]["resource"]
    members = {m["entity"]["reference"].split("/")[1] for m in group["member"]}
    files = download(client, wait_complete(client, kickoff(client, f"/fhir/Group/{group['id']}/$export")))
    assert {p["id"] for p in files["Patient"]} == members
    assert {o["subject"]["reference"].split("/")[1] for o in files["Observation"]} == members
    assert len(files["Observation"]) == 2 + 4
    assert client.get("/fhir/Group/nope/$export", headers=ASYNC).status_code == 404


@pytest.mark.parametrize(
    ("params", "headers", "hint"),
    [
        ({}, {"Accept": "application/fhir+json"}, "respond-async"),
        ({"_type": "Nonsense"}, ASYNC, "_type"),
        ({"_outputFormat": "application/fhir+xml"}, ASYNC, "_outputFormat"),
        ({"_typeFilter": "Observation?nonsense=1"}, ASYNC, "nonsense"),
        ({"_typeFilter": "code=1"}, ASYNC, "Type?params"),
        ({"_since": "yesterday"}, ASYNC, "_since"),
        ({"_elements": "id"}, ASYNC, "_elements"),
        ({"whatever": "1"}, ASYNC, "whatever"),
    ],
)
def test_bad_kickoff_requests_are_refused(app, params, headers, hint) -> None:
    client, _ = app
    response = client.get("/fhir/$export", params=params, headers=headers)
    assert response.status_code == 400, response.text
    assert hint in response.text
    patient_level = client.get("/fhir/Patient/$export", params={"_type": "Organization"}, headers=ASYNC)
    assert patient_level.status_code == 400 and "Patient compartment" in patient_level.text


def test_post_kickoff_takes_parameters(app) -> None:
    client, _ = app
    body = {"resourceType": "Parameters", "parameter": [{"name": "_type", "valueString": "Organization"}]}
    response = client.post("/fhir/$export", json=body, headers=ASYNC)
    assert response.status_code == 202, response.text
    manifest = wait_complete(client, response.headers["Content-Location"].split("/fhir", 1)[1])
    assert {o["type"] for o in manifest["output"]} == {"Organization"}


def test_cancel_deletes_the_job_and_its_files(app) -> None:
    client, settings = app
    status = kickoff(client, "/fhir/$export")
    wait_complete(client, status)
    job_id = status.rsplit("/", 1)[1]
    assert any(job_dir(settings, job_id).iterdir())
    assert client.delete(f"/fhir{status}").status_code == 202
    assert client.get(f"/fhir{status}").status_code == 404
    assert not job_dir(settings, job_id).exists()
    assert client.delete(f"/fhir{status}").status_code == 404
    assert client.get(f"/fhir/$export-status/{uuid.uuid4()}").status_code == 404


def test_files_expire(app, backend) -> None:
    client, settings = app
    manifest = wait_complete(client, kickoff(client, "/fhir/$export", _type="Patient"))
    url = "/fhir" + manifest["output"][0]["url"].split("/fhir", 1)[1]
    job_id = url.split("/")[-2]
    assert client.get(url).status_code == 200
    short = settings.model_copy(update={"export_ttl_seconds": 0})
    expired = expire(backend.engine, short)
    assert expired == 0  # expiry is fixed when the job completes: an hour here
    with unit_of_work(backend.engine) as conn:
        conn.execute(export_jobs.update().where(export_jobs.c.id == job_id).values(expires_at=1))
    assert client.get(f"/fhir/$export-status/{job_id}").status_code == 404  # past its time, even before the sweep
    assert client.get(url).status_code == 404
    assert expire(backend.engine, settings) == 1
    assert not job_dir(settings, job_id).exists()
    assert "expired" in client.get(f"/fhir/$export-status/{job_id}").text


def test_a_complete_job_with_a_missing_file_is_not_reported_complete(app) -> None:
    client, settings = app
    status = kickoff(client, "/fhir/$export", _type="Observation")
    manifest = wait_complete(client, status)
    job_id = status.rsplit("/", 1)[1]
    name = manifest["output"][0]["url"].rsplit("/", 1)[1]
    (job_dir(settings, job_id) / name).unlink()
    response = client.get(f"/fhir{status}")
    assert response.status_code == 500 and name in response.text
