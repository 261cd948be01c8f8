"""Who the current request runs as: the ``Principal`` on ``request.state``, SYSTEM when there is none.

Reads take the principal explicitly (handlers call :func:`principal_of`). Writes are stamped deep in the
repository, so the request's state is also bound to a context variable by :class:`BindCaller` (an ASGI
middleware); :func:`acting_principal` reads it there and is SYSTEM outside a request (adapters, CLI,
background threads).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from fhir_server.auth.principal import SYSTEM, Principal
from fhir_server.errors import FhirError

_STATE: ContextVar[dict[str, Any] | None] = ContextVar("hie_request_state", default=None)
_ACTING: ContextVar[Principal | None] = ContextVar("hie_acting_principal", default=None)


def principal_of(request: HTTPConnection) -> Principal:
    """The caller of a request (set by the authentication middleware), or SYSTEM before it lands."""
    principal = getattr(request.state, "principal", None)
    return principal if isinstance(principal, Principal) else SYSTEM


def acting_principal() -> Principal:
    """The principal writes of the current context are stamped with."""
    acting = _ACTING.get()
    if acting is not None:
        return acting
    state = _STATE.get()
    principal = state.get("principal") if state is not None else None
    return principal if isinstance(principal, Principal) else SYSTEM


@contextmanager
def acting_as(principal: Principal) -> Iterator[None]:
    """Run in-process work (a domain module, a test) as ``principal`` rather than SYSTEM."""
    token = _ACTING.set(principal)
    try:
        yield
    finally:
        _ACTING.reset(token)


def refuse_resident_app(principal: Principal, operation: str) -> None:
    """403 for a resident's app calling an operation that looks across every resident's records (``$match``)."""
    if principal.patient is not None and not principal.exchange:
        raise FhirError(
            "forbidden",
            f"{operation} looks up every resident's records: a resident's app reads its own resident's record only.",
        )


class BindCaller:
    """ASGI middleware: makes the request's state (and so its principal, whenever set) the acting one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = _STATE.set(scope.setdefault("state", {}))
        try:
            await self.app(scope, receive, send)
        finally:
            _STATE.reset(token)
