"""Fixtures for authentication tests: a client without default credentials, keys and signed assertions."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi.testclient import TestClient
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from fhir_server.api.app import create_app
from tests.conftest import Backend, token_for

TOKEN_URL = "http://testserver/auth/token"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@pytest.fixture(scope="module")
def anonymous(backend: Backend) -> Iterator[TestClient]:
    """The app, with no Authorization header unless a test sends one."""
    with TestClient(create_app(backend.settings, backend.engine), base_url="http://testserver") as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def scoped(backend: Backend, scope: str, organization: str | None = None) -> dict[str, str]:
    """Headers of a client registered for exactly ``scope`` (not acting for the exchange)."""
    return bearer(token_for(backend, scope, organization=organization, exchange=False))


class ClientKey:
    """A client's key pair (RS384 or ES384) and its public JWKS."""

    def __init__(self, alg: str, kid: str | None = None) -> None:
        self.alg = alg
        self.kid = kid or uuid.uuid4().hex[:8]
        if alg == "RS384":
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            jwk = RSAAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        else:
            self.private = ec.generate_private_key(ec.SECP384R1())
            jwk = ECAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        self.jwks = {"keys": [{**jwk, "kid": self.kid, "alg": alg, "use": "sig"}]}

    def assertion(self, client_id: str, **overrides: Any) -> str:
        now = int(time.time())
        claims = {
            "iss": client_id,
            "sub": client_id,
            "aud": TOKEN_URL,
            "exp": now + 240,
            "iat": now,
            "jti": uuid.uuid4().hex,
        }
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        return jwt.encode(claims, self.private, algorithm=self.alg, headers={"kid": self.kid})


def assertion_form(assertion: str, scope: str | None = "system/*.rs") -> dict[str, str]:
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion,
    }
    if scope is not None:
        form["scope"] = scope
    return form
