"""Bearer tokens on the FHIR API: missing, malformed, expired, forged or untrusted → 401 with WWW-Authenticate."""

from __future__ import annotations

import time
from types import SimpleNamespace

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import Request
from fastapi.testclient import TestClient

from fhir_server.api.app import create_app
from fhir_server.auth.cli import create_client, issue_token
from fhir_server.auth.clients import set_active
from fhir_server.auth.enforce import principal_of
from fhir_server.auth.keys import KeyRing
from fhir_server.auth.middleware import _needs
from fhir_server.auth.policy import needs_of
from fhir_server.auth.tokens import LOCAL_AUDIENCE, LOCAL_ISSUER
from fhir_server.storage.engine import unit_of_work
from tests.conftest import Backend, token_for
from tests.fhir_server.auth.conftest import bearer


def server_key(backend: Backend):  # type: ignore[no-untyped-def]
    token_for(backend)  # makes sure the signing key exists
    keys = KeyRing(backend.engine, backend.settings)
    return keys.signing


def signed(backend: Backend, **overrides) -> str:  # type: ignore[no-untyped-def]
    key = server_key(backend)
    client, _ = create_client(backend.engine, name="bearer test", scopes="system/*.rs")
    now = int(time.time())
    claims = {
        "iss": LOCAL_ISSUER,
        "aud": LOCAL_AUDIENCE,
        "sub": client.client_id,
        "client_id": client.client_id,
        "scope": "system/*.rs",
        "iat": now,
        "exp": now + 300,
    }
    claims.update(overrides)
    return jwt.encode(claims, key.private, algorithm=key.alg, headers={"kid": key.kid})


def assert_401(response, error: str | None = "invalid_token") -> str:  # type: ignore[no-untyped-def]
    assert response.status_code == 401, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["code"] == "login"
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="hie"')
    if error is None:
        assert "error=" not in challenge
    else:
        assert f'error="{error}"' in challenge and "error_description=" in challenge
    return outcome["issue"][0]["diagnostics"]


def test_a_signed_token_reads(anonymous, backend):
    assert anonymous.get("/fhir/Patient", headers=bearer(signed(backend))).status_code == 200


def test_missing_token(anonymous):
    assert_401(anonymous.get("/fhir/Patient"), error=None)
    assert_401(anonymous.post("/fhir", json={"resourceType": "Bundle", "type": "batch"}), error=None)


@pytest.mark.parametrize("header", ["Basic abc", "Bearer", "Bearer   ", "token"])
def test_not_a_bearer_token(anonymous, header):
    assert_401(anonymous.get("/fhir/Patient", headers={"Authorization": header}), error=None)


@pytest.mark.parametrize("token", ["abc", "a.b.c", "eyJhbGciOiJFUzI1NiJ9.e30.AAAA"])
def test_malformed_token(anonymous, token):
    assert "JWT" in assert_401(anonymous.get("/fhir/Patient", headers=bearer(token))) or True


def test_expired_token(anonymous, backend):
    token = signed(backend, iat=int(time.time()) - 900, exp=int(time.time()) - 600)
    assert "expired" in assert_401(anonymous.get("/fhir/Patient", headers=bearer(token)))


def test_forged_token_signed_by_another_key_with_the_servers_kid(anonymous, backend):
    real = server_key(backend)
    forger = ec.generate_private_key(ec.SECP256R1())
    now = int(time.time())
    claims = {"iss": LOCAL_ISSUER, "aud": LOCAL_AUDIENCE, "sub": "x", "scope": "system/*.*", "iat": now}
    claims["exp"] = now + 60
    token = jwt.encode(claims, forger, algorithm="ES256", headers={"kid": real.kid})
    assert "signature" in assert_401(anonymous.get("/fhir/Patient", headers=bearer(token)))


def test_tampered_claims(anonymous, backend):
    header, _, signature = signed(backend).split(".")
    _, other_payload, _ = signed(backend, scope="system/*.*").split(".")
    assert_401(anonymous.get("/fhir/Patient", headers=bearer(f"{header}.{other_payload}.{signature}")))


def test_unsigned_token(anonymous, backend):
    key = server_key(backend)
    token = jwt.encode({"sub": "x", "exp": int(time.time()) + 60}, None, algorithm="none", headers={"kid": key.kid})
    assert_401(anonymous.get("/fhir/Patient", headers=bearer(token)))


def test_unknown_kid(anonymous):
    forger = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode({"sub": "x", "exp": int(time.time()) + 60}, forger, algorithm="ES256", headers={"kid": "zz"})
    assert "not signed by a key of this server" in assert_401(anonymous.get("/fhir/Patient", headers=bearer(token)))


def test_wrong_issuer_and_audience(anonymous, backend):
    assert "issuer" in assert_401(anonymous.get("/fhir/Patient", headers=bearer(signed(backend, iss="other"))))
    assert "audience" in assert_401(anonymous.get("/fhir/Patient", headers=bearer(signed(backend, aud="other"))))


def test_token_of_an_unknown_client(anonymous, backend):
    token = signed(backend, sub="ghost", client_id="ghost")
    assert "not registered" in assert_401(anonymous.get("/fhir/Patient", headers=bearer(token)))


