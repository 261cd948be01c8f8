"""Tokens of an external identity provider, verified against its JWKS served by a real local HTTP server."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from jwt.algorithms import RSAAlgorithm

from fhir_server.api.app import create_app
from tests.conftest import token_for
from tests.fhir_server.auth.conftest import bearer

ISSUER = "https://idp.example/realms/hie"
AUDIENCE = "hie-fhir-api"


class Provider:
    """A JWKS endpoint on 127.0.0.1 whose keys a test can rotate."""

    def __init__(self) -> None:
        self.keys: dict[str, Any] = {}
        self.fetches = 0
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                provider.fetches += 1
                body = json.dumps({"keys": [provider.public(kid) for kid in provider.keys]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/certs"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add_key(self, kid: str) -> None:
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def public(self, kid: str) -> dict[str, Any]:
        return {**RSAAlgorithm.to_jwk(self.keys[kid].public_key(), as_dict=True), "kid": kid, "alg": "RS256"}

    def token(self, kid: str, **overrides: Any) -> str:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "user-42",
            "azp": "his-wz-2",
            "scope": "openid system/Patient.rs",
            "organization": "wz-2",
            "iat": now,
            "exp": now + 300,
        }
        claims.update(overrides)
        return jwt.encode(claims, self.keys[kid], algorithm="RS256", headers={"kid": kid})


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    idp = Provider()
    idp.add_key("k1")
    yield idp
    idp.server.shutdown()


@pytest.fixture(scope="module")
def api(backend, provider) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    settings = backend.settings.model_copy(
        update={
            "auth_jwks_url": provider.url,
            "auth_issuer": ISSUER,
            "auth_audience": AUDIENCE,
            "auth_jwks_refetch_seconds": 0.0,
        }
    )
    with TestClient(create_app(settings, backend.engine), base_url="http://testserver") as client:
        yield client


def test_provider_token_is_accepted_with_its_claims(api, provider):
    from fhir_server.auth.tokens import TokenVerifier

    response = api.get("/fhir/Patient?_count=1", headers=bearer(provider.token("k1")))
    assert response.status_code == 200, response.text
    verifier: TokenVerifier = api.app.state.authority.verifier
    claims = verifier.verify(provider.token("k1"))
    assert claims.client_id == "his-wz-2" and claims.organization == "Organization/wz-2"
    assert claims.user == "user-42" and not claims.local
    assert claims.scopes == {"openid", "system/Patient.rs"}


def test_provider_scopes_are_enforced(api, provider):
    response = api.get("/fhir/Observation", headers=bearer(provider.token("k1")))
    assert response.status_code == 403


@pytest.mark.parametrize(
    ("claims", "words"),
    [
        ({"iss": "https://other.example"}, "issuer"),
        ({"aud": "someone-else"}, "audience"),
        ({"exp": int(time.time()) - 100, "iat": int(time.time()) - 400}, "expired"),
        ({"azp": None}, "names no client"),
    ],
)
def test_provider_token_with_wrong_claims(api, provider, claims, words):
    token = provider.token("k1", **claims)
    if claims.get("azp", "") is None:
        payload = jwt.decode(token, options={"verify_signature": False})
        payload.pop("azp")
        token = jwt.encode(payload, provider.keys["k1"], algorithm="RS256", headers={"kid": "k1"})
    response = api.get("/fhir/Patient", headers=bearer(token))
    assert response.status_code == 401 and words in response.json()["issue"][0]["diagnostics"]
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


def test_rotated_key_is_fetched_when_its_kid_is_unknown(api, provider):
    assert api.get("/fhir/Patient?_count=1", headers=bearer(provider.token("k1"))).status_code == 200
    before = provider.fetches
    rotated = f"k-{uuid.uuid4().hex[:8]}"
    provider.add_key(rotated)
    assert api.get("/fhir/Patient?_count=1", headers=bearer(provider.token(rotated))).status_code == 200
    assert provider.fetches == before + 1
    assert api.get("/fhir/Patient?_count=1", headers=bearer(provider.token(rotated, jti="again"))).status_code == 200
    assert provider.fetches == before + 1  # cached


def test_token_signed_by_a_key_the_provider_does_not_publish(api, provider):
    stranger = Provider()
    stranger.add_key("k9")
    try:
        response = api.get("/fhir/Patient", headers=bearer(stranger.token("k9")))
    finally:
        stranger.server.shutdown()
    assert response.status_code == 401


def test_own_tokens_still_work_beside_the_provider(api, backend):
    assert api.get("/fhir/Patient?_count=1", headers=bearer(token_for(backend))).status_code == 200


def test_client_registered_with_a_jwks_url(anonymous, backend):
    from fhir_server.auth.cli import create_client
    from tests.fhir_server.auth.conftest import ClientKey, assertion_form

    key = ClientKey("RS384")
    published = Provider()
    published.keys = {}
    published.public = lambda kid: key.jwks["keys"][0]  # type: ignore[method-assign]
    published.keys[key.kid] = key.private
    try:
        client, secret = create_client(backend.engine, name="jwks url", scopes="system/*.rs", jwks_url=published.url)
        assert secret is None
        response = anonymous.post("/auth/token", data=assertion_form(key.assertion(client.client_id)))
        assert response.status_code == 200, response.text
        stranger = ClientKey("RS384", kid=key.kid)
        refused = anonymous.post("/auth/token", data=assertion_form(stranger.assertion(client.client_id)))
        assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
    finally:
        published.server.shutdown()
