"""Authenticates every request under ``/fhir`` and puts its ``Principal`` on ``request.state.principal``.

A bearer token is required (RFC 6750) except for ``GET /fhir/metadata``; without one, or with one that is
expired, malformed or not trusted, the answer is 401 with ``WWW-Authenticate``; a token whose scopes do not
cover what the URL asks for gets 403 (both as OperationOutcome). A pure ASGI middleware: no per-request task.

A client registered for the exchange (``--exchange``) acts for it: no institution or consent filter applies to it,
but its scopes do, here and in the handlers, unless they are every scope (``system/*.*``: unrestricted). Tokens of
an external identity provider never act for the exchange.
"""

from __future__ import annotations

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from fhir_server.auth.authority import Authority
from fhir_server.auth.clients import Client
from fhir_server.auth.enforce import constraints_state
from fhir_server.auth.policy import forbidden, needs_of
from fhir_server.auth.principal import ANONYMOUS, Principal
from fhir_server.auth.scopes import grants_for
from fhir_server.auth.tokens import InvalidToken, TokenClaims
from fhir_server.errors import Issue, operation_outcome

PURPOSE_HEADER = b"x-purpose-of-use"
BREAK_GLASS_HEADER = b"x-break-glass-reason"
_FHIR_JSON = b"application/fhir+json"


class AuthMiddleware:
    def __init__(self, app: ASGIApp, authority: Authority) -> None:
        self.app = app
        self.authority = authority

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        state = scope.setdefault("state", {})
        method = scope.get("method", "GET")
        if not (path == "/fhir" or path.startswith("/fhir/")) or (
            path.rstrip("/") == "/fhir/metadata" and method in ("GET", "HEAD")
        ):
            state["principal"] = ANONYMOUS
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        client = scope.get("client")
        remote = client[0] if client else None
        purpose = _text(headers.get(PURPOSE_HEADER))
        reason = _text(headers.get(BREAK_GLASS_HEADER))
        if self.authority.disabled:
            state["principal"] = Principal(
                client_id="anonymous",
                organization=None,
                scopes=frozenset({"system/*.*"}),
                exchange=True,
                unrestricted=True,
                remote_address=remote,
                purpose_of_use=purpose,
                break_glass_reason=reason,
            )
            await self.app(scope, receive, send)
            return
        authorization = _text(headers.get(b"authorization")) or ""
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            await _refuse(scope, send, 401, "An access token is required: send 'Authorization: Bearer <token>'.", None)
            return
        try:
            claims = await self._verify(token)
            organization, exchange, patient = claims.organization, False, claims.patient
            if claims.local:
                registered = await self._registered(claims.client_id)
                organization, exchange, patient = registered.organization, registered.exchange, registered.patient
        except InvalidToken as error:
            await _refuse(scope, send, 401, str(error), "invalid_token")
            return
        scopes = claims.scopes if patient is not None and organization is None else _without_patient(claims.scopes)
        grants = grants_for(scopes)
        principal = Principal(
            client_id=claims.client_id,
            organization=organization,
            scopes=scopes,
            user=claims.user,
            patient=patient,
            purpose_of_use=purpose,
            break_glass_reason=reason,
            remote_address=remote,
            exchange=exchange,
            unrestricted=exchange and grants.everything(),
        )
        state["principal"] = principal
        if principal.unrestricted:
            await self.app(scope, receive, send)
            return
        parts = [part for part in path[len("/fhir") :].split("/") if part]
        for need in needs_of(method, parts):
            access = grants.access(need.res_type, need.permission)
            if not access.allowed or (access.constraints and not need.constrainable):
                error = forbidden(need, grants, constrained=access.allowed)
                await _refuse(scope, send, 403, error.diagnostics, None, code="forbidden")
                return
            if access.constraints:
                constraints_state(scope)[(need.res_type, need.permission)] = access.constraints
        await self.app(scope, receive, send)

    async def _verify(self, token: str) -> TokenClaims:
        claims = self.authority.verifier.fast(token)
        if claims is None:
            claims = await run_in_threadpool(self.authority.verifier.verify, token)
        return claims

    async def _registered(self, client_id: str) -> Client:
        """The registered client of a token this server issued; 401 when it is no longer registered or active."""
        hit, client = self.authority.clients.cached(client_id)
        if not hit:
            client = await run_in_threadpool(self.authority.clients.load, client_id)
        if client is None:
            raise InvalidToken(f"The client '{client_id}' of this token is not registered.")
        if not client.active:
            raise InvalidToken(f"The client '{client_id}' of this token has been deactivated.")
        return client


def _without_patient(scopes: frozenset[str]) -> frozenset[str]:
    """``patient/`` scopes count only for a resident's app: a token with a patient and no institution."""
    if not any(text.startswith("patient/") for text in scopes):
        return scopes
    return frozenset(text for text in scopes if not text.startswith("patient/"))


def _headers(scope: Scope) -> dict[bytes, bytes]:
    wanted = (b"authorization", PURPOSE_HEADER, BREAK_GLASS_HEADER)
    return {name: value for name, value in scope.get("headers", []) if name in wanted}


def _text(value: bytes | None) -> str | None:
    if value is None:
        return None
    text = value.decode("latin-1").strip()
    return text or None


async def _refuse(scope: Scope, send: Send, status: int, message: str, error: str | None, code: str = "login") -> None:
    """401 (with ``WWW-Authenticate``, RFC 6750 §3) or 403, as an OperationOutcome; a websocket is closed."""
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})
        return
    headers: list[tuple[bytes, bytes]] = [(b"content-type", _FHIR_JSON)]
    if status == 401:
        challenge = 'Bearer realm="hie"'
        if error:
            escaped = message.replace("\\", "\\\\").replace('"', "'")
            challenge += f', error="{error}", error_description="{escaped}"'
        headers.append((b"www-authenticate", challenge.encode("latin-1", "replace")))
    body = orjson.dumps(operation_outcome([Issue("login" if status == 401 else code, message)]))
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
