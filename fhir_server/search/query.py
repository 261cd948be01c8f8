"""Search: parse the query into typed criteria, then build SQL from one predicate builder per parameter type.

R4B §3.1.1 Search. Criteria on one parameter joined by comma are ORed; repeated parameters are ANDed.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, and_, exists, false, or_, select
from sqlalchemy.sql import ColumnElement

from fhir_server.errors import FhirError
from fhir_server.search.parameters import Registry, SearchParam
from fhir_server.search.values import fold
from fhir_server.storage.tables import reference_index, resources, string_index, token_index

RESULT_PARAMETERS = frozenset(
    {
        "_count",
        "_sort",
        "_include",
        "_revinclude",
        "_summary",
        "_total",
        "_elements",
        "_contained",
        "_containedType",
        "_format",
        "_pretty",
        "_cursor",
    }
)


@dataclass(frozen=True)
class Criterion:
    """One ``name[:modifier]=v1,v2`` of a query, resolved against its parameter definition."""

    param: SearchParam | None
    name: str
    modifier: str | None
    values: tuple[str, ...]


def split_values(raw: str) -> tuple[str, ...]:
    """Split on unescaped commas and unescape ``\\,`` ``\\$`` ``\\|`` ``\\\\`` (R4B §3.1.1.5.7)."""
    values, current, escaped = [], [], False
    for char in raw:
        if escaped:
            current.append(char if char in ",$|\\" else "\\" + char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            values.append("".join(current))
            current = []
        else:
            current.append(char)
    values.append("".join(current))
    return tuple(values)


def split_pipe(value: str) -> tuple[str | None, str]:
    """``system|code`` → (system, code); a value without ``|`` has no system constraint (None)."""
    if "|" not in value:
        return None, value
    system, code = value.split("|", 1)
    return system, code


def parse_criteria(registry: Registry, res_type: str, params: list[tuple[str, str]]) -> list[Criterion]:
    criteria = []
    for name, raw in params:
        base, _, modifier = name.partition(":")
        if base in RESULT_PARAMETERS:
            continue
        if base == "_id":
            criteria.append(Criterion(None, "_id", modifier or None, split_values(raw)))
            continue
        param = registry.get(res_type, base)
        if param is None:
            raise FhirError("invalid", f"Unknown search parameter '{base}' for {res_type}.", expression=(name,))
        if param.type not in _BUILDERS:
            raise FhirError(
                "not-supported",
                f"Search parameter '{base}' of type {param.type} is not supported yet.",
                expression=(name,),
            )
        criteria.append(Criterion(param, base, modifier or None, split_values(raw)))
    return criteria


def find(
    conn: Connection, registry: Registry, res_type: str, params: list[tuple[str, str]], *, limit: int
) -> list[int]:
    """The res_pk of current, non-deleted resources matching every criterion (at most ``limit``)."""
    criteria = parse_criteria(registry, res_type, params)
    query = select(resources.c.res_pk).where(resources.c.res_type == res_type, resources.c.deleted.is_(False))
    for criterion in criteria:
        query = query.where(predicate(res_type, criterion))
    return list(conn.execute(query.order_by(resources.c.res_pk).limit(limit)).scalars())


def predicate(res_type: str, criterion: Criterion) -> ColumnElement[bool]:
    if criterion.param is None:
        return resources.c.res_id.in_(criterion.values)
    return _BUILDERS[criterion.param.type](res_type, criterion)


def _exists(table, res_type: str, criterion: Criterion, alternatives: list[ColumnElement[bool]]):  # type: ignore[no-untyped-def]
    return exists().where(
        table.c.res_pk == resources.c.res_pk,
        table.c.res_type == res_type,
        table.c.param == criterion.name,
        or_(*alternatives) if alternatives else false(),
    )


def _token(res_type: str, criterion: Criterion) -> ColumnElement[bool]:
    t = token_index.c
    alternatives = []
    for value in criterion.values:
        system, code = split_pipe(value)
        if criterion.modifier == "text":
            alternatives.append(t.text.like(fold(value) + "%"))
        elif system is None:
            alternatives.append(t.code == code)
        elif system == "":
            alternatives.append(and_(t.code == code, t.system.is_(None)))
        elif code == "":
            alternatives.append(t.system == system)
        else:
            alternatives.append(and_(t.system == system, t.code == code))
    matched = _exists(token_index, res_type, criterion, alternatives)
    return ~matched if criterion.modifier == "not" else matched


def _string(res_type: str, criterion: Criterion) -> ColumnElement[bool]:
    s = string_index.c
    alternatives = []
    for value in criterion.values:
        if criterion.modifier == "exact":
            alternatives.append(s.exact == value)
        elif criterion.modifier == "contains":
            alternatives.append(s.norm.contains(fold(value), autoescape=True))
        else:
            alternatives.append(s.norm.startswith(fold(value), autoescape=True))
    return _exists(string_index, res_type, criterion, alternatives)


def _reference(res_type: str, criterion: Criterion) -> ColumnElement[bool]:
    r = reference_index.c
    alternatives = []
    for value in criterion.values:
        if "/" in value:
            parts = value.rstrip("/").split("/")
            alternatives.append(and_(r.target_type == parts[-2], r.target_id == parts[-1]))
        else:
            alternatives.append(r.target_id == value)
    return _exists(reference_index, res_type, criterion, alternatives)


_BUILDERS = {"token": _token, "string": _string, "reference": _reference}
SUPPORTED_TYPES = frozenset(_BUILDERS)
