"""POST /auth/token: SMART Backend Services private_key_jwt (RS384, ES384), client_secret_basic, OAuth errors."""

from __future__ import annotations

import base64
import time

import jwt
import pytest

from fhir_server.auth.cli import create_client
from tests.conftest import Backend
from tests.fhir_server.auth.conftest import ClientKey, assertion_form, bearer


def register(backend: Backend, scopes: str = "system/*.rs", **options):  # type: ignore[no-untyped-def]
    return create_client(backend.engine, name="token test", scopes=scopes, organization="Organization/wz-1", **options)


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_private_key_jwt_gets_a_token_that_reads(anonymous, backend, alg):
    key = ClientKey(alg)
    client, secret = register(backend, jwks=key.jwks)
    assert secret is None
    response = anonymous.post("/auth/token", data=assertion_form(key.assertion(client.client_id)))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 300 and body["scope"] == "system/*.rs"
    assert response.headers["cache-control"] == "no-store"
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["client_id"] == client.client_id and claims["organization"] == "Organization/wz-1"
    assert claims["exp"] - claims["iat"] == 300
    assert anonymous.get("/fhir/Patient", headers=bearer(body["access_token"])).status_code == 200


def test_granted_scopes_are_requested_cut_to_registered(anonymous, backend):
    key = ClientKey("ES384")
    client, _ = register(backend, "system/Patient.rs system/Observation.read", jwks=key.jwks)
    form = assertion_form(key.assertion(client.client_id), "system/Patient.cruds system/Observation.r system/Group.r")
    body = anonymous.post("/auth/token", data=form).json()
    assert body["scope"].split() == ["system/Patient.rs", "system/Observation.r"]


def test_no_scope_parameter_grants_the_registered_scopes(anonymous, backend):
    key = ClientKey("ES384")
    client, _ = register(backend, "system/Patient.rs", jwks=key.jwks)
    body = anonymous.post("/auth/token", data=assertion_form(key.assertion(client.client_id), None)).json()
    assert body["scope"] == "system/Patient.rs"


def basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def test_client_secret_basic(anonymous, backend):
    client, secret = register(backend)
    assert secret
    form = {"grant_type": "client_credentials", "scope": "system/Patient.read"}
    response = anonymous.post("/auth/token", data=form, headers=basic(client.client_id, secret))
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "system/Patient.read"


def test_wrong_secret_is_invalid_client(anonymous, backend):
    client, secret = register(backend)
    form = {"grant_type": "client_credentials", "scope": "system/Patient.read"}
    response = anonymous.post("/auth/token", data=form, headers=basic(client.client_id, secret + "x"))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert response.headers["www-authenticate"].startswith("Basic")


def test_malformed_basic_credentials(anonymous):
    form = {"grant_type": "client_credentials"}
    response = anonymous.post("/auth/token", data=form, headers={"Authorization": "Basic %%%"})
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"


def test_no_client_authentication(anonymous):
    response = anonymous.post("/auth/token", data={"grant_type": "client_credentials"})
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"


def oauth_error(response) -> str:  # type: ignore[no-untyped-def]
    return response.json()["error"]


def test_assertion_signed_by_another_key(anonymous, backend):
    registered, other = ClientKey("RS384"), ClientKey("RS384", kid=None)
    client, _ = register(backend, jwks=registered.jwks)
    other.kid = registered.kid
    response = anonymous.post("/auth/token", data=assertion_form(other.assertion(client.client_id)))
    assert response.status_code == 401 and oauth_error(response) == "invalid_client"
    assert "signature" in response.json()["error_description"]


def test_assertion_for_another_audience(anonymous, backend):
    key = ClientKey("ES384")
    client, _ = register(backend, jwks=key.jwks)
    assertion = key.assertion(client.client_id, aud="https://elsewhere.example/token")
    response = anonymous.post("/auth/token", data=assertion_form(assertion))
    assert response.status_code == 401 and oauth_error(response) == "invalid_client"
    assert "aud" in response.json()["error_description"]


def test_expired_assertion(anonymous, backend):
    key = ClientKey("ES384")
    client, _ = register(backend, jwks=key.jwks)
    assertion = key.assertion(client.client_id, exp=int(time.time()) - 60, iat=int(time.time()) - 120)
    response = anonymous.post("/auth/token", data=assertion_form(assertion))
    assert response.status_code == 400 and oauth_error(response) == "invalid_grant"


def test_assertion_expiring_too_far_ahead(anonymous, backend):
    key = ClientKey("ES384")
    client, _ = register(backend, jwks=key.jwks)
    assertion = key.assertion(client.client_id, exp=int(time.time()) + 3600)
    response = anonymous.post("/auth/token", data=assertion_form(assertion))
    assert response.status_code == 400 and oauth_error(response) == "invalid_grant"


def test_assertion_without_exp_or_jti(anonymous, backend):
    key = ClientKey("ES384")
    client, _ = register(backend, jwks=key.jwks)
    for missing in ("exp", "jti"):
        assertion = key.assertion(client.client_id, **{missing: None})
        response = anonymous.post("/auth/token", data=assertion_form(assertion))
        assert response.status_code == 401 and oauth_error(response) == "invalid_client", missing


