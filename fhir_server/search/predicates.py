"""SQL for search criteria: one row-condition builder per parameter type, joined to resources by EXISTS.

Every criterion becomes ``EXISTS (SELECT 1 FROM idx_<type> WHERE res_pk = r.res_pk AND res_type = … AND
param = … AND <row condition>)``; chains, ``_has``, ``_list`` and compartments nest further EXISTS through
``idx_reference``. Index tables are aliased per use so nested subqueries never correlate by accident.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import ColumnElement, FromClause, Table, and_, exists, false, func, literal, not_, or_, true

from fhir_server.errors import FhirError
from fhir_server.search.index import IDENTIFIER_SUFFIX, OF_TYPE
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
from fhir_server.search.values import fold
from fhir_server.storage.tables import INDEX_TABLES, reference_index, resources, token_index

_EARTH_KM = 6371.0088
_KM_PER_DEGREE = 111.2


@cache
def table_alias(table: Table, number: int) -> FromClause:
    """``idx_token AS idx_token_3``: aliases are built once (building one copies every column)."""
    return table.alias(f"{table.name}_{number}")


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


def _reads_resource_row(clause: Clause) -> bool:
    """Whether a clause needs the resources row (id, type, timestamp) rather than only ``res_pk``."""
    if isinstance(clause, Match | Missing):
        return clause.param.code in ("_id", "_lastUpdated")
    return not isinstance(clause, Chain)


class PredicateBuilder:
    """Builds the WHERE conditions of a search for one SQL dialect (prefix matching differs)."""

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        self._aliases = itertools.count()

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
        conditions = [self.row_condition(param.type, table, v, modifier) for v in clause.values]
        found = self.rows(table, target, param.code, or_(*conditions))
        return not_(found) if modifier == "not" else found

    def rows(self, table: FromClause, target: Target, param: str, *conditions: ColumnElement[bool]):  # type: ignore[no-untyped-def]
        """EXISTS an index row of ``param`` for the target resource that satisfies ``conditions``."""
        return exists().where(
            table.c.res_pk == target.pk, table.c.res_type == target.type, table.c.param == param, *conditions
        )

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
                        referred.c.deleted.is_(False),
                        self.clause(inner_target, inner),
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
            link.c.param == clause.param.code,
            link.c.res_type == clause.source_type,
        ]
        if _reads_resource_row(clause.inner):
            source = self.alias(resources)
            conditions += [source.c.res_pk == link.c.res_pk, source.c.deleted.is_(False)]
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
            holder.c.deleted.is_(False),
            link.c.res_pk == holder.c.res_pk,
            link.c.res_type == "List",
            link.c.param == "item",
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
                link.c.res_pk == target.pk,
                link.c.res_type == res_type,
                link.c.param.in_(params),
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
        c = table.c
        if value.url is not None:
            return c.url == value.url
        if value.type:
            return and_(c.target_id == value.id, c.target_type == value.type)
        return or_(c.target_id == value.id, c.url == value.id)  # a bare id, or a relative canonical

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
                    other.c.param == f"{code}${position}",
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
