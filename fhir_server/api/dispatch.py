"""The two hot paths of the REST API matched first: read ``GET [base]/[type]/[id]`` and search ``GET [base]/[type]``.

FastAPI tries its routes one after the other, router by router: a read was matched only after about 40 others
(tokens, subscriptions, bulk export, operations, search) had been tried, some twice. These routes are tried
before all of them and decide with a look at the path: a known resource type and, for a read, a valid id (R4B
§2.6.1: 1–64 of ``A–Z a–z 0–9 - .``). Anything else (``$operations``, ``_history``, ``metadata``, an
OperationDefinition served by the operations router, an invalid id) falls through to the ordinary routes, and the
handlers are the very ones the generic routers registered, so the answers are the same; only the lookup is short.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable

from fastapi import APIRouter, Request, Response
from starlette._utils import get_route_path
from starlette.routing import BaseRoute, Match, request_response
from starlette.types import Receive, Scope, Send

from fhir_server import definitions
from fhir_server.api.hardening import RateLimiter, limit_rate

FHIR_PREFIX = "/fhir/"
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
OWN_ROUTES = frozenset({"OperationDefinition"})
"""Types whose instances another router serves (the server's own OperationDefinitions)."""

Endpoint = Callable[..., Awaitable[Response]]


class HotRoute(BaseRoute):
    """``GET /fhir/{res_type}`` (one segment) or ``GET /fhir/{res_type}/{res_id}`` (two) for a known type."""

    def __init__(self, name: str, endpoint: Endpoint, segments: int, limiter: RateLimiter | None) -> None:
        self.name = name
        self.endpoint = endpoint
        self.segments = segments
        self.limiter = limiter
        self.types = frozenset(definitions.resource_types()) - OWN_ROUTES
        self.app = request_response(self._respond)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http" or scope["method"] != "GET":
            return Match.NONE, {}
        path = get_route_path(scope)
        if not path.startswith(FHIR_PREFIX):
            return Match.NONE, {}
        parts = path[len(FHIR_PREFIX) :].split("/")
        if len(parts) != self.segments or parts[0] not in self.types:
            return Match.NONE, {}
        params = {"res_type": parts[0]}
        if self.segments == 2:
            if _ID.fullmatch(parts[1]) is None:
                return Match.NONE, {}
            params["res_id"] = parts[1]
        return Match.FULL, {"endpoint": self.endpoint, "path_params": {**scope.get("path_params", {}), **params}}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)

    async def _respond(self, request: Request) -> Response:
        if self.limiter is not None:
            limit_rate(self.limiter, request)  # the application-wide dependency of every other route
        return await self.endpoint(request, **request.path_params)

    def __repr__(self) -> str:
        return f"HotRoute({self.name!r}, segments={self.segments})"


def _endpoint(routers: Iterable[APIRouter], path: str) -> Endpoint:
    for router in routers:
        for route in router.routes:
            if getattr(route, "path", None) == path and "GET" in (getattr(route, "methods", None) or ()):
                return route.endpoint  # type: ignore[attr-defined, no-any-return]
    raise LookupError(f"no GET route {path} to put first")


def hot_routes(routers: Iterable[APIRouter], limiter: RateLimiter | None) -> list[BaseRoute]:
    """The read and type-search routes, with the handlers of ``routers`` (interactions and search)."""
    routers = list(routers)
    return [
        HotRoute("read", _endpoint(routers, "/fhir/{res_type}/{res_id}"), 2, limiter),
        HotRoute("search-type", _endpoint(routers, "/fhir/{res_type:fhirtype}"), 1, limiter),
    ]
