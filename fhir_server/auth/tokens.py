"""Access tokens: issued and signed by the exchange, or by an external identity provider (verified by JWKS).

Every check is PyJWT's (signature, ``exp``, ``iss``, ``aud``); this module only chooses the key and maps claims.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt

from fhir_server.auth.keys import KeyRing
from fhir_server.auth.scopes import split_scopes
from fhir_server.config import Settings

LOCAL_ISSUER = "hie"
"""``iss`` of the tokens ``/auth/token`` issues."""
LOCAL_AUDIENCE = "hie-fhir"
"""``aud`` of the tokens ``/auth/token`` issues: the FHIR API of this exchange."""
EXTERNAL_ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512"]
_LEEWAY = 5


class InvalidToken(Exception):
    """An access token that is missing, malformed, expired or not trusted; the text says which."""


@dataclass(frozen=True)
class TokenClaims:
    """What a verified access token says about its bearer."""

    client_id: str
    scopes: frozenset[str]
    organization: str | None
    user: str | None
    patient: str | None
    local: bool
    """Issued by this exchange: the client must still be registered and active."""
    expires_at: float


def issue_access_token(
    keys: KeyRing,
    *,
    client_id: str,
    organization: str | None,
    scopes: list[str],
    lifetime: int,
    patient: str | None = None,
) -> str:
    """A signed JWT access token for a registered client; a resident's app's names its resident (``patient``)."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": LOCAL_ISSUER,
        "aud": LOCAL_AUDIENCE,
        "sub": client_id,
        "client_id": client_id,
        "scope": " ".join(scopes),
        "iat": now,
        "exp": now + lifetime,
        "jti": uuid.uuid4().hex,
    }
    if organization:
        claims["organization"] = organization
    if patient:
        claims["patient"] = patient.removeprefix("Patient/")
    key = keys.signing
    return jwt.encode(claims, key.private, algorithm=key.alg, headers={"kid": key.kid})


class TokenVerifier:
    """Verifies bearer tokens: the exchange's own (by ``kid``) and, when configured, an external provider's."""

    def __init__(self, settings: Settings, keys: KeyRing) -> None:
        self.settings = settings
        self.keys = keys
        self.external = (
            jwt.PyJWKClient(
                settings.auth_jwks_url,
                cache_keys=True,
                lifespan=300,
                timeout=10,
                cooldown_duration=settings.auth_jwks_refetch_seconds,
            )
            if settings.auth_jwks_url
            else None
        )
        self._verified: dict[str, TokenClaims] = {}
        self._lock = threading.Lock()

    def fast(self, token: str) -> TokenClaims | None:
        """A token verified before and not yet expired, or one signed by a key already known: no I/O."""
        found = self._verified.get(token)
        if found is not None:
            if found.expires_at > time.time():
                return found
            raise InvalidToken("The access token has expired.")
        kid = _header(token).get("kid")
        if self.keys.knows(kid):
            return self.verify(token)
        return None

    def verify(self, token: str) -> TokenClaims:
        """Verify a token (may read the database or fetch the provider's JWKS for an unknown ``kid``)."""
        header = _header(token)
        kid = header.get("kid")
        key = self.keys.verifying(kid) if isinstance(kid, str) else None
        if key is None and isinstance(kid, str) and self.external is None:
            self.keys.reload()
            key = self.keys.verifying(kid)
        if key is not None:
            claims = self._decode(token, key.public, [key.alg], LOCAL_AUDIENCE, LOCAL_ISSUER)
            result = self._local(claims)
        elif self.external is not None:
            result = self._external(token, kid)
        else:
            raise InvalidToken("The access token was not signed by a key of this server.")
        with self._lock:
            if len(self._verified) > 10_000:
                self._verified.clear()
            self._verified[token] = result
        return result

    def _external(self, token: str, kid: Any) -> TokenClaims:
        assert self.external is not None
        try:
            signing = self.external.get_signing_key_from_jwt(token)
        except jwt.PyJWKClientConnectionError as error:
            raise InvalidToken(f"The identity provider's keys could not be fetched: {error}") from None
        except jwt.PyJWKClientError:
            signing = None
        if signing is None:
            self.keys.reload()
            local = self.keys.verifying(kid) if isinstance(kid, str) else None
            if local is None:
                raise InvalidToken("The access token's key (kid) is neither this server's nor the identity provider's.")
            return self._local(self._decode(token, local.public, [local.alg], LOCAL_AUDIENCE, LOCAL_ISSUER))
        settings = self.settings
        claims = self._decode(token, signing.key, EXTERNAL_ALGORITHMS, settings.auth_audience, settings.auth_issuer)
        client_id = claims.get(settings.auth_client_claim) or claims.get("client_id") or claims.get("azp")
        if not client_id:
            raise InvalidToken(f"The access token names no client ({settings.auth_client_claim} claim).")
        patient = claims.get(settings.auth_patient_claim)
        return TokenClaims(
            client_id=str(client_id),
            scopes=frozenset(split_scopes(claims.get(settings.auth_scope_claim))),
            organization=_organization(claims.get(settings.auth_organization_claim)),
            user=str(claims[settings.auth_user_claim]) if claims.get(settings.auth_user_claim) else None,
            patient=f"Patient/{patient}" if patient and "/" not in str(patient) else patient,
            local=False,
            expires_at=float(claims["exp"]),
        )

    @staticmethod
    def _local(claims: dict[str, Any]) -> TokenClaims:
        return TokenClaims(
            client_id=str(claims.get("client_id") or claims["sub"]),
            scopes=frozenset(split_scopes(claims.get("scope"))),
            organization=claims.get("organization"),
            user=None,
            patient=f"Patient/{claims['patient']}" if claims.get("patient") else None,
            local=True,
            expires_at=float(claims["exp"]),
        )

    @staticmethod
    def _decode(token: str, key: Any, algorithms: list[str], audience: str | None, issuer: str | None) -> dict:
        options = {"require": ["exp", "iat"] if issuer == LOCAL_ISSUER else ["exp"], "verify_aud": audience is not None}
        try:
            return jwt.decode(
                token, key, algorithms=algorithms, audience=audience, issuer=issuer, options=options, leeway=_LEEWAY
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("The access token has expired.") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken("The access token is meant for another audience.") from None
        except jwt.InvalidIssuerError:
            raise InvalidToken("The access token comes from an issuer this server does not trust.") from None
        except jwt.InvalidSignatureError:
            raise InvalidToken("The access token's signature does not verify.") from None
        except jwt.InvalidTokenError as error:
            raise InvalidToken(f"The access token is not valid: {error}") from None


def _header(token: str) -> dict[str, Any]:
    try:
        return jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise InvalidToken("The access token is not a well-formed JWT.") from None


def _organization(value: Any) -> str | None:
    if not value:
        return None
    text = str(value[0] if isinstance(value, list) and value else value)
    return text if text.startswith("Organization/") else f"Organization/{text}"


__all__ = ["LOCAL_AUDIENCE", "LOCAL_ISSUER", "InvalidToken", "TokenClaims", "TokenVerifier", "issue_access_token"]