def test_token_of_a_deactivated_client(anonymous, backend):
    client, _ = create_client(backend.engine, name="to deactivate", scopes="system/*.rs")
    token, _ = issue_token(backend.engine, backend.settings, client.client_id)
    with unit_of_work(backend.engine) as conn:
        set_active(conn, client.client_id, False)
    assert "deactivated" in assert_401(anonymous.get("/fhir/Patient", headers=bearer(token)))


def test_open_endpoints_need_no_token(anonymous):
    assert anonymous.get("/fhir/metadata").status_code == 200
    assert anonymous.get("/").status_code == 200
    assert anonymous.get("/.well-known/smart-configuration").status_code == 200


def test_purpose_and_break_glass_headers_reach_the_principal(backend):
    app = create_app(backend.settings, backend.engine)
    seen = {}

    @app.get("/fhir/_probe", include_in_schema=False)
    async def probe(request: Request) -> dict:
        seen["principal"] = principal_of(request)
        return {}

    app.router.routes.insert(0, app.router.routes.pop())
    headers = {**bearer(token_for(backend)), "X-Purpose-Of-Use": "ETREAT", "X-Break-Glass-Reason": "120 call"}
    with TestClient(app, base_url="http://testserver") as client:
        response = client.get("/fhir/_probe", headers=headers)
        assert response.status_code == 200, response.text
    principal = seen["principal"]
    assert principal.purpose_of_use == "ETREAT" and principal.break_glass_reason == "120 call"
    assert principal.remote_address and principal.unrestricted


def test_websocket_needs_a_token(anonymous, backend):
    from starlette.websockets import WebSocketDisconnect

    with pytest.raises(WebSocketDisconnect) as refused, anonymous.websocket_connect("/fhir/websocket"):
        pass
    assert refused.value.code == 1008
    with anonymous.websocket_connect("/fhir/websocket", headers=bearer(token_for(backend))) as socket:
        socket.send_text("hello")
        assert socket.receive_text().startswith("error")


def test_a_token_used_before_is_refused_from_its_expiry(anonymous, backend, monkeypatch):
    token = signed(backend)
    for _ in range(2):  # verified once, then taken from the verifier's cache with its principal
        assert anonymous.get("/fhir/Patient", headers=bearer(token)).status_code == 200
    later = time.time() + 301
    monkeypatch.setattr("fhir_server.auth.tokens.time", SimpleNamespace(time=lambda: later))
    assert "expired" in assert_401(anonymous.get("/fhir/Patient", headers=bearer(token)))


def test_a_client_deactivated_after_its_token_was_used_is_refused(anonymous, backend):
    client, _ = create_client(backend.engine, name="deactivated later", scopes="system/*.rs")
    token, _ = issue_token(backend.engine, backend.settings, client.client_id)
    assert anonymous.get("/fhir/Patient", headers=bearer(token)).status_code == 200
    with unit_of_work(backend.engine) as conn:
        set_active(conn, client.client_id, False)
    anonymous.app.state.authority.clients.forget(client.client_id)  # the registry row's lifetime is over
    assert "deactivated" in assert_401(anonymous.get("/fhir/Patient", headers=bearer(token)))


def test_each_request_has_the_purpose_it_states(backend):
    app = create_app(backend.settings, backend.engine)
    seen = []

    @app.get("/fhir/_probe", include_in_schema=False)
    async def probe(request: Request) -> dict:
        seen.append(principal_of(request))
        return {}

    app.router.routes.insert(0, app.router.routes.pop())
    client, _ = create_client(backend.engine, name="purposes", scopes="system/*.rs", organization="Organization/p")
    token, _ = issue_token(backend.engine, backend.settings, client.client_id)
    stated = [("TREAT", None), ("HPAYMT", None), ("TREAT", None), ("ETREAT", "unconscious"), (None, None)]
    with TestClient(app, base_url="http://testserver") as http:
        for purpose, reason in stated:
            headers = {**bearer(token), "X-Purpose-Of-Use": purpose or "", "X-Break-Glass-Reason": reason or ""}
            assert http.get("/fhir/_probe", headers=headers).status_code == 200
    assert [(p.purpose_of_use, p.break_glass_reason) for p in seen] == stated
    assert {(p.client_id, p.organization, p.unrestricted) for p in seen} == {
        (client.client_id, "Organization/p", False)
    }


@pytest.mark.parametrize(
    "path",
    [
        "/fhir/Patient/a",
        "/fhir/Patient/b",
        "/fhir/Patient",
        "/fhir/Observation/x",
        "/fhir/Patient/_history",
        "/fhir/Patient/_search",
        "/fhir/Patient/$match",
        "/fhir/Patient/a/$everything",
        "/fhir/Patient/a/Observation",
        "/fhir/Patient/a/_history/2",
        "/fhir/$export",
        "/fhir/_history",
        "/fhir/metadata",
        "/fhir/NotAType/x",
        "/fhir",
    ],
)
@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"])
def test_needs_kept_per_type_are_those_of_the_path(method, path):
    parts = [part for part in path[len("/fhir") :].split("/") if part]
    for _ in range(2):
        assert _needs(method, path) == needs_of(method, parts)
