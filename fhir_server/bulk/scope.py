"""What a Bulk Data export covers: level, types, ``_since`` and ``_typeFilter``, as SQL over current resources.

Bulk Data Access IG v2 §Query Parameters: system level exports every type; Patient and Group level export
the Patient compartment (R4B CompartmentDefinition) of every patient or of the Group's members.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from sqlalchemy import Connection, Select, and_, exists, false, or_, select, text

from fhir_server import definitions
from fhir_server.access import UNRESTRICTED, Access
from fhir_server.errors import invalid
from fhir_server.repository import Repository
from fhir_server.search.extract import extract
from fhir_server.search.index import split_reference
from fhir_server.search.param_ids import ids_named
from fhir_server.search.parameters import Registry
from fhir_server.search.query import filtered
from fhir_server.search.request import RESULT_PARAMETERS, parse_request
from fhir_server.search.values import date_range
from fhir_server.storage.tables import reference_index, resource_versions, resources

OUTPUT_FORMATS = frozenset({"application/fhir+ndjson", "application/ndjson", "ndjson"})
_FILTER_SPLIT = re.compile(r",(?=[A-Z][A-Za-z]{0,63}\?)")
NOT_SUPPORTED = frozenset({"_elements", "includeAssociatedData", "patient", "_until", "organizeOutputBy"})


@dataclass
class ExportScope:
    """A parsed kick-off request."""

    level: str
    """``system``, ``patient`` or ``group``."""
    group_id: str | None = None
    types: list[str] | None = None
    since: int | None = None
    type_filters: list[str] = field(default_factory=list)
    access: Access = UNRESTRICTED
    """What the requesting client may read (institution and consent, as of the export): filtered in the SQL."""


def parse_kickoff(
    registry: Registry,
    level: str,
    params: list[tuple[str, str]],
    *,
    group_id: str | None = None,
) -> ExportScope:
    """Check the kick-off parameters; every problem is a 400 naming the parameter."""
    scope = ExportScope(level, group_id)
    allowed = patient_types() if level != "system" else definitions.resource_types()
    for name, raw in params:
        if name == "_outputFormat":
            if raw not in OUTPUT_FORMATS:
                raise invalid(f"_outputFormat={raw} is not served; use application/fhir+ndjson.", expression=(name,))
        elif name == "_since":
            span = date_range(raw)
            if span is None:
                raise invalid(f"_since={raw} is not a FHIR instant.", expression=(name,))
            scope.since = span[0]
        elif name == "_type":
            for res_type in (t.strip() for t in raw.split(",") if t.strip()):
                if res_type not in allowed:
                    where = "an R4B resource type" if level == "system" else "in the Patient compartment"
                    raise invalid(f"_type {res_type} is not {where}.", expression=(name,))
                scope.types = [*(scope.types or []), res_type]
        elif name == "_typeFilter":
            for query in _FILTER_SPLIT.split(raw):
                check_type_filter(registry, query, allowed)
                scope.type_filters.append(query)
        elif name in NOT_SUPPORTED:
            raise invalid(f"The export parameter {name} is not supported by this server.", expression=(name,))
        elif name not in ("_format",):
            raise invalid(f"Unknown export parameter {name}.", expression=(name,))
    return scope


def check_type_filter(registry: Registry, query: str, allowed: frozenset[str]) -> None:
    res_type, question, rest = query.partition("?")
    if not question or res_type not in allowed:
        raise invalid(f"_typeFilter '{query}' must be Type?params with an exported type.", expression=("_typeFilter",))
    params = parse_qsl(rest, keep_blank_values=True)
    if any(name.split(":", 1)[0] in RESULT_PARAMETERS for name, _ in params):
        raise invalid(f"_typeFilter '{query}' may not use result parameters.", expression=("_typeFilter",))
    parse_request(registry, (res_type,), params)


def patient_types() -> frozenset[str]:
    return frozenset({*definitions.compartment("Patient"), "Patient"})


def export_types(scope: ExportScope) -> list[str]:
    """The types to export, in the order their files are written."""
    if scope.types:
        return sorted(set(scope.types))
    if scope.level == "system":
        return sorted(definitions.resource_types())
    return sorted(patient_types())


def group_members(conn: Connection, repository: Repository, group_id: str) -> list[str]:
    """Patient ids of ``Group.member.entity`` (inactive members left out)."""
    group = repository.read(conn, "Group", group_id).resource()
    members = []
    for member in group.get("member") or []:
        if member.get("inactive"):
            continue
        reference = (member.get("entity") or {}).get("reference") or ""
        parts = reference.split("/_history/")[0].rstrip("/").split("/")
        if len(parts) >= 2 and parts[-2] == "Patient":
            members.append(parts[-1])
    return sorted(set(members))


def present_types(conn: Connection) -> set[str]:
    """The resource types that have rows at all: one index probe per type (a loose scan of ``res_type``).

    An export of every type then skips the ~140 types the archive does not hold instead of querying each.
    """
    rows = conn.execute(
        text(
            "WITH RECURSIVE t(res_type) AS ("
            " SELECT min(res_type) FROM resources"
            " UNION ALL"
            " SELECT (SELECT min(res_type) FROM resources r WHERE r.res_type > t.res_type)"
            " FROM t WHERE t.res_type IS NOT NULL)"
            " SELECT res_type FROM t WHERE res_type IS NOT NULL"
        )
    )
    return set(rows.scalars())


def chunk_query(
    conn: Connection,
    registry: Registry,
    scope: ExportScope,
    res_type: str,
    *,
    members: list[str] | None,
    after: int,
    limit: int,
) -> Select:
    """``(res_pk, body)`` of the next ``limit`` current resources of ``res_type`` in scope, by res_pk."""
    r = resources.alias("x")
    v = resource_versions
    where: list[Any] = [r.c.res_type == res_type, r.c.deleted.is_(False), r.c.res_pk > after]
    if scope.since is not None:
        where.append(r.c.ts > scope.since)
    filters = [q for q in scope.type_filters if q.partition("?")[0] == res_type]
    if filters:
        where.append(or_(*(r.c.res_pk.in_(_filter_select(conn, registry, q)) for q in filters)))
    if scope.level != "system":
        where.append(_in_compartment(r, res_type, members))
    restrict = scope.access.restriction
    if restrict is not None:
        where.append(restrict(r, res_type))
    return (
        select(r.c.res_pk, v.c.body)
        .join(v, and_(v.c.res_pk == r.c.res_pk, v.c.version == r.c.version))
        .where(*where)
        .order_by(r.c.res_pk)
        .limit(limit)
    )


def deleted_query(scope: ExportScope, types: list[str], *, after: int, limit: int) -> Select:
    """``(res_pk, res_type, res_id, version, ts)`` of the next resources of ``types`` deleted after ``_since``.

    Bulk Data IG v2 §Response - Complete Status, ``deleted``: what an export with ``_since`` would have held
    but was deleted since. Deleted resources have no index rows, so ``_typeFilter`` cannot narrow them and
    the compartment of a Patient or Group export is judged by :func:`was_in_compartment`.
    """
    r = resources
    owned = [] if scope.access.restriction is None else [r.c.owner_org == scope.access.org]  # owner's only
    return (
        select(r.c.res_pk, r.c.res_type, r.c.res_id, r.c.version, r.c.ts)
        .where(r.c.deleted.is_(True), r.c.ts > scope.since, r.c.res_type.in_(types), r.c.res_pk > after, *owned)
        .order_by(r.c.res_pk)
        .limit(limit)
    )


def was_in_compartment(
    registry: Registry, res_type: str, res_id: str, last_live: dict[str, Any] | None, members: list[str] | None
) -> bool:
    """Whether a deleted resource was in the exported Patient compartment, judged on its last live version."""
    if res_type == "Patient":
        return members is None or res_id in members
    if last_live is None:
        return False
    for code in definitions.compartment("Patient").get(res_type, []):
        param = registry.get(res_type, code)
        if param is None:
            continue
        for value in extract(last_live, param.expression):
            reference = value.get("reference") if isinstance(value, dict) else None
            target_type, target_id = split_reference(reference) if isinstance(reference, str) else (None, None)
            if target_type == "Patient" and (members is None or target_id in members):
                return True
    return False


def _filter_select(conn: Connection, registry: Registry, query: str) -> Select:
    res_type, _, rest = query.partition("?")
    return filtered(conn, parse_request(registry, (res_type,), parse_qsl(rest, keep_blank_values=True)))


def _in_compartment(r: Any, res_type: str, members: list[str] | None) -> Any:
    if res_type == "Patient":
        return r.c.res_id.in_(members) if members is not None else r.c.res_type == "Patient"
    params = definitions.compartment("Patient").get(res_type)
    if not params:
        return false()
    x = reference_index
    link = [x.c.res_pk == r.c.res_pk, x.c.param_id.in_(ids_named(params, [res_type])), x.c.target_type == "Patient"]
    if members is not None:
        link.append(x.c.target_id.in_(members))
    return exists().where(*link)


__all__ = [
    "ExportScope",
    "chunk_query",
    "deleted_query",
    "export_types",
    "group_members",
    "parse_kickoff",
    "patient_types",
    "present_types",
    "was_in_compartment",
]
