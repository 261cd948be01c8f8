"""ASGI middleware: one audit event per FHIR request, and per refused (401/403) request anywhere.

It puts an ``AccessCollector`` on the request's state, lets the request run, and after the response queues an
``Access`` naming the interaction (from the method and URL, R4B §3.1.0), the caller (``request.state.principal``),
the status and what the collector saw. The event itself is built and written by the ``AuditTrail``'s thread.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fhir_server.audit.collector import AccessCollector
from fhir_server.audit.events import Access
from fhir_server.audit.trail import AuditTrail

FHIR_PREFIX = "/fhir"
UNAUDITED = frozenset({"/fhir/metadata"})
"""The CapabilityStatement is public and concerns nobody."""
_BY_METHOD_TYPE = {"GET": "search-type", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
_BY_METHOD_INSTANCE = {"GET": "read", "HEAD": "read", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


class Route(NamedTuple):
    """What a FHIR URL addresses: the interaction, the resource named in it, the operation."""

    interaction: str
    reference: str | None = None
    operation: str | None = None
    compartment: str | None = None


_PLAIN = {
    code: Route(code)
    for code in (
        "transaction",
        "search-system",
        "history-system",
        "capabilities",
        "history-type",
        "search-type",
        *_BY_METHOD_TYPE.values(),
    )
}
"""The routes that name no resource, built once."""


def classify(method: str, path: str) -> Route:
    """The FHIR interaction a request is (restful-interaction codes), from its method and path below the base."""
    parts = [part for part in path.split("/") if part]
    if "$" in path:
        for index, part in enumerate(parts):
            if part.startswith("$"):
                reference = "/".join(parts[:2]) if index == 2 else None
                return Route("operation", reference, part)
    if not parts:
        return _PLAIN["transaction" if method == "POST" else "search-system"]
    first = parts[0]
    if first == "_history":
        return _PLAIN["history-system"]
    if first == "_search":
        return _PLAIN["search-system"]
    if first == "metadata":
        return _PLAIN["capabilities"]
    count = len(parts)
    if count == 1:
        return _PLAIN[_BY_METHOD_TYPE.get(method, "search-type")]
    second = parts[1]
    if second == "_history":
        return _PLAIN["history-type"]
    if second == "_search":
        return _PLAIN["search-type"]
    reference = f"{first}/{second}"
    if count == 2:
        return Route(_BY_METHOD_INSTANCE.get(method, "read"), reference)
    if parts[2] == "_history":
        return Route("vread" if count > 3 else "history-instance", reference)
    return Route("search-type", None, None, reference)


class AuditMiddleware:
    """Records every request under ``/fhir`` (but the CapabilityStatement) and every 401/403 elsewhere."""

    def __init__(self, app: ASGIApp, trail: AuditTrail) -> None:
        self.app = app
        self.trail = trail

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.trail.enabled or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        collector = AccessCollector(state)
        state["audit"] = collector
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            path: str = scope["path"]
            fhir = path == FHIR_PREFIX or path.startswith(FHIR_PREFIX + "/")
            if (fhir and path not in UNAUDITED) or status in (401, 403):
                self.trail.record(access_of(scope, status, collector, fhir))


def access_of(scope: Scope, status: int, collector: AccessCollector, fhir: bool) -> Access:
    """The ``Access`` of a finished request."""
    method: str = scope["method"]
    path: str = scope["path"]
    state: dict[str, Any] = scope.get("state", {})
    principal = state.get("principal")
    route = classify(method, path[len(FHIR_PREFIX) :]) if fhir else Route("operation", None, path)
    interaction = collector.interaction or route.interaction
    if route.reference:
        collector.reference(route.reference)  # a Patient among them is noted as its resident
    compartment = route.compartment
    if compartment and compartment.startswith("Patient/"):
        collector.patients[compartment] = None  # the URL's own ``Patient/{id}``: its resident
    query = None
    if interaction.startswith("search") or interaction.startswith("history") or route.operation:
        raw = scope.get("query_string", b"").decode("latin-1")
        query = collector.query if collector.query is not None else raw
        if not query and not interaction.startswith("search"):
            query = None
    client = scope.get("client")
    if principal is None and status != 401:
        principal = collector.principal
    return Access(
        interaction=interaction,
        status=status,
        recorded=time.time_ns() // 1000,
        method=method,
        path=path,
        client_id=principal.client_id if principal else None,
        organization=principal.organization if principal else None,
        user=principal.user if principal else None,
        purpose_of_use=principal.purpose_of_use if principal else None,
        break_glass_reason=(principal.break_glass_reason if principal else None) or _break_glass(state),
        remote_address=(principal.remote_address if principal else None) or (client[0] if client else None),
        action="D" if collector.erased else None,
        operation=route.operation,
        query=query,
        resources=list(collector.resources),
        patients=list(collector.patients),
        erased=collector.erased,
    )


def _break_glass(state: dict[str, Any]) -> str | None:
    """A break-glass flag the access layer left on the request (a reason, or True)."""
    flag = state.get("break_glass")
    if not flag:
        return None
    return flag if isinstance(flag, str) else "break-glass"
