"""Run a typed search request: filter in SQL, sort by any parameters, page by keyset cursor, count.

R4B §3.1.1.5 (result parameters). Pages are cut by a cursor holding the last row's sort keys and ``res_pk``,
never by OFFSET, so rows inserted or deleted between page fetches neither repeat nor skip other rows.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Integer, Select, and_, false, func, literal_column, or_, select
from sqlalchemy.sql import ColumnElement

from fhir_server.search import date_spans, param_ids
from fhir_server.search.parameters import Registry
from fhir_server.search.predicates import (
    DateWindow,
    PredicateBuilder,
    Target,
    current,
    date_windows,
    of_type,
    selectivity,
    table_alias,
)
from fhir_server.search.request import (
    Chain,
    Clause,
    Has,
    Match,
    SearchRequest,
    SortKey,
    decode_cursor,
    encode_cursor,
    parse_request,
    sort_signature,
)
from fhir_server.search.terminology import Terminology, TerminologyError
from fhir_server.storage.tables import INDEX_TABLES, resources

_RESOURCES = resources.alias("r")
_PAGE = (
    literal_column("page.pk", resources.c.res_pk.type),
    literal_column("page.res_type", resources.c.res_type.type),
    literal_column("page.res_id", resources.c.res_id.type),
)
"""The columns of a page's subquery ``page`` by name: a subquery's column collection is built per statement."""
_MATCHES = literal_column("page.matches", Integer())
_PK_ASCENDING, _PK_DESCENDING = _PAGE[0].asc(), _PAGE[0].desc()
SUPPORTED_TYPES = frozenset(
    {"token", "string", "reference", "date", "number", "quantity", "uri", "composite", "special"}
)


@dataclass(frozen=True)
class Hit:
    """One matched (or included) resource of a page."""

    pk: int
    type: str
    id: str
    keys: tuple[Any, ...] = ()


@dataclass
class Page:
    hits: list[Hit]
    total: int | None
    next_cursor: str | None
    previous_cursor: str | None
    total_estimated: bool = False
    """``total`` is PostgreSQL's estimate: counting would have cost more than the count limit."""


def find(
    conn: Connection,
    registry: Registry,
    res_type: str,
    params: list[tuple[str, str]],
    *,
    limit: int,
    restrict: Restriction | None = None,
) -> list[int]:
    """The res_pk of current resources matching every criterion (at most ``limit``), for conditional interactions."""
    request = parse_request(registry, (res_type,), params)
    query = filtered(conn, request, restrict=restrict).order_by(resources.c.res_pk).limit(limit)
    return list(conn.execute(query).scalars())


Restriction = Callable[[Any, str | None], ColumnElement[bool]]
"""Access control's condition on a ``resources`` alias of a known type (or None): part of the WHERE, so paging
and totals count only what the caller may read (``fhir_server.access``)."""


def filtered(
    conn: Connection, request: SearchRequest, extra: list[Clause] | None = None, *, restrict: Restriction | None = None
) -> Select:
    """``SELECT res_pk FROM resources WHERE <type> AND NOT deleted AND <every clause>``."""
    return select(resources.c.res_pk).where(*conditions(conn, request, resources, extra, restrict=restrict))


def conditions(
    conn: Connection,
    request: SearchRequest,
    table: Any,
    extra: list[Clause] | None = None,
    *,
    restrict: Restriction | None = None,
) -> list[ColumnElement[bool]]:
    return _conditions(conn, request, table, extra, restrict=restrict)[0]


def _conditions(
    conn: Connection,
    request: SearchRequest,
    table: Any,
    extra: list[Clause] | None = None,
    *,
    restrict: Restriction | None = None,
) -> tuple[list[ColumnElement[bool]], bool]:
    """``conditions``, and whether a date window leads (every match is then read to cut a page)."""
    builder = PredicateBuilder(conn.dialect.name, Terminology(conn), ids=lambda t, p: param_ids.lookup(conn, t, p))
    builder.restrict = restrict
    types = request.types
    target = Target(table, types[0] if len(types) == 1 else None)
    where: list[ColumnElement[bool]] = [current(table)]
    if len(types) > 1:
        where.append(table.c.res_type.in_(types))
    clauses = [*request.clauses, *(extra or [])]
    lead = _leading_clause(clauses) if target.type_name else None
    pinned = False
    narrowing = None  # the criterion a window displaced, once probed per row of the window
    window = _leading_window(conn, target, clauses, lead)
    if window is not None:
        displaced = lead if isinstance(lead, Match) else None
        condition, narrowed = builder.driving_window(target, window, displaced)
        where.append(condition)
        narrowing, lead, pinned = displaced if narrowed else None, None, True
    for clause in clauses:
        try:
            if clause is narrowing:
                continue
            if clause is lead:
                where.append(builder.driving(target, clause))
                pinned = isinstance(clause, Match | Chain)
            else:
                where.append(builder.clause(target, clause))
        except TerminologyError as error:
            if not request.lenient:
                raise
            request.ignore(error.expression[0], error.diagnostics)
    if len(types) == 1 and not pinned:
        # A leading Match or Chain reads only index rows of this type (hashes include it): repeating the type
        # would let SQLite probe (res_type, res_pk) and sort every match, instead of walking the keys in
        # order and stopping at the end of the page.
        where.append(of_type(table, types[0]))
    if restrict is not None:
        where.append(restrict(table, target.type_name))
    return where, window is not None


