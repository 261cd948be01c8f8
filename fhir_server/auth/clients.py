"""The client registry: who may ask ``/auth/token`` for tokens, with which keys and up to which scopes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from fhir_server.auth.scopes import READ_PERMISSIONS, ScopeError, parse_scope, split_scopes
from fhir_server.storage.engine import unit_of_work
from fhir_server.storage.tables import auth_assertion_jtis, auth_clients

_ORGANIZATION = re.compile(r"^Organization/[A-Za-z0-9\-.]{1,64}$")
_PATIENT = re.compile(r"^Patient/[A-Za-z0-9\-.]{1,64}$")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


@dataclass(frozen=True)
class Client:
    """One registered client of the token endpoint."""

    client_id: str
    name: str
    organization: str | None
    scopes: tuple[str, ...]
    secret_hash: str | None
    jwks: dict[str, Any] | None
    jwks_url: str | None
    active: bool
    exchange: bool = False
    """Acts for the exchange itself (archive operators, identity stewards, the test suite): no institution or
    consent filter applies to its requests, its scopes do (none with ``system/*.*``)."""
    patient: str | None = None
    """``Patient/{id}`` of the one resident a resident app acts for (its tokens carry the ``patient`` claim)."""


class RegistryError(ValueError):
    """Registration input that cannot be stored."""


def hash_secret(secret: str) -> str:
    """``scrypt$n$r$p$salt$digest`` (RFC 7914 via hashlib) of a client secret."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, **_SCRYPT, dklen=32)
    parts = [str(_SCRYPT["n"]), str(_SCRYPT["r"]), str(_SCRYPT["p"])]
    return "$".join(["scrypt", *parts, base64.b64encode(salt).decode(), base64.b64encode(digest).decode()])


def verify_secret(secret: str, stored: str | None) -> bool:
    if not stored:
        return False
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            secret.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected)
        )
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


def _check_jwks(jwks: dict[str, Any]) -> None:
    keys = jwks.get("keys") if isinstance(jwks, dict) else None
    if not isinstance(keys, list) or not keys or not all(isinstance(k, dict) and k.get("kty") for k in keys):
        raise RegistryError("A JWKS is a JSON object with a non-empty 'keys' array of JWKs (RFC 7517 §5).")
    if any("d" in key for key in keys):
        raise RegistryError("The JWKS holds a private key; register only the public keys.")


def register_client(
    conn: Connection,
    *,
    name: str,
    organization: str | None,
    scopes: str,
    jwks: dict[str, Any] | None = None,
    jwks_url: str | None = None,
    secret: bool | None = None,
    client_id: str | None = None,
    exchange: bool = False,
    patient: str | None = None,
) -> tuple[Client, str | None]:
    """Register a client; returns it and, when it authenticates by secret, the secret (shown only once).

    ``secret`` defaults to "when no key is given". A client registered for a ``patient`` is a resident's app: it
    holds only ``patient/`` scopes for reading and searching, and belongs to no institution.
    """
    if organization is not None and not _ORGANIZATION.match(organization):
        raise RegistryError(f"The organization must be a reference like Organization/123, not '{organization}'.")
    if patient is not None:
        if not _PATIENT.match(patient):
            raise RegistryError(f"The patient must be a reference like Patient/123, not '{patient}'.")
        if organization is not None or exchange:
            raise RegistryError("A resident's app acts for its resident only: no organization, not for the exchange.")
    scope_list = split_scopes(scopes)
    if not scope_list:
        raise RegistryError("A client needs at least one scope, e.g. 'system/*.rs'.")
    for text in scope_list:
        try:
            parsed = parse_scope(text)
        except ScopeError as error:
            raise RegistryError(str(error)) from None
        if parsed is None:
            continue
        if parsed.context == "patient" and patient is None:
            raise RegistryError(
                f"'{text}': patient/ scopes are for a resident's app; register it with --patient Patient/{{id}}."
            )
        if patient is not None and parsed.context != "patient":
            raise RegistryError(f"'{text}': a resident's app holds only patient/ scopes (e.g. 'patient/*.rs').")
        if parsed.context == "patient" and not parsed.permissions <= READ_PERMISSIONS:
            raise RegistryError(f"'{text}': patient/ scopes grant read and search only (e.g. 'patient/*.rs').")
    if exchange and organization is not None:
        raise RegistryError("A client acting for the exchange itself belongs to no institution: drop the organization.")
    if jwks is not None:
        _check_jwks(jwks)
    if jwks_url is not None and not jwks_url.startswith(("https://", "http://")):
        raise RegistryError(f"The JWKS URL must be an http(s) URL, not '{jwks_url}'.")
    if secret is None:
        secret = jwks is None and jwks_url is None
    plain = secrets.token_urlsafe(32) if secret else None
    client = Client(
        client_id=client_id or uuid.uuid4().hex,
        name=name,
        organization=organization,
        scopes=tuple(scope_list),
        secret_hash=hash_secret(plain) if plain else None,
        jwks=jwks,
        jwks_url=jwks_url,
        active=True,
        exchange=exchange,
        patient=patient,
    )
    conn.execute(
        insert(auth_clients).values(
            client_id=client.client_id,
            name=name,
            organization=organization,
            scopes=" ".join(scope_list),
            secret_hash=client.secret_hash,
            jwks=json.dumps(jwks) if jwks is not None else None,
            jwks_url=jwks_url,
            active=True,
            exchange=exchange,
            patient=patient,
            created_at=int(time.time() * 1_000_000),
        )
    )
    return client, plain


def get_client(conn: Connection, client_id: str) -> Client | None:
    row = conn.execute(select(auth_clients).where(auth_clients.c.client_id == client_id)).first()
    if row is None:
        return None
    return Client(
        client_id=row.client_id,
        name=row.name,
        organization=row.organization,
        scopes=tuple(split_scopes(row.scopes)),
        secret_hash=row.secret_hash,
        jwks=json.loads(row.jwks) if row.jwks else None,
        jwks_url=row.jwks_url,
        active=bool(row.active),
        exchange=bool(row.exchange),
        patient=row.patient,
    )


def find_clients(conn: Connection, *, name: str | None = None) -> list[Client]:
    query = select(auth_clients.c.client_id).order_by(auth_clients.c.created_at)
    if name is not None:
        query = query.where(auth_clients.c.name == name)
    return [client for cid in conn.execute(query).scalars() if (client := get_client(conn, cid)) is not None]


def set_active(conn: Connection, client_id: str, active: bool) -> bool:
    """Activate or deactivate a client; False when it is not registered."""
    result = conn.execute(update(auth_clients).where(auth_clients.c.client_id == client_id).values(active=active))
    return result.rowcount > 0


def remember_jti(conn: Connection, client_id: str, jti: str, expires_at: int) -> bool:
    """Record a client assertion's ``jti``; False when it was seen before (a replay, RFC 7523 §3 item 7)."""
    conn.execute(delete(auth_assertion_jtis).where(auth_assertion_jtis.c.expires_at < int(time.time()) - 60))
    savepoint = conn.begin_nested()
    try:
        conn.execute(insert(auth_assertion_jtis).values(client_id=client_id, jti=jti[:255], expires_at=expires_at))
    except IntegrityError:
        savepoint.rollback()
        return False
    savepoint.commit()
    return True


class ClientCache:
    """Registry rows reused for a few seconds, so verifying a token usually reads no database row."""

    def __init__(self, engine: Engine, ttl: float) -> None:
        self.engine = engine
        self.ttl = ttl
        self._rows: dict[str, tuple[float, Client | None]] = {}
        self._lock = threading.Lock()

    def cached(self, client_id: str) -> tuple[bool, Client | None]:
        """``(hit, client)``: a miss needs ``load`` (a database read)."""
        found = self._rows.get(client_id)
        if found is None or time.monotonic() - found[0] > self.ttl:
            return False, None
        return True, found[1]

    def load(self, client_id: str) -> Client | None:
        with unit_of_work(self.engine, write=False) as conn:
            client = get_client(conn, client_id)
        with self._lock:
            if len(self._rows) > 10_000:
                self._rows.clear()
            self._rows[client_id] = (time.monotonic(), client)
        return client

    def forget(self, client_id: str) -> None:
        self._rows.pop(client_id, None)


__all__ = [
    "Client",
    "ClientCache",
    "RegistryError",
    "find_clients",
    "get_client",
    "hash_secret",
    "register_client",
    "remember_jti",
    "set_active",
    "verify_secret",
]
