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
from fhir_server.auth.policy import Need, forbidden, needs_of
from fhir_server.auth.principal import ANONYMOUS, Principal
from fhir_server.auth.scopes import Grants, grants_for
from fhir_server.auth.tokens import InvalidToken, TokenClaims
from fhir_server.errors import Issue, operation_outcome

PURPOSE_HEADER = b"x-purpose-of-use"
BREAK_GLASS_HEADER = b"x-break-glass-reason"
_FHIR_JSON = b"application/fhir+json"


MAX_PRINCIPALS = 10_000
"""Principals kept for reuse (tokens × addresses × stated purposes); the cache starts afresh when full."""


class AuthMiddleware:
    def __init__(self, app: ASGIApp, authority: Authority) -> None:
        self.app = app
        self.authority = authority
        self._principals: dict[tuple[str, str | None, str | None, str | None], _Known] = {}
        """The principal of a token, address and stated purpose, built once: reused while the verifier answers
        with the same claims and the registry with the same client row (an expired token, a client deactivated
        or reloaded, make a new entry or a 401 as before)."""

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
            claims = self.authority.verifier.fast(token)  # a token seen before: no I/O, no coroutine
            if claims is None:
                claims = await run_in_threadpool(self.authority.verifier.verify, token)
            registered = None
            if claims.local:  # issued here: its client must still be registered and active
                hit, registered = self.authority.clients.cached(claims.client_id)
                if not hit:
                    registered = await run_in_threadpool(self.authority.clients.load, claims.client_id)
                _check_registered(claims.client_id, registered)
        except InvalidToken as error:
            await _refuse(scope, send, 401, str(error), "invalid_token")
            return
        key = (token, remote, purpose, reason)
        known = self._principals.get(key)
        if known is not None and known[0] is claims and known[1] is registered:
            principal, grants = known[2], known[3]
        else:
            principal, grants = _principal(claims, registered, purpose, reason, remote)
            if len(self._principals) >= MAX_PRINCIPALS:
                self._principals.clear()
            self._principals[key] = (claims, registered, principal, grants)
        state["principal"] = principal
        if principal.unrestricted:
            await self.app(scope, receive, send)
            return
        for need in _needs(method, path):
            access = grants.access(need.res_type, need.permission)
            if not access.allowed or (access.constraints and not need.constrainable):
                error = forbidden(need, grants, constrained=access.allowed)
                await _refuse(scope, send, 403, error.diagnostics, None, code="forbidden")
                return
            if access.constraints:
                constraints_state(scope)[(need.res_type, need.permission)] = access.constraints
        await self.app(scope, receive, send)


def _check_registered(client_id: str, client: Client | None) -> None:
    """401 for the client of a token this server issued when it is no longer registered or active."""
    if client is None:
        raise InvalidToken(f"The client '{client_id}' of this token is not registered.")
    if not client.active:
        raise InvalidToken(f"The client '{client_id}' of this token has been deactivated.")


_Known = tuple[TokenClaims, Client | None, Principal, Grants]


def _principal(
    claims: TokenClaims, registered: Client | None, purpose: str | None, reason: str | None, remote: str | None
) -> tuple[Principal, Grants]:
    """The caller a verified token stands for: a token this server issued acts as its registered client."""
    organization, exchange, patient = claims.organization, False, claims.patient
    if registered is not None:
        organization, exchange, patient = registered.organization, registered.exchange, registered.patient
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
    return principal, grants


_NEEDS: dict[tuple[str, ...], list[Need]] = {}


def _needs(method: str, path: str) -> list[Need]:
    """``needs_of`` the path below ``/fhir``, kept per method and type for reads and writes of an instance (what
    they need does not depend on the id) and for the type-level interactions."""
    parts = [part for part in path[len("/fhir") :].split("/") if part]
    if len(parts) == 1 and not parts[0].startswith("$"):
        key: tuple[str, ...] = (method, parts[0])
    elif len(parts) == 2 and not parts[1].startswith(("$", "_")) and not parts[0].startswith("$"):
        key = (method, parts[0], "")
    else:
        return needs_of(method, parts)
    found = _NEEDS.get(key)
    if found is None:
        if len(_NEEDS) >= MAX_PRINCIPALS:
            _NEEDS.clear()
        found = _NEEDS[key] = needs_of(method, parts)
    return found


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