def _leading_clause(clauses: list[Clause]) -> Clause | None:
    """The criterion a search starts from: the narrowest by ``selectivity``; none when ``_id`` already is one."""
    if any(isinstance(c, Match) and c.param.code == "_id" and c.modifier is None for c in clauses):
        return None
    ranked = [
        (rank, isinstance(c, Match), position)  # on a tie a chain or _has (criteria of other resources) leads
        for position, c in enumerate(clauses)
        if (rank := selectivity(c)) is not None
    ]
    return clauses[min(ranked)[2]] if ranked else None


NARROW_WINDOW = 31 * 86_400_000_000
"""A date window (widened by the parameter's reach) at most this wide (microseconds) leads before a token,
string or uri criterion: a month of one date parameter is taken to hold fewer rows than one code."""


def _leading_window(conn: Connection, target: Target, clauses: list[Clause], lead: Clause | None) -> DateWindow | None:
    """The date window a search starts from instead of ``lead``, if any (``PredicateBuilder.driving_window``).

    A window never displaces a reference, chain or ``_has`` (a resource's own few), nor ``_id``; a narrow one
    (``NARROW_WINDOW``) displaces any other criterion, a wider one only a date, number or quantity range.
    """
    res_type = target.type_name
    if res_type is None or isinstance(lead, Chain | Has):
        return None
    if isinstance(lead, Match) and lead.param.type == "reference":
        return None
    if any(isinstance(c, Match) and c.param.code == "_id" and c.modifier is None for c in clauses):
        return None
    displaced = lead.param.type if isinstance(lead, Match) else None
    ranked = []
    for window in date_windows(clauses):
        reach = date_spans.longest(conn, param_ids.lookup(conn, res_type, window.code)) or 0
        width = window.before - window.after + 2 * reach
        if displaced in (None, "date", "number", "quantity") or width <= NARROW_WINDOW:
            ranked.append((width, window.code, window))
    return min(ranked)[2] if ranked else None


def search(
    conn: Connection,
    request: SearchRequest,
    extra: list[Clause] | None = None,
    *,
    restrict: Restriction | None = None,
    count_limit: int | None = None,
) -> Page:
    """One page of matches (``request.count`` of them), its total and the cursors of its neighbours.

    Unless ``_total=accurate`` is asked for, a total above ``count_limit`` is not counted to the end: on
    PostgreSQL it is the planner's estimate (``Page.total_estimated``), on SQLite the count goes on.
    """
    r = _RESOURCES
    where, windowed = _conditions(conn, request, r, extra, restrict=restrict)
    explicit = any(name == "_total" for name, _ in request.applied)
    if request.count == 0 or request.summary == "count":
        mode = "accurate" if request.total == "none" else request.total
        total, estimated = _total(conn, r, where, mode, None if explicit else count_limit)
        return Page([], total, None, None, estimated)
    keys = [_sort_expression(conn, r, key, i, request.types) for i, key in enumerate(request.sort)]
    # a window's candidates are all read and tested to cut any page, so the page counts them as well
    counted = windowed and request.total == "accurate"
    matches = [func.count().over().label("matches")] if counted else []
    inner = select(
        r.c.res_pk.label("pk"), r.c.res_type, r.c.res_id, *(k.label(f"k{i}") for i, k in enumerate(keys)), *matches
    )
    page = inner.where(*where).subquery("page")
    # the page's columns named, not taken from the subquery's collection (built per search)
    columns = [literal_column(f"page.k{i}", key.type) for i, key in enumerate(keys)]
    descending = [key.descending for key in request.sort]
    signature = sort_signature(request.sort)
    backward = False
    query = select(*_PAGE, *columns, *([_MATCHES] if counted else [])).select_from(page)
    if request.cursor:
        direction, values, last_pk = decode_cursor(request.cursor, signature, len(keys))
        backward = direction == "p"
        query = query.where(_beyond(columns, descending, values, _PAGE[0], last_pk, backward=backward))
    order = []
    for column, desc in zip(columns, descending, strict=True):
        if backward:  # the reverse of the page order, read from the cursor back
            order.append(column.asc().nulls_first() if desc else column.desc().nulls_first())
        else:
            order.append(column.desc().nulls_last() if desc else column.asc().nulls_last())
    order.append(_PK_DESCENDING if backward else _PK_ASCENDING)
    rows = conn.execute(query.order_by(*order).limit(request.count + 1)).all()
    more = len(rows) > request.count
    rows = rows[: request.count]
    if backward:
        rows.reverse()
    hits = [Hit(row[0], row[1], row[2], tuple(row[3 : 3 + len(keys)])) for row in rows]
    estimated = False
    if request.total == "none":
        total = None
    elif request.cursor is None and not more:
        total = len(hits)  # the first page holds every match: no count query
    elif counted and rows:
        total, estimated = _counted(conn, r, where, rows[0][-1], None if explicit else count_limit)
    else:
        total, estimated = _total(conn, r, where, request.total, None if explicit else count_limit)
    has_next = more if not backward else bool(hits)
    has_previous = (more if backward else request.cursor is not None) and bool(hits)
    return Page(
        hits,
        total,
        encode_cursor("n", signature, hits[-1].keys, hits[-1].pk) if has_next and hits else None,
        encode_cursor("p", signature, hits[0].keys, hits[0].pk) if has_previous else None,
        estimated,
    )


