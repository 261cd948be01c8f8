"""A resident's app: a client registered for one Patient, granted ``patient/`` scopes at ``/auth/token``.

It reads its resident's record only (the Patient compartment and the Patient itself), that resident's
``$access-log``, and writes nothing.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from fhir_server.auth.cli import create_client
from fhir_server.auth.clients import RegistryError
from fhir_server.auth.tokens import TokenVerifier
from fhir_server.cli import app as hie
from tests.conftest import Backend
from tests.fhir_server.auth.conftest import bearer, scoped

INSTITUTION = "Organization/wz-hosp-1"


def basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def resident_app(backend: Backend, patient: str, scope: str = "patient/*.rs") -> tuple[str, str]:
    client, secret = create_client(backend.engine, name="resident app", scopes=scope, patient=patient)
    assert client.patient == patient and secret
    return client.client_id, secret


def token(anonymous: TestClient, client_id: str, secret: str, scope: str | None = None) -> Any:
    form = {"grant_type": "client_credentials", **({"scope": scope} if scope is not None else {})}
    return anonymous.post("/auth/token", data=form, headers=basic(client_id, secret))


@pytest.fixture(scope="module")
def record(anonymous: TestClient, backend: Backend) -> dict[str, str]:
    """Two residents, each with an Observation, written by one institution."""
    writer = scoped(backend, "system/*.cruds", organization=INSTITUTION)
    ids: dict[str, str] = {}
    for name in ("mine", "other"):
        response = anonymous.post("/fhir/Patient", json={"resourceType": "Patient", "gender": "female"}, headers=writer)
        assert response.status_code == 201, response.text
        ids[name] = response.json()["id"]
        observation = {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "blood pressure"},
            "subject": {"reference": f"Patient/{ids[name]}"},
        }
        response = anonymous.post("/fhir/Observation", json=observation, headers=writer)
        assert response.status_code == 201, response.text
        ids[f"{name}_obs"] = response.json()["id"]
    return ids


@pytest.fixture(scope="module")
def app_headers(anonymous: TestClient, backend: Backend, record: dict[str, str]) -> dict[str, str]:
    client_id, secret = resident_app(backend, f"Patient/{record['mine']}")
    response = token(anonymous, client_id, secret)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["patient"] == record["mine"] and body["scope"] == "patient/*.rs"
    return bearer(body["access_token"])


def test_the_token_carries_the_patient_claim(anonymous, backend, record):
    client_id, secret = resident_app(
        backend, f"Patient/{record['mine']}", "patient/Observation.read patient/Patient.rs"
    )
    response = token(anonymous, client_id, secret, "patient/Observation.read")
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "patient/Observation.read"
    claims = TokenVerifier(backend.settings, anonymous.app.state.authority.keys).verify(response.json()["access_token"])
    assert claims.patient == f"Patient/{record['mine']}" and claims.organization is None


def test_reads_its_own_patient_and_observations(anonymous, app_headers, record):
    response = anonymous.get(f"/fhir/Patient/{record['mine']}", headers=app_headers)
    assert response.status_code == 200, response.text
    response = anonymous.get(f"/fhir/Observation/{record['mine_obs']}", headers=app_headers)
    assert response.status_code == 200, response.text
    bundle = anonymous.get("/fhir/Observation", params={"_total": "accurate"}, headers=app_headers).json()
    assert [e["resource"]["id"] for e in bundle.get("entry", [])] == [record["mine_obs"]]
    assert bundle["total"] == 1
    bundle = anonymous.get("/fhir/Patient", params={"_total": "accurate"}, headers=app_headers).json()
    assert [e["resource"]["id"] for e in bundle.get("entry", [])] == [record["mine"]] and bundle["total"] == 1


def test_another_residents_record_is_not_found(anonymous, app_headers, record):
    assert anonymous.get(f"/fhir/Patient/{record['other']}", headers=app_headers).status_code == 404
    assert anonymous.get(f"/fhir/Observation/{record['other_obs']}", headers=app_headers).status_code == 404
    params = {"subject": f"Patient/{record['other']}", "_total": "accurate"}
    bundle = anonymous.get("/fhir/Observation", params=params, headers=app_headers).json()
    assert bundle.get("entry", []) == [] and bundle["total"] == 0
    compartment = anonymous.get(f"/fhir/Patient/{record['other']}/Observation", headers=app_headers).json()
    assert compartment.get("entry", []) == []
    everything = anonymous.get(f"/fhir/Patient/{record['other']}/$everything", headers=app_headers)
    assert everything.status_code == 404 or everything.json().get("entry", []) == [], everything.text
    mine = anonymous.get(f"/fhir/Patient/{record['mine']}/$everything", headers=app_headers).json()
    found = {(e["resource"]["resourceType"], e["resource"]["id"]) for e in mine["entry"]}
    assert {("Patient", record["mine"]), ("Observation", record["mine_obs"])} <= found
    assert {t for t, _ in found} <= {"Patient", "Observation", "Provenance"}, found  # the write stamps
    assert not {record["other"], record["other_obs"]} & {i for _, i in found}


def test_its_access_log_lists_the_institutions_read(anonymous, backend, app_headers, record):
    reader = scoped(backend, "system/*.rs", organization=INSTITUTION)
    assert anonymous.get(f"/fhir/Patient/{record['mine']}", headers=reader).status_code == 200
    anonymous.app.state.audit.flush()
    response = anonymous.get(f"/fhir/Patient/{record['mine']}/$access-log", headers=app_headers)
    assert response.status_code == 200, response.text
    events = [entry["resource"] for entry in response.json().get("entry", [])]
    reads = [e for e in events if INSTITUTION in str(e["agent"]) and e.get("action") == "R"]
    assert reads, events
    assert all(f"Patient/{record['other']}" not in str(event) for event in events)


def test_another_residents_access_log_is_forbidden(anonymous, app_headers, record):
    response = anonymous.get(f"/fhir/Patient/{record['other']}/$access-log", headers=app_headers)
    assert response.status_code == 403, response.text
    assert response.json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/fhir/Observation", {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}),
        ("PUT", "/fhir/Patient/{mine}", {"resourceType": "Patient", "id": "{mine}"}),
        ("DELETE", "/fhir/Observation/{mine_obs}", None),
    ],
)
def test_a_residents_app_cannot_write(anonymous, app_headers, record, method, path, body):
    url = path.format(**record)
    if body is not None and "id" in body:
        body = {**body, "id": record["mine"]}
    response = anonymous.request(method, url, json=body, headers=app_headers)
    assert response.status_code == 403, response.text
    assert "read and search only" in response.json()["issue"][0]["diagnostics"]


def test_patient_scopes_are_refused_to_a_client_without_a_patient(anonymous, backend):
    with pytest.raises(RegistryError, match="--patient"):
        create_client(backend.engine, name="no resident", scopes="patient/*.rs")
    client, secret = create_client(backend.engine, name="institution", scopes="system/*.rs", organization=INSTITUTION)
    assert secret
    for scope in ("patient/*.rs", "patient/Patient.read"):
        response = token(anonymous, client.client_id, secret, scope)
        assert response.status_code == 400 and response.json()["error"] == "invalid_scope", response.text


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"patient": "Patient/../x", "scopes": "patient/*.rs"}, "reference like Patient/123"),
        ({"patient": "Patient/p1", "scopes": "patient/*.cruds"}, "read and search only"),
        ({"patient": "Patient/p1", "scopes": "patient/*.write"}, "read and search only"),
        ({"patient": "Patient/p1", "scopes": "system/*.rs"}, "only patient/ scopes"),
        ({"patient": "Patient/p1", "scopes": "patient/*.rs", "organization": INSTITUTION}, "no organization"),
    ],
)
def test_bad_resident_registrations_are_refused(backend, kwargs, words):
    with pytest.raises(RegistryError, match=words):
        create_client(backend.engine, name="bad", **kwargs)


def test_cli_registers_a_residents_app(backend, monkeypatch, anonymous, record):
    monkeypatch.setenv("HIE_DATABASE_URL", backend.url)
    runner = CliRunner()
    patient = f"Patient/{record['mine']}"
    args = ["auth", "client", "create", "--name", "app", "--patient", patient, "--scope", "patient/*.rs"]
    created = runner.invoke(hie, args)
    assert created.exit_code == 0, created.output
    assert f"patient: {patient}" in created.output
    client_id = next(line.split(": ", 1)[1] for line in created.output.splitlines() if line.startswith("client_id: "))
    printed = runner.invoke(hie, ["auth", "token", "--client", client_id])
    assert printed.exit_code == 0, printed.output
    headers = bearer(printed.output.strip().splitlines()[-1])
    assert anonymous.get(f"/fhir/Patient/{record['mine']}", headers=headers).status_code == 200
    assert anonymous.get(f"/fhir/Patient/{record['other']}", headers=headers).status_code == 404
    refused = runner.invoke(hie, ["auth", "client", "create", "--name", "x", "--scope", "patient/*.rs"])
    assert refused.exit_code == 2 and "--patient" in refused.output
