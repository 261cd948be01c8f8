"""HIE_AUTH_DISABLED, and the ``hie auth`` commands."""

from __future__ import annotations

import json
import logging

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from fhir_server.api.app import create_app
from fhir_server.cli import app as hie
from tests.fhir_server.auth.conftest import ClientKey, bearer


def test_disabled_auth_runs_every_request_unrestricted_and_says_so(backend, caplog):
    settings = backend.settings.model_copy(update={"auth_disabled": True})
    with caplog.at_level(logging.WARNING, logger="hie.auth"):
        app = create_app(settings, backend.engine)
    assert any("AUTHENTICATION IS DISABLED" in record.getMessage() for record in caplog.records)
    with TestClient(app, base_url="http://testserver") as client:
        assert client.post("/fhir/Patient", json={"resourceType": "Patient"}).status_code == 201
        assert client.get("/fhir/Patient?_count=1").status_code == 200
        capability = client.get("/fhir/metadata").json()
    assert "AUTHENTICATION IS DISABLED" in capability["description"]
    assert "AUTHENTICATION IS DISABLED" in capability["rest"][0]["security"]["description"]


def test_auth_is_on_by_default(backend):
    assert backend.settings.auth_disabled is False


@pytest.fixture()
def runner(backend, monkeypatch) -> CliRunner:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("HIE_DATABASE_URL", backend.url)
    return CliRunner()


def _value(output: str, label: str) -> str:
    return next(line.split(": ", 1)[1] for line in output.splitlines() if line.startswith(f"{label}: "))


def test_client_create_with_secret_then_token(runner, anonymous):
    created = runner.invoke(
        hie,
        [
            "auth",
            "client",
            "create",
            "--name",
            "HIS",
            "--organization",
            "Organization/wz-7",
            "--scope",
            "system/Patient.rs",
        ],
    )
    assert created.exit_code == 0, created.output
    client_id, secret = _value(created.output, "client_id"), _value(created.output, "client_secret")
    form = {"grant_type": "client_credentials", "scope": "system/Patient.read"}
    assert anonymous.post("/auth/token", data=form, auth=(client_id, secret)).status_code == 200
    token = runner.invoke(hie, ["auth", "token", "--client", client_id])
    assert token.exit_code == 0, token.output
    assert anonymous.get("/fhir/Patient?_count=1", headers=bearer(token.output.strip())).status_code == 200
    narrower = runner.invoke(hie, ["auth", "token", "--client", client_id, "--scope", "system/Observation.rs"])
    assert narrower.exit_code == 2 and "None of the scopes" in narrower.output


def test_client_create_with_jwks_file_has_no_secret(runner, tmp_path, anonymous):
    key = ClientKey("ES384")
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(key.jwks))
    created = runner.invoke(
        hie, ["auth", "client", "create", "--name", "HIS", "--scope", "system/*.rs", "--jwks", str(path)]
    )
    assert created.exit_code == 0, created.output
    assert "client_secret" not in created.output
    client_id = _value(created.output, "client_id")
    from tests.fhir_server.auth.conftest import assertion_form

    assert anonymous.post("/auth/token", data=assertion_form(key.assertion(client_id))).status_code == 200
    listed = runner.invoke(hie, ["auth", "client", "list"])
    assert client_id in listed.output and "private_key_jwt" in listed.output
    assert runner.invoke(hie, ["auth", "client", "deactivate", client_id]).exit_code == 0
    assert anonymous.post("/auth/token", data=assertion_form(key.assertion(client_id))).status_code == 401


@pytest.mark.parametrize(
    "args",
    [
        ["--organization", "wz-7", "--scope", "system/*.rs"],
        ["--scope", "system/Patient.zz"],
        ["--scope", "patient/Patient.read"],
        ["--scope", ""],
        ["--organization", "Organization/wz-7", "--scope", "system/*.rs", "--exchange"],
        ["--scope", "system/*.rs", "--jwks-url", "ftp://x"],
    ],
)
def test_client_create_refuses_bad_input(runner, args):
    result = runner.invoke(hie, ["auth", "client", "create", "--name", "bad", *args])
    assert result.exit_code == 2 and "error:" in result.output


def test_token_for_an_unknown_client(runner):
    result = runner.invoke(hie, ["auth", "token", "--client", "nobody"])
    assert result.exit_code == 2 and "not registered" in result.output


def test_demo_client_is_created_once(runner, anonymous):
    first = runner.invoke(hie, ["auth", "demo-client"])
    assert first.exit_code == 0, first.output
    assert "secret (shown once)" in first.output and "curl" in first.output
    second = runner.invoke(hie, ["auth", "demo-client"])
    assert second.exit_code == 0 and "secret" not in second.output
    client_id = first.output.split("Demo client: ", 1)[1].split()[0]
    assert client_id in second.output
    secret = first.output.split("secret (shown once): ", 1)[1].split()[0]
    form = {"grant_type": "client_credentials", "scope": "system/*.cruds"}
    token = anonymous.post("/auth/token", data=form, auth=(client_id, secret)).json()["access_token"]
    assert anonymous.get("/fhir/Patient?_count=1", headers=bearer(token)).status_code == 200