def test_replayed_jti(anonymous, backend):
    key = ClientKey("RS384")
    client, _ = register(backend, jwks=key.jwks)
    assertion = key.assertion(client.client_id)
    assert anonymous.post("/auth/token", data=assertion_form(assertion)).status_code == 200
    again = anonymous.post("/auth/token", data=assertion_form(assertion))
    assert again.status_code == 400 and oauth_error(again) == "invalid_grant"
    assert "jti" in again.json()["error_description"]


def test_iss_and_sub_must_be_the_client(anonymous, backend):
    key = ClientKey("ES384")
    client, _ = register(backend, jwks=key.jwks)
    response = anonymous.post("/auth/token", data=assertion_form(key.assertion(client.client_id, sub="someone")))
    assert response.status_code == 401 and oauth_error(response) == "invalid_client"


def test_unknown_and_inactive_clients(anonymous, backend):
    from fhir_server.auth.clients import set_active
    from fhir_server.storage.engine import unit_of_work

    key = ClientKey("ES384")
    response = anonymous.post("/auth/token", data=assertion_form(key.assertion("no-such-client")))
    assert response.status_code == 401 and oauth_error(response) == "invalid_client"
    client, _ = register(backend, jwks=key.jwks)
    with unit_of_work(backend.engine) as conn:
        set_active(conn, client.client_id, False)
    response = anonymous.post("/auth/token", data=assertion_form(key.assertion(client.client_id)))
    assert response.status_code == 401 and oauth_error(response) == "invalid_client"


def test_assertion_algorithm_must_be_rs384_or_es384(anonymous, backend):
    key = ClientKey("ES384")
    client, _ = register(backend, jwks=key.jwks)
    hs = jwt.encode(
        {"iss": client.client_id, "sub": client.client_id, "aud": "x", "exp": int(time.time()) + 60, "jti": "1"},
        "a shared secret that is long enough for HS256",
        algorithm="HS256",
    )
    response = anonymous.post("/auth/token", data=assertion_form(hs))
    assert response.status_code == 401 and "RS384 or ES384" in response.json()["error_description"]


def test_malformed_assertion(anonymous):
    response = anonymous.post("/auth/token", data=assertion_form("not.a.jwt"))
    assert response.status_code == 401 and oauth_error(response) == "invalid_client"


def test_wrong_assertion_type(anonymous, backend):
    key = ClientKey("ES384")
    client, _ = register(backend, jwks=key.jwks)
    form = {**assertion_form(key.assertion(client.client_id)), "client_assertion_type": "urn:other"}
    response = anonymous.post("/auth/token", data=form)
    assert response.status_code == 401 and oauth_error(response) == "invalid_client"


@pytest.mark.parametrize("grant", ["authorization_code", "password", "urn:ietf:params:oauth:grant-type:jwt-bearer"])
def test_unsupported_grant_type(anonymous, grant):
    response = anonymous.post("/auth/token", data={"grant_type": grant})
    assert response.status_code == 400 and oauth_error(response) == "unsupported_grant_type"


def test_missing_grant_type_and_wrong_content_type(anonymous):
    assert oauth_error(anonymous.post("/auth/token", data={"scope": "x"})) == "invalid_request"
    response = anonymous.post("/auth/token", json={"grant_type": "client_credentials"})
    assert response.status_code == 400 and oauth_error(response) == "invalid_request"


def test_repeated_parameter(anonymous):
    response = anonymous.post(
        "/auth/token",
        content=b"grant_type=client_credentials&grant_type=client_credentials",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 400 and oauth_error(response) == "invalid_request"


@pytest.mark.parametrize(
    "scope",
    ["system/Group.read", "system/Patient.x", "patient/Patient.read", "system/NotAType.read", "system/Patient.sr"],
)
def test_invalid_scope(anonymous, backend, scope):
    key = ClientKey("ES384")
    client, _ = register(backend, "system/Patient.rs system/Observation.rs", jwks=key.jwks)
    response = anonymous.post("/auth/token", data=assertion_form(key.assertion(client.client_id), scope))
    assert response.status_code == 400 and oauth_error(response) == "invalid_scope", response.text


def test_smart_configuration(anonymous):
    config = anonymous.get("/.well-known/smart-configuration").json()
    assert config["token_endpoint"] == "http://testserver/auth/token"
    assert config["token_endpoint_auth_methods_supported"] == ["private_key_jwt", "client_secret_basic"]
    assert config["token_endpoint_auth_signing_alg_values_supported"] == ["RS384", "ES384"]
    assert config["grant_types_supported"] == ["client_credentials"]
    assert {"client-confidential-asymmetric", "permission-v1", "permission-v2"} <= set(config["capabilities"])
    keys = anonymous.get(config["jwks_uri"].removeprefix("http://testserver")).json()["keys"]
    assert keys and all("d" not in key for key in keys)


def test_capability_statement_declares_smart(anonymous):
    from fhir.resources.R4B.capabilitystatement import CapabilityStatement

    capability = anonymous.get("/fhir/metadata").json()
    CapabilityStatement.model_validate(capability)
    security = capability["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    uris = security["extension"][0]
    assert uris["url"] == "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
    assert uris["extension"] == [{"url": "token", "valueUri": "http://testserver/auth/token"}]
    assert "DISABLED" not in security["description"]
