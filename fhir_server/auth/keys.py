"""The exchange's own access-token signing key: configured, or generated once and kept in the database.

Every worker process signs with the oldest stored key and verifies by ``kid`` against all stored keys, so
several processes (even ones that raced to create the first key) accept each other's tokens.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from sqlalchemy import Connection, Engine, insert, select

from fhir_server.config import Settings
from fhir_server.storage.engine import unit_of_work
from fhir_server.storage.tables import auth_signing_keys


@dataclass(frozen=True)
class SigningKey:
    """One key pair the exchange signs access tokens with (ES256 for EC P-256, RS256 for RSA)."""

    kid: str
    alg: str
    private: Any
    public: Any

    def public_jwk(self) -> dict[str, Any]:
        """The public key as a JWK (RFC 7517), for a JWKS document."""
        algorithm = ECAlgorithm if self.alg.startswith("ES") else RSAAlgorithm
        jwk = algorithm.to_jwk(self.public, as_dict=True)
        return {**jwk, "kid": self.kid, "alg": self.alg, "use": "sig"}


def generate_pem() -> str:
    """A new EC P-256 private key in PKCS#8 PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def key_from_pem(pem: str) -> SigningKey:
    """A signing key from a PEM private key; the ``kid`` is a digest of the public key."""
    private = serialization.load_pem_private_key(pem.encode(), password=None)
    if isinstance(private, ec.EllipticCurvePrivateKey):
        alg = {"secp256r1": "ES256", "secp384r1": "ES384"}.get(private.curve.name)
    elif isinstance(private, rsa.RSAPrivateKey):
        alg = "RS256"
    else:
        alg = None
    if alg is None:
        raise ValueError("The token signing key must be an EC P-256/P-384 or an RSA private key.")
    public = private.public_key()
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return SigningKey(hashlib.sha256(der).hexdigest()[:32], alg, private, public)


def stored_keys(conn: Connection) -> list[SigningKey]:
    """Every stored signing key, oldest first."""
    rows = conn.execute(
        select(auth_signing_keys.c.private_pem).order_by(auth_signing_keys.c.created_at, auth_signing_keys.c.kid)
    )
    return [key_from_pem(pem) for pem in rows.scalars()]


def ensure_signing_key(engine: Engine) -> list[SigningKey]:
    """The stored keys, creating the first one when there is none."""
    with unit_of_work(engine, write=False) as conn:
        keys = stored_keys(conn)
    if keys:
        return keys
    key = key_from_pem(generate_pem())
    pem = key.private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    with unit_of_work(engine) as conn:
        if not stored_keys(conn):
            conn.execute(
                insert(auth_signing_keys).values(
                    kid=key.kid, alg=key.alg, private_pem=pem, created_at=int(time.time() * 1_000_000)
                )
            )
    with unit_of_work(engine, write=False) as conn:
        return stored_keys(conn)


class KeyRing:
    """The key that signs and the keys that verify, for one process."""

    RELOAD_INTERVAL = 5.0

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.configured = key_from_pem(settings.auth_signing_key) if settings.auth_signing_key else None
        self._signing: SigningKey | None = self.configured
        self._verifying: dict[str, SigningKey] = {self.configured.kid: self.configured} if self.configured else {}
        self._loaded_at = 0.0

    @property
    def signing(self) -> SigningKey:
        if self._signing is None:
            self.reload()
        assert self._signing is not None
        return self._signing

    def verifying(self, kid: str) -> SigningKey | None:
        """The key with this ``kid`` (``None`` when unknown); without a database read when already known."""
        return self._verifying.get(kid)

    def knows(self, kid: str | None) -> bool:
        return kid is not None and kid in self._verifying

    def public_jwks(self) -> list[dict[str, Any]]:
        """Every verifying key as a public JWK (``GET /auth/jwks``)."""
        self.reload()
        return [key.public_jwk() for key in self._verifying.values()]

    def reload(self) -> None:
        """Read the stored keys again (at most every few seconds, so unknown kids cannot flood the database)."""
        if self.configured is not None:
            return
        now = time.monotonic()
        if self._signing is not None and now - self._loaded_at < self.RELOAD_INTERVAL:
            return
        keys = ensure_signing_key(self.engine)
        self._signing = keys[0]
        self._verifying = {key.kid: key for key in keys}
        self._loaded_at = now


__all__ = ["KeyRing", "SigningKey", "ensure_signing_key", "generate_pem", "key_from_pem"]
