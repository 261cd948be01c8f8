"""SQL for search criteria: one row-condition builder per parameter type, joined to resources by EXISTS.

Every criterion becomes ``EXISTS (SELECT 1 FROM idx_<type> WHERE res_pk = r.res_pk AND param_id = … AND
<row condition>)`` (``param_id``: the resource type and parameter, ``search.param_ids``); chains, ``_has``,
``_list`` and compartments nest further EXISTS through ``idx_reference``. Index tables are aliased per use so
nested subqueries never correlate by accident.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cache, lru_cache
from typing import Any

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    FromClause,
    Select,
    String,
    Table,
    and_,
    any_,
    exists,
    false,
    func,
    literal,
    literal_column,
    not_,
    or_,
    select,
    true,
    union_all,
)

from fhir_server.errors import FhirError
from fhir_server.search import date_spans, ucum
from fhir_server.search.index import (
    IDENTIFIER_SUFFIX,
    MAX_TEXT,
    OF_TYPE,
    UNBOUNDED_HIGH,
    UNBOUNDED_LOW,
    search_hash,
)
from fhir_server.search.param_ids import ids_named
from fhir_server.search.request import (
    Bounds,
    Chain,
    Clause,
    Compartment,
    Has,
    InList,
    Match,
    Missing,
    Near,
    OfType,
    Ref,
    Token,
)
from fhir_server.search.terminology import Subsumption, Terminology, ValueSetRef
from fhir_server.search.values import fold
from fhir_server.storage.tables import INDEX_TABLES, date_index, reference_index, resources, token_index

_EARTH_KM = 6371.0088
LARGE_CODE_SET = 100
"""Code sets larger than this are passed as one array (PostgreSQL) or JSON (SQLite) parameter, not an IN list."""
_KM_PER_DEGREE = 111.2


@cache
def table_alias(table: Table, number: int) -> FromClause:
    """``idx_token AS idx_token_3``: aliases are built once (building one copies every column)."""
    return table.alias(f"{table.name}_{number}")


@lru_cache(maxsize=4096)
def _param_condition(table: FromClause, ids: tuple[int, ...], one_resource: bool) -> ColumnElement[bool]:
    """``param_id = id`` (``IN ids`` for several; ``param_id + 0`` when ``one_resource``) on an alias: built once
    per alias and ids, since every search of a parameter repeats it (and building costs more than the rest)."""
    column = table.c.param_id + 0 if one_resource else table.c.param_id
    return column == ids[0] if len(ids) == 1 else column.in_(ids)


@lru_cache(maxsize=4096)
def same_resource(table: FromClause, other: FromClause) -> ColumnElement[bool]:
    """``table.res_pk = other.res_pk`` of two aliases: built once per pair (the aliases recur across statements)."""
    return table.c.res_pk == other.c.res_pk


@lru_cache(maxsize=1024)
def current(table: FromClause) -> ColumnElement[bool]:
    """``NOT deleted`` on an alias of ``resources``, built once per alias."""
    return table.c.deleted.is_(False)


@lru_cache(maxsize=4096)
def of_type(table: FromClause, res_type: str) -> ColumnElement[bool]:
    """``res_type = :type`` on an alias of ``resources``, built once per alias and type."""
    return table.c.res_type == res_type


@lru_cache(maxsize=4096)
def _open_ended(start: FromClause, end: FromClause, param_id: int) -> tuple[Select, Select]:
    """The date rows of a parameter with an open start, and with an open end (``driving_window``): built once per
    pair of aliases and parameter."""
    return (
        select(start.c.res_pk).where(start.c.param_id == param_id, start.c.low == UNBOUNDED_LOW),
        select(end.c.res_pk).where(end.c.param_id == param_id, end.c.high == UNBOUNDED_HIGH),
    )


@dataclass(frozen=True)
class Target:
    """The resource rows a predicate is about: an alias of ``resources`` and, when known, their one type."""

    table: FromClause
    type_name: str | None = None

    @property
    def pk(self) -> ColumnElement[Any]:
        return self.table.c.res_pk

    @property
    def type(self) -> ColumnElement[Any]:
        return literal(self.type_name) if self.type_name else self.table.c.res_type

    @property
    def id(self) -> ColumnElement[Any]:
        return self.table.c.res_id


def _in_base_units(value: Bounds, unit: ucum.Canonical) -> Bounds:
    """A UCUM quantity search value in base units, nudged by a relative 1e-9 so that conversions' rounding
    (5400 ug → 0.005399999… g) does not decide a comparison with a bound: gt 5.4 mg excludes 5400 ug."""
    value_c, low_c, high_c = unit.convert(value.value), unit.convert(value.low), unit.convert(value.high)
    tolerance = max(abs(value_c), abs(low_c), abs(high_c)) * 1e-9
    nudge = {"gt": tolerance, "sa": tolerance, "le": tolerance, "lt": -tolerance, "eb": -tolerance, "ge": -tolerance}
    return replace(
        value,
        value=value_c + nudge.get(value.prefix, 0.0),
        low=low_c - tolerance,
        high=high_c - tolerance,
        system=None,
        code=unit.code,
    )


_RANKS = {"reference": 1, "token": 2, "uri": 2, "string": 3, "date": 4, "number": 4, "quantity": 4}


def selectivity(clause: Clause) -> int | None:
    """How narrow a clause's index range is likely to be (lower first), or None if it cannot start a search.

    Without per-value statistics: references and ``system|code`` tokens name few resources, a code alone
    more, a string prefix more again, a range of dates or numbers the most.
    """
    if isinstance(clause, Chain):
        ranks = [selectivity(inner) for _, inner in clause.inner]
        return None if None in ranks else max(ranks)  # type: ignore[type-var]
    if isinstance(clause, Has):
        return None if _reads_resource_row(clause.inner) else selectivity(clause.inner)
    if not isinstance(clause, Match) or clause.modifier not in (None, "exact", "of-type"):
        return None
    kind = clause.param.type
    if clause.param.code in ("_id", "_lastUpdated") or kind not in _RANKS:
        return None
    if kind == "token" and all(isinstance(v, OfType) or (isinstance(v, Token) and v.system) for v in clause.values):
        return 1
    if kind == "token" and not all(isinstance(v, Token | OfType) and getattr(v, "code", 1) for v in clause.values):
        return None
    return _RANKS[kind]


@dataclass(frozen=True)
class DateWindow:
    """Criteria on one date parameter that bound it on both sides: each matching resource has a row with a
    bound (``low`` or ``high``) at or after ``after`` and one at or before ``before`` (``search.date_spans``)."""

    code: str
    after: int
    before: int


def date_windows(clauses: list[Clause]) -> list[DateWindow]:
    """The windows the date criteria of a search give, one per parameter bounded on both sides."""
    reach: dict[str, tuple[int | None, int | None]] = {}
    for clause in clauses:
        if not isinstance(clause, Match) or clause.param.type != "date" or clause.modifier is not None:
            continue
        if clause.param.code == "_lastUpdated":
            continue
        ends = [_date_reach(value) for value in clause.values]
        after = None if any(a is None for a, _ in ends) else min(a for a, _ in ends)  # type: ignore[type-var]
        before = None if any(b is None for _, b in ends) else max(b for _, b in ends)  # type: ignore[type-var]
        known_after, known_before = reach.get(clause.param.code, (None, None))
        reach[clause.param.code] = (
            after if known_after is None else known_after if after is None else max(after, known_after),
            before if known_before is None else known_before if before is None else min(before, known_before),
        )
    return [DateWindow(code, a, b) for code, (a, b) in reach.items() if a is not None and b is not None]


def _date_reach(value: Bounds) -> tuple[int | None, int | None]:
    """(a bound a matching row has at or after, one it has at or before) for a date value of ``bounds``; None
    where the prefix leaves that side open. Stated on the row's own bounds, so a row whose ``low`` is after its
    ``high`` (a Period written backwards) is covered as well."""
    prefix, low, high = value.prefix, int(value.low), int(value.high)
    if prefix == "eq":  # low >= search low, high <= search high
        return low, high
    if prefix == "ge":  # high > search high, or contained (low >= search low)
        return low, None
    if prefix in ("gt", "sa"):  # high > search high; low > search high
        return high + 1, None
    if prefix == "le":  # low < search low, or contained (high <= search high)
        return None, high
    if prefix in ("lt", "eb"):  # low < search low; high < search low
        return None, low - 1
    return None, None  # ne, ap


def _reads_resource_row(clause: Clause) -> bool:
    """Whether a clause needs the resources row (id, type, timestamp) rather than only ``res_pk``."""
    if isinstance(clause, Match | Missing):
        return clause.param.code in ("_id", "_lastUpdated")
    return not isinstance(clause, Chain)


class PredicateBuilder:
    """Builds the WHERE conditions of a search for one SQL dialect (prefix matching differs)."""

    def __init__(self, dialect: str, terminology: Terminology | None = None, *, ids: Callable[[str, str], int]) -> None:
        self.dialect = dialect
        self.ids = ids
        """(resource type, parameter code) → its ``param_id`` (``search.param_ids.lookup``)."""
        self._aliases = itertools.count()
        self.terminology = terminology
        """Value set expansions and code system hierarchies for ``:in``, ``:not-in``, ``:above``, ``:below``."""
        self.restrict: Callable[[Any, str | None], ColumnElement[bool]] | None = None
        """Access control's condition on resources a chain or ``_has`` reaches (only readable ones count)."""

    def _readable(self, table: Any, type_name: str | None) -> list[ColumnElement[bool]]:
        return [] if self.restrict is None else [self.restrict(table, type_name)]

    def param_is(
        self, table: FromClause, res_type: str | None, *codes: str, of_one_resource: bool = False
    ) -> ColumnElement[bool]:
        """Index rows of these parameter codes of ``res_type``; of any type when it is not known (the rows are
        then those of one resource, whose ``res_pk`` implies its type).

        ``of_one_resource``: the rows of one ``res_pk``; SQLite compares ``param_id + 0`` there, or it prefers a
        ``(param_id, high)`` range over the whole archive to the ``res_pk`` probe (PostgreSQL weighs both by its
        statistics, which an expression would hide).
        """
        one_resource = of_one_resource and self.dialect == "sqlite"
        if res_type is None:
            return (table.c.param_id + 0 if one_resource else table.c.param_id).in_(ids_named(codes))
        ids = tuple(self.ids(res_type, code) for code in codes)
        return _param_condition(table, ids, one_resource)

    def alias(self, table: Table) -> FromClause:
        """A fresh alias within this statement; the same names recur across statements (cached SQL)."""
        return table_alias(table, next(self._aliases))

    # -- clauses ------------------------------------------------------------------------------

    def clause(self, target: Target, clause: Clause) -> ColumnElement[bool]:
        if isinstance(clause, Match):
            return self.match(target, clause)
        if isinstance(clause, Missing):
            return self.missing(target, clause)
        if isinstance(clause, Chain):
            return self.chain(target, clause)
        if isinstance(clause, Has):
            return self.has(target, clause)
        if isinstance(clause, InList):
            return self.in_list(target, clause)
        return self.compartment(target, clause)

    def match(self, target: Target, clause: Match) -> ColumnElement[bool]:
        param, modifier = clause.param, clause.modifier
        if param.code == "_id":
            ids = [v.code for v in clause.values]
            return target.id.not_in(ids) if modifier == "not" else target.id.in_(ids)
        if param.code == "_lastUpdated":
            ts = target.table.c.ts
            return or_(*(self.bounds(ts, ts, v, integral=True) for v in clause.values))
        if param.type == "composite":
            return or_(*(self.composite(target, param.code, param.components, v) for v in clause.values))
        if param.type == "special":
            return or_(*(self.near(target, param.code, v) for v in clause.values))
        if param.type == "reference" and modifier == "identifier":
            table = self.alias(token_index)
            conditions = [self.token(table, v, None) for v in clause.values]
            return self.rows(table, target, param.code + IDENTIFIER_SUFFIX, or_(*conditions))
        table = self.alias(INDEX_TABLES[param.type])
        probes = self.hash_probes(target, param.code, param.type, table, clause.values, modifier)
        if probes is not None:  # the hashes stand for resource type and parameter: one bigint index probe
            found = exists().where(same_resource(table, target.table), or_(*probes))
            return not_(found) if modifier == "not" else found
        conditions = [self.row_condition(param.type, table, v, modifier) for v in clause.values]
        found = self.rows(table, target, param.code, or_(*conditions))
        return not_(found) if modifier in ("not", "not-in") else found

    def driving(self, target: Target, clause: Clause) -> ColumnElement[bool]:
        """``res_pk IN (SELECT res_pk FROM idx_… WHERE …)``: the criterion the search starts from.

        Uncorrelated, so both SQLite (``rowid IN`` an ephemeral index, in key order) and PostgreSQL read the
        criterion's index range first and probe the other criteria per match, instead of testing every
        resource of the type. Only for clauses ``selectivity`` ranks.
        """
        if isinstance(clause, Chain):
            return self.driving_chain(target, clause)
        if isinstance(clause, Has):
            return self.driving_has(target, clause)
        param, table = clause.param, self.alias(INDEX_TABLES[clause.param.type])
        probes = self.hash_probes(target, param.code, param.type, table, clause.values, clause.modifier)
        if probes is not None:
            return target.pk.in_(select(table.c.res_pk).where(or_(*probes)))
        if param.type == "reference":  # a bare id is a target id or a relative canonical: one index range each
            c = table.c
            conditions = [a for value in clause.values for a in self.reference_alternatives(table, value)]
            alternatives = [
                select(c.res_pk).where(self.param_is(table, target.type_name, param.code), condition)
                for condition in conditions
            ]
            return target.pk.in_(union_all(*alternatives) if len(alternatives) > 1 else alternatives[0])
        conditions = [self.row_condition(param.type, table, v, clause.modifier) for v in clause.values]
        rows = select(table.c.res_pk).where(self.param_is(table, target.type_name, param.code), or_(*conditions))
        return target.pk.in_(rows)

    def driving_window(
        self, target: Target, window: DateWindow, narrowed_by: Match | None = None
    ) -> tuple[ColumnElement[bool], bool]:
        """``res_pk IN`` the date rows that can be a matching resource's earliest: ``low`` within the window
        widened by the parameter's stored reach on both sides (``ix_date_low``), and the rows with an open end,
        whose resources the reach leaves out (``ix_date_low``, ``ix_date_high``). Every criterion is still tested
        per candidate; the window only narrows which resources are tested.

        ``narrowed_by`` (the code the window displaced), where its hashes serve it, is probed per row of the
        window (``window_probe``), so that only resources of that code are read from ``resources``; it is then
        not to be tested again (the second value says whether it was).

        With ``r`` the reach, a matching resource's bounds lie between its least ``e`` and greatest ``E``, with
        ``E - e <= r``, ``E >= after`` and ``e <= before``; its earliest ``low`` lies in [e, E], so in
        [after - r, before + r] (the upper widening serves rows written backwards).
        """
        assert target.type_name is not None
        param_id = self.ids(target.type_name, window.code)
        reach = date_spans.bound_of(param_id)
        earliest = self.alias(date_index).c
        open_start, open_end = _open_ended(self.alias(date_index), self.alias(date_index), param_id)
        rows: Any = union_all(
            select(earliest.res_pk).where(
                earliest.param_id == param_id,
                earliest.low >= window.after - reach,
                earliest.low <= window.before + reach,
            ),
            open_start,
            open_end,
        )
        narrowed = False
        if narrowed_by is not None:
            # columns named, not taken from the subquery's collection (built per call, as for the CTE below)
            name = f"window_{next(self._aliases)}"
            found = rows.subquery(name)
            probe = self.window_probe(Target(found, target.type_name), literal_column(f"{name}.res_pk"), narrowed_by)
            if probe is not None:
                rows, narrowed = select(literal_column("res_pk")).select_from(found).where(probe), True
        if self.dialect != "postgresql":
            return target.pk.in_(rows), narrowed
        # read first, as in ``first``; the column named, not taken from the CTE's collection (built per call)
        lead = rows.cte(f"lead_{next(self._aliases)}").prefix_with("MATERIALIZED")
        return target.pk.in_(select(literal_column("res_pk")).select_from(lead)), narrowed

    def window_probe(self, target: Target, res_pk: Any, clause: Match) -> ColumnElement[bool] | None:
        """A criterion as one index probe per row of a window (``ix_token_sys_value``, …) whose ``res_pk`` is
        given, where the hashes serve it (else None). A scalar subquery, not EXISTS: PostgreSQL would turn
        EXISTS into a join and, in the generic plan of a prepared statement, read every row of the code in the
        archive instead."""
        param, table = clause.param, self.alias(INDEX_TABLES[clause.param.type])
        probes = self.hash_probes(target, param.code, param.type, table, clause.values, clause.modifier)
        if probes is None:
            return None
        found = select(table.c.res_pk).where(table.c.res_pk == res_pk, or_(*probes)).limit(1)
        return found.scalar_subquery().is_not(None)

    def first(self, rows: Any, column: Any) -> Any:
        """A chain's or ``_has``'s rows (``column``, their one column) as a ``MATERIALIZED`` CTE on PostgreSQL, so
        that the planner reads them first: it misjudges these nested semi-joins and probed them per row of a
        broader criterion instead."""
        if self.dialect != "postgresql":
            return rows
        name = f"lead_{next(self._aliases)}"
        lead = rows.cte(name).prefix_with("MATERIALIZED")
        # the column named, not taken from the CTE's collection (built per call)
        return select(literal_column(f"{name}.{column.name}", column.type)).select_from(lead)

    def driving_chain(self, target: Target, clause: Chain) -> ColumnElement[bool]:
        """A chain as a starting point: the referred resources matching the inner clause first, then the
        references to them (``ix_reference_target``), then the referring resources."""
        link = self.alias(reference_index)
        alternatives = []
        for target_type, inner in clause.inner:
            referred = self.alias(resources)
            inner_target = Target(referred, target_type)
            lead = self.driving(inner_target, inner) if selectivity(inner) is not None else None
            ids = select(referred.c.res_id).where(
                referred.c.res_type == target_type,
                current(referred),
                lead if lead is not None else self.clause(inner_target, inner),
                *self._readable(referred, target_type),
            )
            alternatives.append(
                and_(link.c.target_type == target_type, link.c.target_id.in_(self.first(ids, referred.c.res_id)))
            )
        rows = select(link.c.res_pk).where(self.param_is(link, target.type_name, clause.param.code), or_(*alternatives))
        return target.pk.in_(self.first(rows, link.c.res_pk))

    def driving_has(self, target: Target, clause: Has) -> ColumnElement[bool]:
        """``_has`` as a starting point: the referring resources matching the inner clause first, then the ids
        they refer to (``ix_reference_res``), then the targets by ``(res_type, res_id)``."""
        if _reads_resource_row(clause.inner) or self.restrict is not None or target.type_name is None:
            return self.has(target, clause)
        link = self.alias(reference_index)
        rows = select(link.c.target_id).where(
            self.param_is(link, clause.source_type, clause.param.code),
            link.c.target_type == target.type_name,
            self.driving(Target(link, clause.source_type), clause.inner),
        )
        return target.id.in_(self.first(rows, link.c.target_id))

    def hash_probes(
        self, target: Target, code: str, kind: str, table: FromClause, values: tuple, modifier: str | None
    ) -> list[ColumnElement[bool]] | None:
        """Row conditions on the hash columns (``index.search_hash``) when the resource type is known and every
        value is an equality a hash serves: token ``code``, ``system|code``, ``|code``, ``:of-type``; string
        prefix (first folded character hashed, the rest a range on ``norm``) and ``:exact``. Else None."""
        res_type = target.type_name
        if res_type is None or kind not in ("token", "string"):
            return None
        c = table.c
        probes = []
        for value in values:
            if kind == "token" and modifier in (None, "not", "of-type"):
                if isinstance(value, OfType):
                    row_code = f"{value.code}|{value.value}"
                    digest = search_hash(res_type, code, value.system, row_code)
                    probes.append(and_(c.hash_sys_value == digest, c.text == OF_TYPE))
                    continue
                if not isinstance(value, Token) or value.code is None:
                    return None
                if value.system is None:
                    probe = c.hash_value == search_hash(res_type, code, value.code)
                else:
                    probe = c.hash_sys_value == search_hash(res_type, code, value.system, value.code)
                    if value.system == "":
                        probe = and_(probe, c.system.is_(None))
                if "|" in value.code:
                    probe = and_(probe, or_(c.text.is_(None), c.text != OF_TYPE))
                probes.append(probe)
            elif kind == "string" and modifier == "exact" and len(value) < MAX_TEXT:
                # a row's norm is its exact value folded (pinyin forms: the value itself), so the prefix index
                # holds it under the hash of the first character of one of the two
                norms = sorted({fold(value)[:MAX_TEXT], value})
                hashes = sorted({search_hash(res_type, code, norm[:1]) for norm in norms})
                probes.append(and_(c.hash_prefix.in_(hashes), c.norm.in_(norms), c.exact == value))
            elif kind == "string" and modifier is None and fold(value):
                folded = fold(value)
                probes.append(
                    and_(c.hash_prefix == search_hash(res_type, code, folded[:1]), self.prefix(c.norm, folded))
                )
            else:
                return None
        return probes

    def rows(self, table: FromClause, target: Target, param: str, *conditions: ColumnElement[bool]):  # type: ignore[no-untyped-def]
        """EXISTS an index row of ``param`` for the target resource that satisfies ``conditions``.

        The subquery selects ``res_pk``, not ``*``: SQLite then reads only the index when it holds every column
        the conditions name (``ix_date_res_param``), not each row of the table as well.
        """
        of_param = self.param_is(table, target.type_name, param, of_one_resource=True)
        return select(table.c.res_pk).where(same_resource(table, target.table), of_param, *conditions).exists()

    def missing(self, target: Target, clause: Missing) -> ColumnElement[bool]:
        param = clause.param
        if param.code in ("_id", "_lastUpdated"):
            return false() if clause.missing else true()
        kind = param.components[0].type if param.type == "composite" else param.type
        kind = "coords" if kind == "special" else kind
        code = f"{param.code}$0" if param.type == "composite" else param.code
        present = self.rows(self.alias(INDEX_TABLES[kind]), target, code)
        if param.type == "reference":  # a reference given only by identifier is present too
            present = or_(present, self.rows(self.alias(token_index), target, param.code + IDENTIFIER_SUFFIX))
        return not_(present) if clause.missing else present

    def chain(self, target: Target, clause: Chain) -> ColumnElement[bool]:
        """``subject:Patient.name=x``: a reference row whose target resource satisfies the inner clause."""
        link = self.alias(reference_index)
        alternatives = []
        for target_type, inner in clause.inner:
            referred = self.alias(resources)
            inner_target = Target(referred, target_type)
            alternatives.append(
                and_(
                    link.c.target_type == target_type,
                    exists().where(
                        referred.c.res_type == target_type,
                        referred.c.res_id == link.c.target_id,
                        current(referred),
                        self.clause(inner_target, inner),
                        *self._readable(referred, target_type),
                    ),
                )
            )
        return self.rows(link, target, clause.param.code, or_(*alternatives))

    def has(self, target: Target, clause: Has) -> ColumnElement[bool]:
        """``_has:Observation:patient:code=x``: a resource referring to the target satisfies the inner clause.

        Index rows exist only for current resources, so unless the inner clause reads the referring resource's
        own row (``_id``, ``_lastUpdated``, a nested ``_has``) it is tested on ``link.res_pk`` without a join.
        """
        link = self.alias(reference_index)
        conditions = [
            link.c.target_type == target.type,
            link.c.target_id == target.id,
            self.param_is(link, clause.source_type, clause.param.code),
        ]
        if _reads_resource_row(clause.inner) or self.restrict is not None:
            source = self.alias(resources)
            conditions += [source.c.res_pk == link.c.res_pk, current(source)]
            conditions += self._readable(source, clause.source_type)
            conditions.append(self.clause(Target(source, clause.source_type), clause.inner))
        else:
            conditions.append(self.clause(Target(link, clause.source_type), clause.inner))
        return exists().where(*conditions)

    def in_list(self, target: Target, clause: InList) -> ColumnElement[bool]:
        """``_list=id``: the resource is an item of List/id (R4B §3.1.1.5.x ``_list``)."""
        link = self.alias(reference_index)
        holder = self.alias(resources)
        return exists().where(
            holder.c.res_type == "List",
            holder.c.res_id.in_(clause.list_ids),
            current(holder),
            link.c.res_pk == holder.c.res_pk,
            self.param_is(link, "List", "item"),
            link.c.target_type == target.type,
            link.c.target_id == target.id,
        )

    def compartment(self, target: Target, clause: Compartment) -> ColumnElement[bool]:
        """Membership of ``Type/id``'s compartment through the CompartmentDefinition's params of each type."""
        alternatives = []
        for res_type, params in clause.params:
            if target.type_name not in (None, res_type) or not params:
                continue
            link = self.alias(reference_index)
            member = exists().where(
                same_resource(link, target.table),
                self.param_is(link, res_type, *params, of_one_resource=True),
                link.c.target_type == clause.type,
                link.c.target_id == clause.id,
            )
            alternatives.append(member if target.type_name else and_(target.table.c.res_type == res_type, member))
        return or_(*alternatives) if alternatives else false()

    # -- row conditions by type -----------------------------------------------------------------

    def row_condition(self, kind: str, table: FromClause, value: Any, modifier: str | None) -> ColumnElement[bool]:
        if kind == "token":
            return self.token(table, value, modifier)
        if kind == "string":
            return self.string(table, value, modifier)
        if kind == "quantity" and value.system == ucum.UCUM_SYSTEM and value.code and ucum.canonical(value.code):
            unit = ucum.canonical(value.code)
            canonical = _in_base_units(value, unit)
            condition = self.bounds(table.c.canon_low, table.c.canon_high, canonical, integral=False)
            return and_(table.c.canon_code == unit.code, condition)
        if kind in ("date", "number", "quantity"):
            condition = self.bounds(table.c.low, table.c.high, value, integral=kind == "date")
            if kind == "quantity":
                if value.system:
                    condition = and_(condition, table.c.system == value.system)
                if value.code:
                    condition = and_(condition, table.c.code == value.code)
            return condition
        if kind == "uri":
            return self.uri(table, value, modifier)
        if kind == "reference":
            return self.reference(table, value)
        raise FhirError("invalid", f"Search parameters of type {kind} cannot be used here.")

    def token(self, table: FromClause, value: Any, modifier: str | None) -> ColumnElement[bool]:
        """R4B §3.1.1.4.10: code, system|code, |code, system|; :text, :of-type; of-type rows kept apart."""
        c = table.c
        if modifier == "text":
            return and_(self.prefix(c.text, fold(value)), c.text != OF_TYPE)
        if isinstance(value, OfType):
            return and_(c.system == value.system, c.code == f"{value.code}|{value.value}", c.text == OF_TYPE)
        if isinstance(value, ValueSetRef | Subsumption):
            return and_(self.terminology_condition(c, value), or_(c.text.is_(None), c.text != OF_TYPE))
        assert isinstance(value, Token)
        conditions = []
        if value.code is not None:
            conditions.append(c.code == value.code)
        if value.system == "":
            conditions.append(c.system.is_(None))
        elif value.system is not None:
            conditions.append(c.system == value.system)
        if value.code is None or "|" in value.code:
            conditions.append(or_(c.text.is_(None), c.text != OF_TYPE))
        return and_(*conditions)

    def terminology_condition(self, c: Any, value: ValueSetRef | Subsumption) -> ColumnElement[bool]:
        """``:in`` / ``:not-in`` (a row's system and code in the expansion) and ``:above`` / ``:below``.

        Values of type ``code`` are indexed without a system (it is implied by their binding): they match a
        value set by code alone. ``:not-in`` is the negation of ``:in`` over all of a resource's rows.
        """
        if self.terminology is None:
            raise FhirError("not-supported", f"{value.name} needs terminology, which this search has no access to.")
        if isinstance(value, Subsumption):
            return and_(c.system == value.system, self.in_set(c.code, sorted(self.terminology.subsumed(value))))
        expansion = self.terminology.expansion(value)
        alternatives = [
            and_(c.system == system, self.in_set(c.code, codes)) for system, codes in expansion.by_system().items()
        ]
        for system, excluded in expansion.excluded_by_system().items():
            alternatives.append(
                and_(c.system == system, not_(self.in_set(c.code, excluded))) if excluded else c.system == system
            )
        codes = expansion.all_codes()
        if codes:
            alternatives.append(and_(c.system.is_(None), self.in_set(c.code, codes)))
        return or_(*alternatives) if alternatives else false()

    def in_set(self, column: Any, codes: list[str]) -> ColumnElement[bool]:
        """``column IN codes``; a large set is one parameter holding a derived table, so the SQL stays small."""
        if len(codes) <= LARGE_CODE_SET:
            return column.in_(codes)
        if self.dialect == "postgresql":
            return column == any_(literal(codes, ARRAY(String)))
        each = func.json_each(literal(json.dumps(codes))).table_valued("value")
        return column.in_(select(each.c.value))

    def string(self, table: FromClause, value: str, modifier: str | None) -> ColumnElement[bool]:
        """R4B §3.1.1.4.9: case- and accent-insensitive prefix by default, :exact, :contains."""
        if modifier == "exact":
            return table.c.exact == value
        if modifier == "contains":
            return table.c.norm.contains(fold(value), autoescape=True)
        return self.prefix(table.c.norm, fold(value))

    def uri(self, table: FromClause, value: str, modifier: str | None) -> ColumnElement[bool]:
        """R4B §3.1.1.4.13: exact; :below (value is a prefix of the stored uri); :above (the reverse)."""
        if modifier == "below":
            return self.prefix(table.c.uri, value)
        if modifier == "above":
            return func.substr(literal(value), 1, func.length(table.c.uri)) == table.c.uri
        return table.c.uri == value

    def reference(self, table: FromClause, value: Ref) -> ColumnElement[bool]:
        """R4B §3.1.1.4.8: [id], [type]/[id], absolute or canonical URL."""
        return or_(*self.reference_alternatives(table, value))

    def reference_alternatives(self, table: FromClause, value: Ref) -> list[ColumnElement[bool]]:
        c = table.c
        if value.url is not None:
            return [c.url == value.url]
        if value.type:
            return [and_(c.target_id == value.id, c.target_type == value.type)]
        return [c.target_id == value.id, c.url == value.id]  # a bare id, or a relative canonical

    def bounds(self, low: Any, high: Any, value: Bounds, *, integral: bool) -> ColumnElement[bool]:
        """Prefixes eq ne gt lt ge le sa eb ap over the stored [low, high] range (R4B §3.1.1.4.1, .3, .5).

        Dates compare ranges (search range inclusive); numbers and quantities compare the exact value, except
        ``eq``/``ne`` which use the implicit range of the search value's significant figures (upper bound open).
        """
        p = value.prefix
        if integral:
            low_s, high_s = value.low, value.high
            contained = and_(low >= low_s, high <= high_s)
            if p == "eq":
                return contained
            if p == "ne":
                return not_(contained)
            if p == "gt":
                return high > high_s
            if p == "lt":
                return low < low_s
            if p == "ge":
                return or_(high > high_s, contained)
            if p == "le":
                return or_(low < low_s, contained)
            if p == "sa":
                return low > high_s
            if p == "eb":
                return high < low_s
            gap = max(abs(time.time_ns() // 1000 - (low_s + high_s) // 2) // 10, high_s - low_s + 1)
            return and_(low <= high_s + gap, high >= low_s - gap)
        v = value.value
        if p == "eq":
            return and_(low >= value.low, high < value.high)
        if p == "ne":
            return or_(low < value.low, high >= value.high)
        if p == "gt":
            return high > v
        if p == "lt":
            return low < v
        if p == "ge":
            return high >= v
        if p == "le":
            return low <= v
        if p == "sa":
            return low > v
        if p == "eb":
            return high < v
        gap = abs(v) / 10 or value.high - value.low
        return and_(low <= v + gap, high >= v - gap)

    def composite(self, target: Target, code: str, components: tuple, parts: tuple) -> ColumnElement[bool]:
        """Components matched on rows of the same element (same ``grp``) of the composite (R4B §3.1.1.4.11)."""
        first = self.alias(INDEX_TABLES[components[0].type])
        conditions = [self.row_condition(components[0].type, first, parts[0], None)]
        for position in range(1, len(components)):
            kind = components[position].type
            other = self.alias(INDEX_TABLES[kind])
            conditions.append(
                exists().where(
                    other.c.res_pk == first.c.res_pk,
                    self.param_is(other, target.type_name, f"{code}${position}", of_one_resource=True),
                    other.c.grp == first.c.grp,
                    self.row_condition(kind, other, parts[position], None),
                )
            )
        return self.rows(first, target, f"{code}$0", *conditions)

    def near(self, target: Target, code: str, value: Near) -> ColumnElement[bool]:
        """Location ``near``: a bounding box on the index, then the haversine distance (R4B §3.1.1.4.14)."""
        table = self.alias(INDEX_TABLES["coords"])
        c = table.c
        degrees = value.km / _KM_PER_DEGREE
        conditions = [c.latitude.between(value.latitude - degrees, value.latitude + degrees)]
        cos_lat = math.cos(math.radians(value.latitude))
        if cos_lat > 0.01 and degrees / cos_lat < 180 - abs(value.longitude):
            spread = degrees / cos_lat
            conditions.append(c.longitude.between(value.longitude - spread, value.longitude + spread))
        phi, lam = math.radians(value.latitude), math.radians(value.longitude)
        half_dphi = func.sin((func.radians(c.latitude) - phi) / 2)
        half_dlam = func.sin((func.radians(c.longitude) - lam) / 2)
        haversine = half_dphi * half_dphi + math.cos(phi) * func.cos(func.radians(c.latitude)) * half_dlam * half_dlam
        limit = math.sin(min(value.km / (2 * _EARTH_KM), math.pi / 2)) ** 2
        conditions.append(haversine <= limit)
        return self.rows(table, target, code, *conditions)

    # -- helpers ---------------------------------------------------------------------------------

    def prefix(self, column: Any, prefix: str) -> ColumnElement[bool]:
        """``column`` starts with ``prefix``, in a form the dialect's btree index serves.

        SQLite compares text by code point, so a half-open range is exact; PostgreSQL matches LIKE on the
        ``text_pattern_ops`` indexes (any collation).
        """
        if not prefix:
            return column.is_not(None)
        if self.dialect == "sqlite":
            upper = prefix[:-1] + chr(min(ord(prefix[-1]) + 1, 0x10FFFF))
            return and_(column >= prefix, column < upper)
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return column.like(escaped + "%", escape="\\")
