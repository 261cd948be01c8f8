"""The authentication state of one process: settings, signing keys, the token verifier and the client cache."""

from __future__ import annotations

import logging

from sqlalchemy import Engine
from starlette.requests import Request

from fhir_server.auth.assertion import JwksUrls
from fhir_server.auth.clients import Client, ClientCache
from fhir_server.auth.keys import KeyRing
from fhir_server.auth.tokens import TokenVerifier, issue_access_token
from fhir_server.config import Settings

log = logging.getLogger("hie.auth")

DISABLED_WARNING = (
    "AUTHENTICATION IS DISABLED (HIE_AUTH_DISABLED=true): every request runs unrestricted, with no token, "
    "scope, institution or consent check. Use this for local experiments only, never with real data."
)


class Authority:
    """What the token endpoint and the middleware share."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self.disabled = settings.auth_disabled
        self.keys = KeyRing(engine, settings)
        self.verifier = TokenVerifier(settings, self.keys)
        self.clients = ClientCache(engine, settings.auth_client_cache_seconds)
        self.jwks_urls = JwksUrls()
        if self.disabled:
            log.warning("!" * 20 + " " + DISABLED_WARNING + " " + "!" * 20)

    def token_url(self, request: Request) -> str:
        """The token endpoint URL (the ``aud`` client assertions must carry)."""
        if self.settings.auth_token_url:
            return self.settings.auth_token_url
        if self.settings.base_url:
            return self.settings.base_url.rstrip("/").removesuffix("/fhir") + "/auth/token"
        return str(request.base_url).rstrip("/") + "/auth/token"

    def issue(self, client: Client, scopes: list[str], lifetime: int | None = None) -> str:
        return issue_access_token(
            self.keys,
            client_id=client.client_id,
            organization=client.organization,
            patient=client.patient,
            scopes=scopes,
            lifetime=lifetime or self.settings.auth_token_lifetime_seconds,
        )


__all__ = ["DISABLED_WARNING", "Authority"]