def _total(
    conn: Connection, r: Any, where: list[ColumnElement[bool]], mode: str, limit: int | None
) -> tuple[int | None, bool]:
    """(total, whether it is an estimate): ``estimate`` asks the PostgreSQL planner; with a ``limit`` the count
    stops after ``limit + 1`` matches and, past it, PostgreSQL's estimate (at least ``limit + 1``) is given."""
    if mode == "none":
        return None, False
    query = select(r.c.res_pk).where(*where)
    postgres = conn.dialect.name == "postgresql"
    if mode == "estimate" and postgres:
        return _planner_rows(conn, query), True
    if limit is not None:
        bounded = conn.execute(select(func.count()).select_from(query.limit(limit + 1).subquery())).scalar_one()
        if bounded <= limit:
            return bounded, False
        if postgres:
            return max(_planner_rows(conn, query), limit + 1), True
    return conn.execute(select(func.count()).select_from(query.subquery())).scalar_one(), False


def _counted(
    conn: Connection, r: Any, where: list[ColumnElement[bool]], matches: int, limit: int | None
) -> tuple[int, bool]:
    """The total of ``_total`` from a count the page made: past ``limit``, PostgreSQL's estimate as there."""
    if limit is None or matches <= limit or conn.dialect.name != "postgresql":
        return matches, False
    return max(_planner_rows(conn, select(r.c.res_pk).where(*where)), limit + 1), True


def _planner_rows(conn: Connection, query: Select) -> int:
    compiled = query.compile(conn)
    plan = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + compiled.string, compiled.params).scalar_one()
    plan = json.loads(plan) if isinstance(plan, str) else plan
    return int(plan[0]["Plan"]["Plan Rows"])


def _sort_expression(
    conn: Connection, r: Any, key: SortKey, position: int, types: tuple[str, ...] | list[str]
) -> ColumnElement[Any]:
    """A resource's sort value: the lowest of its values ascending, the highest descending (R4B §3.1.1.5.2)."""
    param = key.param
    if param.code == "_id":
        return r.c.res_id
    if param.code == "_lastUpdated":
        return r.c.ts
    table = table_alias(INDEX_TABLES[param.type], 1000 + position)
    c = table.c
    if param.type in ("date", "number", "quantity"):
        column = c.high if key.descending else c.low
    elif param.type == "reference":
        column = func.coalesce(c.target_type + "/" + c.target_id, c.url)
    else:
        column = {"string": c.get("norm"), "token": c.get("code"), "uri": c.get("uri")}[param.type]
    aggregate = func.max(column) if key.descending else func.min(column)
    # SQLite: not a (param_id, low) range over the archive but the res_pk probe (see PredicateBuilder.param_is)
    one_resource = c.param_id + 0 if conn.dialect.name == "sqlite" else c.param_id
    if len(types) == 1:
        of_param = one_resource == param_ids.lookup(conn, types[0], param.code)
    else:
        of_param = one_resource.in_(param_ids.ids_named([param.code], types or None))
    return select(aggregate).where(c.res_pk == r.c.res_pk, of_param).scalar_subquery()


def _beyond(
    columns: list[Any], descending: list[bool], values: list[Any], pk: Any, last_pk: int, *, backward: bool
) -> ColumnElement[bool]:
    """Rows after (or before) the cursor row in the order (keys with nulls last, then res_pk)."""
    condition: ColumnElement[bool] = pk < last_pk if backward else pk > last_pk
    for column, desc, value in reversed(list(zip(columns, descending, values, strict=True))):
        same = column.is_(None) if value is None else column == value
        if not backward:
            past = false() if value is None else or_(column.is_(None), column < value if desc else column > value)
        else:
            past = column.is_not(None) if value is None else (column > value if desc else column < value)
        condition = or_(past, and_(same, condition))
    return condition
