"""Client authentication at the token endpoint: ``private_key_jwt`` (RFC 7523, SMART Backend Services) and,
for development, ``client_secret_basic`` (RFC 6749 §2.3.1)."""

from __future__ import annotations

import base64
import threading
import time
from typing import Any
from urllib.parse import unquote

import jwt
from sqlalchemy import Connection

from fhir_server.auth.clients import Client, get_client, remember_jti, verify_secret

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGORITHMS = ["RS384", "ES384"]
MAX_ASSERTION_LIFETIME = 300
"""SMART Backend Services: a client assertion expires no more than five minutes in the future."""
_LEEWAY = 5


class OAuthError(Exception):
    """An OAuth 2.0 error response (RFC 6749 §5.2)."""

    def __init__(self, error: str, description: str, *, status: int = 400, basic: bool = False) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status
        self.basic = basic


def invalid_client(description: str, *, basic: bool = False) -> OAuthError:
    return OAuthError("invalid_client", description, status=401, basic=basic)


class JwksUrls:
    """One cached JWKS fetcher per registered JWKS URL (refetched when a ``kid`` is unknown)."""

    def __init__(self) -> None:
        self._clients: dict[str, jwt.PyJWKClient] = {}
        self._lock = threading.Lock()

    def key(self, url: str, assertion: str) -> Any:
        with self._lock:
            fetcher = self._clients.get(url)
            if fetcher is None:
                fetcher = self._clients[url] = jwt.PyJWKClient(url, cache_keys=True, lifespan=300, timeout=10)
        try:
            return fetcher.get_signing_key_from_jwt(assertion).key
        except jwt.PyJWKClientError as error:
            raise invalid_client(f"No key of the client's JWKS ({url}) verifies the assertion: {error}") from None


def basic_credentials(header: str) -> tuple[str, str]:
    """``client_id`` and secret of an ``Authorization: Basic`` header (form-urlencoded, RFC 6749 §2.3.1)."""
    try:
        decoded = base64.b64decode(header.split(" ", 1)[1].strip(), validate=True).decode()
        client_id, secret = decoded.split(":", 1)
    except (ValueError, IndexError, UnicodeDecodeError):
        raise invalid_client("The Basic credentials are not base64 of client_id:secret.", basic=True) from None
    return unquote(client_id), unquote(secret)


def authenticate_secret(conn: Connection, client_id: str, secret: str) -> Client:
    client = get_client(conn, client_id)
    if client is None or not client.active or not verify_secret(secret, client.secret_hash):
        raise invalid_client("Unknown client, inactive client or wrong secret.", basic=True)
    return client


def authenticate_assertion(conn: Connection, assertion: str, *, token_url: str, jwks_urls: JwksUrls) -> Client:
    """The client a signed assertion proves to be (SMART Backend Services §Authenticating to the token endpoint)."""
    try:
        header = jwt.get_unverified_header(assertion)
        unverified = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        raise invalid_client("client_assertion is not a well-formed JWT.") from None
    if header.get("alg") not in ASSERTION_ALGORITHMS:
        raise invalid_client(f"client_assertion must be signed with RS384 or ES384, not {header.get('alg')}.")
    client_id = unverified.get("iss")
    if not isinstance(client_id, str) or unverified.get("sub") != client_id:
        raise invalid_client("client_assertion needs iss and sub, both the client_id.")
    client = get_client(conn, client_id)
    if client is None or not client.active:
        raise invalid_client(f"Client '{client_id}' is not registered or not active.")
    key = _client_key(client, header, assertion, jwks_urls)
    try:
        claims = jwt.decode(
            assertion,
            key,
            algorithms=ASSERTION_ALGORITHMS,
            audience=token_url,
            issuer=client_id,
            options={"require": ["exp", "iss", "sub", "aud", "jti"]},
            leeway=_LEEWAY,
        )
    except jwt.ExpiredSignatureError:
        raise OAuthError("invalid_grant", "client_assertion has expired.") from None
    except jwt.InvalidAudienceError:
        raise invalid_client(f"client_assertion's aud must be the token endpoint, {token_url}.") from None
    except jwt.InvalidSignatureError:
        raise invalid_client("client_assertion's signature does not verify with the client's registered key.") from None
    except jwt.InvalidTokenError as error:
        raise invalid_client(f"client_assertion is not valid: {error}") from None
    exp = int(claims["exp"])
    if exp > time.time() + MAX_ASSERTION_LIFETIME + _LEEWAY:
        raise OAuthError("invalid_grant", "client_assertion's exp must be at most five minutes ahead.")
    if not remember_jti(conn, client_id, str(claims["jti"]), exp):
        raise OAuthError("invalid_grant", "client_assertion's jti was used before: assertions are single-use.")
    return client


def _client_key(client: Client, header: dict[str, Any], assertion: str, jwks_urls: JwksUrls) -> Any:
    if client.jwks_url:
        return jwks_urls.key(client.jwks_url, assertion)
    if not client.jwks:
        raise invalid_client(f"Client '{client.client_id}' has no registered key; it authenticates by secret.")
    kid = header.get("kid")
    family = "EC" if header["alg"].startswith("ES") else "RSA"
    candidates = [
        key
        for key in client.jwks.get("keys", [])
        if key.get("kty") == family and (kid is None or key.get("kid") == kid)
    ]
    if len(candidates) != 1:
        raise invalid_client(
            f"The client's JWKS has {len(candidates)} {family} key(s) with kid {kid!r}; exactly one must match."
        )
    try:
        return jwt.PyJWK(candidates[0], algorithm=header["alg"]).key
    except jwt.PyJWKError as error:
        raise invalid_client(f"The client's registered key cannot be used: {error}") from None


__all__ = [
    "ASSERTION_ALGORITHMS",
    "ASSERTION_TYPE",
    "JwksUrls",
    "OAuthError",
    "authenticate_assertion",
    "authenticate_secret",
    "basic_credentials",
]
