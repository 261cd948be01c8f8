"""Scope checks the handlers make themselves: search types and v2 constraints, includes, bundle entries,
exports, and whether a resource read or written lies inside a constrained scope (SMART App Launch 2.0 §Scopes).

The middleware has already checked what the URL alone tells (``fhir_server.auth.policy``) and left, for
interactions a constrained scope may cover, the constraints under ``request.state.scope_constraints``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import Connection, and_, select
from sqlalchemy.sql import ColumnElement
from starlette.requests import HTTPConnection

from fhir_server import definitions
from fhir_server.access.versions import shadow_version
from fhir_server.auth.policy import Need, forbidden, needs_of
from fhir_server.auth.principal import SYSTEM, Principal
from fhir_server.auth.scopes import Constraint, Grants, grants_for
from fhir_server.errors import FhirError
from fhir_server.repository import Version
from fhir_server.search.parameters import Registry
from fhir_server.search.query import Restriction, find
from fhir_server.search.request import Clause, parse_request
from fhir_server.storage.engine import unit_of_work
from fhir_server.storage.tables import resources

CONSTRAINTS = "scope_constraints"


def principal_of(connection: HTTPConnection) -> Principal:
    """The caller of a request; the exchange itself when no authentication ran (in-process use)."""
    state = connection.scope.get("state")
    return (state.get("principal") if state else None) or SYSTEM


def _grants(connection: HTTPConnection) -> Grants | None:
    principal = principal_of(connection)
    return None if principal.unrestricted else grants_for(principal.scopes)


def require(grants: Grants | None, needs: list[Need]) -> None:
    """Every need granted by an unconstrained scope, or 403."""
    if grants is None:
        return
    for need in needs:
        access = grants.access(need.res_type, need.permission)
        if not access.allowed:
            raise forbidden(need, grants)
        if access.constraints:
            raise forbidden(need, grants, constrained=True)


def require_read(connection: HTTPConnection, types: list[str]) -> None:
    """Read on each type (``$export`` of those types, Bulk Data IG §Authorization)."""
    require(_grants(connection), [Need(t, "r") for t in types])


def search_clauses(connection: HTTPConnection, registry: Registry, types: tuple[str, ...]) -> list[Clause]:
    """Check search permission on ``types`` (every type when empty) and return the clauses a v2 constraint adds.

    A constrained scope (``system/Observation.rs?category=vital-signs``) narrows a search of that one type by
    its constraint in SQL, so paging and totals stay exact.
    """
    grants = _grants(connection)
    if grants is None:
        return []
    if not types:
        require(grants, [Need("*", "s")])
        return []
    constrained: dict[str, tuple[Constraint, ...]] = {}
    for res_type in types:
        access = grants.access(res_type, "s")
        if not access.allowed:
            raise forbidden(Need(res_type, "s"), grants)
        if access.constraints:
            constrained[res_type] = access.constraints
    if not constrained:
        return []
    if len(types) != 1:
        raise forbidden(Need(next(iter(constrained)), "s"), grants, constrained=True)
    res_type = types[0]
    params = _merged(constrained[res_type])
    if params is None:
        raise FhirError(
            "forbidden",
            f"The token's constrained {res_type} scopes use different parameters and cannot be combined in one "
            f"search; request a token with one of them.",
        )
    return list(parse_request(registry, (res_type,), params).clauses)


def _merged(alternatives: tuple[Constraint, ...]) -> list[tuple[str, str]] | None:
    """One set of search parameters equal to 'any of the constraints', or None when there is none."""
    if len(alternatives) == 1:
        return list(alternatives[0])
    names = {tuple(name for name, _ in alt) for alt in alternatives}
    if len(names) != 1 or len(next(iter(names))) != 1:
        return None
    name = next(iter(names))[0]
    return [(name, ",".join(dict.fromkeys(alt[0][1] for alt in alternatives)))]


def include_types(connection: HTTPConnection) -> frozenset[str] | None:
    """Types ``_include``/``_revinclude`` may add (unconstrained read); None when every type is readable."""
    grants = _grants(connection)
    if grants is None or grants.readable("*"):
        return None
    return _readable_types(grants)


@lru_cache(maxsize=4096)
def _readable_types(grants: Grants) -> frozenset[str]:
    """Per ``Grants`` (shared by every token with the same scopes, :func:`grants_for`), not per search."""
    return frozenset(t for t in definitions.resource_types() if grants.readable(t))


def restricted_to_types(restrict: Restriction | None, types: frozenset[str] | None) -> Restriction | None:
    """``restrict`` and, when ``types`` is given, ``res_type IN types``: what ``_include`` may add, in its SQL."""
    if types is None:
        return restrict

    def condition(table: Any, type_name: str | None) -> ColumnElement[bool]:
        allowed = table.c.res_type.in_(sorted(types))
        return and_(restrict(table, type_name), allowed) if restrict is not None else allowed

    return condition


def check_in_scope(
    conn: Connection,
    matches: Callable[..., list[int]],
    connection: HTTPConnection,
    res_type: str,
    res_id: str,
    permission: str,
    *,
    existing: bool = False,
) -> None:
    """403 unless the resource matches the constraint of a constrained scope the request was let in by.

    ``matches`` is ``FhirService.matches``. Reads check the stored resource; writes check what they wrote, inside
    the same unit of work, so a refused write is rolled back; ``existing`` checks, before an update or delete,
    the version it replaces (when there is one).
    """
    state = connection.scope.get("state") or {}
    alternatives = state.get(CONSTRAINTS, {}).get((res_type, permission))
    if not alternatives:
        return
    if existing and not matches(conn, res_type, [("_id", res_id)], limit=1):
        return
    for constraint in alternatives:
        if matches(conn, res_type, [("_id", res_id), *constraint], limit=1):
            return
    allowed = " or ".join(f"{res_type}?{urlencode(c)}" for c in alternatives)
    raise FhirError("forbidden", f"{res_type}/{res_id} is outside the token's constrained scope ({allowed}).")


def check_version_in_scope(conn: Connection, service: Any, connection: HTTPConnection, found: Version) -> None:
    """403 unless the version a vread returns matches the constraint of the scope the request was let in by.

    The search index holds current versions only: the current version is checked as a read is; an older one is
    matched on a shadow copy (its index rows under a fresh id, inside a savepoint that is rolled back), so the
    constraint is judged on what is answered. A deleted version answers no content (410) and is not checked.
    ``service`` is the ``FhirService``.
    """
    state = connection.scope.get("state") or {}
    alternatives = state.get(CONSTRAINTS, {}).get((found.res_type, "r"))
    if not alternatives or found.deleted:
        return
    r = resources.c
    current = conn.execute(select(r.version, r.deleted).where(r.res_pk == found.res_pk)).first()
    if current is not None and current.version == found.version and not current.deleted:
        check_in_scope(conn, service.matches, connection, found.res_type, found.res_id, "r")
        return
    if not _version_matches(conn, service.registry, found, alternatives):
        allowed = " or ".join(f"{found.res_type}?{urlencode(c)}" for c in alternatives)
        raise FhirError(
            "forbidden",
            f"{found.location} is outside the token's constrained scope ({allowed}).",
        )


def _version_matches(
    conn: Connection, registry: Registry, found: Version, alternatives: tuple[Constraint, ...]
) -> bool:
    """Whether a stored (not current) version meets any of the constraints: searched as a shadow copy.

    The copy is written on a writer's connection of its own (SQLite: in the writers' queue, so a read transaction
    never has to upgrade to a write lock another writer holds) and rolled back."""
    with unit_of_work(conn.engine) as writer:
        return _shadow_matches(writer, registry, found, alternatives)


def _shadow_matches(conn: Connection, registry: Registry, found: Version, alternatives: tuple[Constraint, ...]) -> bool:
    with shadow_version(conn, registry, found) as res_pk:
        shadow_id = conn.execute(select(resources.c.res_id).where(resources.c.res_pk == res_pk)).scalar_one()
        return any(
            find(conn, registry, found.res_type, [("_id", shadow_id), *constraint], limit=1)
            for constraint in alternatives
        )


def bundle_authorizer(connection: HTTPConnection) -> Callable[[str, str], None] | None:
    """Checks one bundle entry (method, url); None for an unrestricted caller.

    Entries need unconstrained scopes: a v2 constraint is not applied inside bundles.
    """
    grants = _grants(connection)
    if grants is None:
        return None

    def authorize(method: str, url: str) -> None:
        path = url.partition("?")[0]
        parts = [p for p in path.split("/") if p]
        if parts and parts[0].startswith(("http:", "https:")):
            raise FhirError("not-supported", f"Bundle entry URLs are relative to this server, not {url}.")
        if not parts or (method == "GET" and parts[0] in ("_search", "_history")):
            require(grants, [Need("*", "s" if not parts or parts[0] == "_search" else "r")])
        require(grants, needs_of(method, parts))

    return authorize


def constraints_state(scope: dict[str, Any]) -> dict[tuple[str, str], tuple[Constraint, ...]]:
    state = scope.setdefault("state", {})
    return state.setdefault(CONSTRAINTS, {})


__all__ = [
    "bundle_authorizer",
    "check_in_scope",
    "check_version_in_scope",
    "include_types",
    "principal_of",
    "require",
    "require_read",
    "search_clauses",
]
