"""``_include`` and ``_revinclude`` (R4B §3.1.1.5.4): resources a page refers to, or that refer to it."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import Connection, and_, or_, select
from sqlalchemy.sql import ColumnElement

from fhir_server.search import param_ids
from fhir_server.search.predicates import table_alias
from fhir_server.search.query import Hit, Restriction
from fhir_server.search.request import Include
from fhir_server.storage.tables import reference_index, resources

MAX_ROUNDS = 4
"""``:iterate`` follows includes of includes this many times at most."""


def included(
    conn: Connection, matches: list[Hit], specs: list[Include], *, limit: int, restrict: Restriction | None = None
) -> list[Hit]:
    """Resources added by the include specs, without the matches themselves and at most ``limit`` of them.

    ``restrict`` (access control) keeps out what the caller may not read, in the SQL of each round.
    """
    if not specs or not matches:
        return []
    seen = {hit.pk for hit in matches}
    found: list[Hit] = []
    frontier, active = matches, specs
    for _ in range(MAX_ROUNDS):
        new: list[Hit] = []
        for spec in active:
            for hit in _follow(conn, frontier, spec, limit - len(found) - len(new), restrict):
                if hit.pk not in seen:
                    seen.add(hit.pk)
                    new.append(hit)
        found.extend(new)
        active = [spec for spec in specs if spec.iterate]
        if not new or not active or len(found) >= limit:
            break
        frontier = new
    return found[:limit]


def _follow(
    conn: Connection, frontier: list[Hit], spec: Include, limit: int, restrict: Restriction | None
) -> list[Hit]:
    if limit <= 0:
        return []
    link = table_alias(reference_index, 0)
    other = table_alias(resources, 1)
    conditions: list[ColumnElement[bool]] = [other.c.deleted.is_(False)]
    if restrict is not None:
        conditions.append(restrict(other, None))
    source = None if spec.source == "*" else spec.source
    if spec.param != "*" and source is not None:
        conditions.append(link.c.param_id == param_ids.lookup(conn, source, spec.param))
    elif spec.param != "*":
        conditions.append(link.c.param_id.in_(param_ids.ids_named([spec.param])))
    if spec.target:
        conditions.append(link.c.target_type == spec.target)
    if spec.reverse:
        by_type: dict[str, list[str]] = defaultdict(list)
        for hit in frontier:
            by_type[hit.type].append(hit.id)
        conditions += [
            or_(*(and_(link.c.target_type == t, link.c.target_id.in_(ids)) for t, ids in by_type.items())),
            other.c.res_pk == link.c.res_pk,
        ]
        if source is not None and spec.param == "*":
            conditions.append(link.c.param_id.in_(param_ids.ids_named(None, [source])))
    else:
        sources = [hit.pk for hit in frontier if spec.source in ("*", hit.type)]
        if not sources:
            return []
        conditions += [
            link.c.res_pk.in_(sources),
            other.c.res_type == link.c.target_type,
            other.c.res_id == link.c.target_id,
        ]
    query = (
        select(other.c.res_pk, other.c.res_type, other.c.res_id)
        .where(*conditions)
        .distinct()
        .order_by(other.c.res_pk)
        .limit(limit)
    )
    return [Hit(row.res_pk, row.res_type, row.res_id) for row in conn.execute(query)]
