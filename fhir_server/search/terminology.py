"""Terminology for the token modifiers ``:in``, ``:not-in``, ``:above`` and ``:below`` (R4B §3.1.1.4.10).

``:in`` / ``:not-in`` take a ValueSet: its canonical URL (``url`` or ``url|version``) or a literal reference
``ValueSet/[id]``. Its members come from a ValueSet stored on this server (``expansion.contains`` when present,
else ``compose``: ``include`` of listed concepts, of whole systems, of filters over a stored CodeSystem, of
other value sets; ``exclude`` likewise), or else from the official R4B value sets of the definition table
(the enumerable expansions of required bindings). ``:above`` / ``:below`` take ``system|code`` of a stored
CodeSystem and follow its hierarchy (nested ``concept``, the ``parent``, ``child`` and ``subsumedBy``
properties), the code itself included. Everything else is a 400 naming the parameter: an unknown ValueSet or
CodeSystem, an unsupported filter, a code the CodeSystem does not define.

Expansions are computed once per statement; those of a ValueSet that depends on no other resource, and
CodeSystem hierarchies, are also kept per stored version (``res_pk``, ``version``) across requests.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from sqlalchemy import Connection, select

from fhir_server import definitions
from fhir_server.errors import FhirError
from fhir_server.repository import Repository
from fhir_server.search.parameters import default_registry
from fhir_server.storage.tables import resources

Pair = tuple[str, str]
MAX_DEPTH = 8
"""How deep ValueSets may include each other."""
_CACHE_SIZE = 256
_FILTERS = frozenset({"is-a", "descendent-of", "is-not-a", "generalizes", "in", "="})


# -- values of the modifiers ----------------------------------------------------------------------


@dataclass(frozen=True)
class ValueSetRef:
    """The value of ``:in`` / ``:not-in``: a canonical URL (``url|version``) or a ValueSet id."""

    name: str
    """The search parameter as written (``code:in``), for error messages."""
    canonical: str | None = None
    id: str | None = None

    @property
    def shown(self) -> str:
        return self.canonical or f"ValueSet/{self.id}"


@dataclass(frozen=True)
class Subsumption:
    """The value of ``:above`` / ``:below`` on a token: a code of a CodeSystem and the direction."""

    name: str
    system: str
    code: str
    below: bool


class TerminologyError(FhirError):
    """A modifier's value that cannot be expanded; found when the SQL is built, after parsing."""


def bad_value(name: str, message: str) -> TerminologyError:
    return TerminologyError("invalid", message, expression=(name,))


# -- expansions --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expansion:
    """The members of a value set: listed ``codes``, plus whole ``systems`` less their ``excluded`` codes."""

    codes: frozenset[Pair] = frozenset()
    systems: frozenset[str] = frozenset()
    excluded: frozenset[Pair] = frozenset()

    def has(self, pair: Pair) -> bool:
        return pair in self.codes or (pair[0] in self.systems and pair not in self.excluded)

    def union(self, other: Expansion) -> Expansion:
        excluded = {p for p in self.excluded | other.excluded if not self.has(p) and not other.has(p)}
        return Expansion(self.codes | other.codes, self.systems | other.systems, frozenset(excluded))

    def intersection(self, other: Expansion) -> Expansion:
        codes = {p for p in self.codes if other.has(p)} | {p for p in other.codes if self.has(p)}
        systems = self.systems & other.systems
        excluded = {p for p in self.excluded | other.excluded if p[0] in systems}
        return Expansion(frozenset(codes), systems, frozenset(excluded))

    def minus(self, other: Expansion) -> Expansion:
        codes = {p for p in self.codes if not other.has(p)}
        # a whole system less a whole system leaves only what the subtracted one excluded
        codes |= {p for p in other.excluded if p[0] in self.systems and self.has(p)}
        systems = self.systems - other.systems
        excluded = self.excluded | {p for p in other.codes if p[0] in systems}
        return Expansion(frozenset(codes), systems, frozenset(p for p in excluded if p[0] in systems))

    def by_system(self) -> dict[str, list[str]]:
        """Listed codes grouped by system (sorted, for stable SQL)."""
        grouped: dict[str, set[str]] = defaultdict(set)
        for system, code in self.codes:
            if not (system in self.systems and (system, code) not in self.excluded):
                grouped[system].add(code)
        return {system: sorted(codes) for system, codes in sorted(grouped.items())}

    def excluded_by_system(self) -> dict[str, list[str]]:
        grouped: dict[str, set[str]] = defaultdict(set)
        for system, code in self.excluded:
            if system in self.systems:
                grouped[system].add(code)
        return {system: sorted(grouped.get(system, ())) for system in sorted(self.systems)}

    def all_codes(self) -> list[str]:
        """Every member code whatever its system (values of type ``code`` are indexed without one)."""
        return sorted({code for system, code in self.codes if self.has((system, code))})


def listed(pairs: Iterable[Pair]) -> Expansion:
    return Expansion(codes=frozenset(pairs))


# -- CodeSystem hierarchies ---------------------------------------------------------------------


@dataclass
class Hierarchy:
    """The codes of a CodeSystem and their is-a links (R4B codesystem.html, ``concept`` and properties)."""

    url: str
    codes: set[str] = field(default_factory=set)
    parents: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    children: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))

    def link(self, parent: str, child: str) -> None:
        self.parents[child].add(parent)
        self.children[parent].add(child)

    def closure(self, code: str, *, below: bool) -> frozenset[str]:
        """``code`` and every code below it (descendants) or above it (ancestors)."""
        step = self.children if below else self.parents
        seen = {code}
        pending = [code]
        while pending:
            for nxt in step.get(pending.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    pending.append(nxt)
        return frozenset(seen)


def hierarchy(code_system: dict[str, Any]) -> Hierarchy:
    """Nested ``concept`` elements and the ``parent``, ``child`` and ``subsumedBy`` properties, as is-a links."""
    tree = Hierarchy(str(code_system.get("url") or ""))
    pending: list[tuple[str | None, Any]] = [(None, c) for c in code_system.get("concept") or []]
    while pending:
        parent, concept = pending.pop()
        if not isinstance(concept, dict) or not isinstance(concept.get("code"), str):
            continue
        code = concept["code"]
        tree.codes.add(code)
        if parent is not None:
            tree.link(parent, code)
        for prop in concept.get("property") or []:
            if not isinstance(prop, dict) or not isinstance(prop.get("valueCode"), str):
                continue
            if prop.get("code") in ("parent", "subsumedBy"):
                tree.link(prop["valueCode"], code)
            elif prop.get("code") == "child":
                tree.link(code, prop["valueCode"])
        pending.extend((code, child) for child in concept.get("concept") or [])
    return tree


# -- the per-statement service ------------------------------------------------------------------


class _VersionCache:
    """A small process-wide cache keyed by a stored resource's ``(res_pk, version)``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[tuple[int, int], Any] = {}

    def get(self, key: tuple[int, int]) -> Any:
        with self._lock:
            return self._items.get(key)

    def put(self, key: tuple[int, int], value: Any) -> None:
        with self._lock:
            if len(self._items) >= _CACHE_SIZE:
                self._items.pop(next(iter(self._items)))
            self._items[key] = value


_EXPANSIONS = _VersionCache()
_HIERARCHIES = _VersionCache()


@dataclass(frozen=True)
class _Stored:
    key: tuple[int, int]
    resource: dict[str, Any]


class Terminology:
    """Expands value sets and walks code system hierarchies for one statement, reading stored resources."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._expansions: dict[str, Expansion] = {}

    # -- public ------------------------------------------------------------------------------

    def expansion(self, ref: ValueSetRef) -> Expansion:
        """The members of the ValueSet ``ref`` names; 400 naming the parameter when it cannot be expanded."""
        shown = ref.shown
        if shown not in self._expansions:
            self._expansions[shown] = self._expand_ref(ref.name, ref.canonical, ref.id, ())
        return self._expansions[shown]

    def subsumed(self, value: Subsumption) -> frozenset[str]:
        """The codes ``:below`` (or ``:above``) ``system|code``, the code included."""
        tree = self._hierarchy(value.name, value.system, needed="follow :above and :below")
        if value.code not in tree.codes:
            raise bad_value(value.name, f"'{value.code}' is not a code of the CodeSystem {value.system}.")
        return tree.closure(value.code, below=value.below)

    # -- value sets ----------------------------------------------------------------------------

    def _expand_ref(self, name: str, canonical: str | None, res_id: str | None, trail: tuple[str, ...]) -> Expansion:
        shown = canonical or f"ValueSet/{res_id}"
        if shown in trail:
            raise bad_value(name, f"The ValueSet {shown} includes itself (through {' → '.join(trail)}).")
        if len(trail) >= MAX_DEPTH:
            raise bad_value(name, f"ValueSets include each other more than {MAX_DEPTH} levels deep at {shown}.")
        stored = self._stored_by_id(res_id) if res_id else self._stored(name, "ValueSet", canonical or "")
        if stored is None:
            core = definitions.value_set_codes((canonical or "").partition("|")[0]) if canonical else None
            if core is None:
                raise bad_value(
                    name,
                    f"The ValueSet {shown} is not known to this server: store it (POST ValueSet) or use an "
                    f"official R4B value set with an enumerable expansion.",
                )
            return listed((system, code) for system, codes in core.items() for code in codes)
        cached = _EXPANSIONS.get(stored.key)
        if cached is not None:
            return cached
        expansion, self_contained = self._expand(name, stored.resource, (*trail, shown))
        if self_contained:
            _EXPANSIONS.put(stored.key, expansion)
        return expansion

    def _expand(self, name: str, value_set: dict[str, Any], trail: tuple[str, ...]) -> tuple[Expansion, bool]:
        """The members and whether they depend on this ValueSet alone."""
        contains = (value_set.get("expansion") or {}).get("contains")
        if isinstance(contains, list):
            return listed(_contained(contains)), True
        compose = value_set.get("compose")
        if not isinstance(compose, dict) or not compose.get("include"):
            raise bad_value(name, f"The ValueSet {trail[-1]} has neither an expansion nor a compose.include.")
        self_contained = True
        members = Expansion()
        for rule in compose["include"]:
            part, alone = self._rule(name, rule, trail)
            members = members.union(part)
            self_contained = self_contained and alone
        for rule in compose.get("exclude") or []:
            part, alone = self._rule(name, rule, trail)
            members = members.minus(part)
            self_contained = self_contained and alone
        return members, self_contained

    def _rule(self, name: str, rule: Any, trail: tuple[str, ...]) -> tuple[Expansion, bool]:
        """One ``include`` / ``exclude``: the intersection of its system part and its value sets."""
        where = trail[-1]
        if not isinstance(rule, dict):
            raise bad_value(name, f"The ValueSet {where} has a compose rule that is not an object.")
        system, concepts, filters = rule.get("system"), rule.get("concept"), rule.get("filter")
        value_sets = rule.get("valueSet") or []
        if system is None and not value_sets:
            raise bad_value(name, f"A compose rule of the ValueSet {where} names neither a system nor a valueSet.")
        parts: list[Expansion] = []
        alone = not value_sets and not filters and bool(concepts)  # a whole system reads its CodeSystem
        if isinstance(system, str):
            if concepts:
                parts.append(listed((system, c["code"]) for c in concepts if isinstance(c, dict) and c.get("code")))
            elif filters:
                parts.append(self._filtered(name, system, filters, where))
            else:
                parts.append(self._whole_system(name, system))
            if concepts and filters:
                parts.append(self._filtered(name, system, filters, where))
        for canonical in value_sets:
            parts.append(self._expand_ref(name, str(canonical), None, trail))
        result = parts[0]
        for part in parts[1:]:
            result = result.intersection(part)
        return result, alone

    def _filtered(self, name: str, system: str, filters: list[Any], where: str) -> Expansion:
        """Filters over a stored CodeSystem, ANDed (R4B valueset-filter-operator)."""
        tree = self._hierarchy(name, system, needed=f"apply the filters of the ValueSet {where}")
        result: Expansion | None = None
        for item in filters:
            prop, op, value = (item.get(k) if isinstance(item, dict) else None for k in ("property", "op", "value"))
            if op not in _FILTERS or prop not in ("concept", "code") or not isinstance(value, str):
                raise bad_value(
                    name,
                    f"The ValueSet {where} filters by '{prop} {op} {value}': supported are the concept filters "
                    f"{', '.join(sorted(_FILTERS))}.",
                )
            if op != "in" and value not in tree.codes:
                raise bad_value(name, f"The ValueSet {where} filters on '{value}', not a code of {system}.")
            if op == "is-a":
                part = listed((system, c) for c in tree.closure(value, below=True))
            elif op == "descendent-of":
                part = listed((system, c) for c in tree.closure(value, below=True) - {value})
            elif op == "generalizes":
                part = listed((system, c) for c in tree.closure(value, below=False))
            elif op == "is-not-a":
                part = listed((system, c) for c in tree.codes - tree.closure(value, below=True))
            elif op == "in":
                part = listed((system, c.strip()) for c in value.split(",") if c.strip())
            else:
                part = listed([(system, value)])
            result = part if result is None else result.intersection(part)
        return result or Expansion()

    def _whole_system(self, name: str, system: str) -> Expansion:
        """Every code of ``system``; its codes are listed too when known (a stored CodeSystem, else the
        official value sets), so that values of type ``code``, indexed without a system, can match."""
        stored = self._stored(name, "CodeSystem", system)
        codes = hierarchy(stored.resource).codes if stored is not None else _official_codes(system)
        return Expansion(codes=frozenset((system, code) for code in codes), systems=frozenset({system}))

    # -- code systems --------------------------------------------------------------------------

    def _hierarchy(self, name: str, system: str, *, needed: str) -> Hierarchy:
        stored = self._stored(name, "CodeSystem", system)
        if stored is None:
            raise bad_value(
                name,
                f"The code system {system} is not stored on this server, so its hierarchy is unknown; "
                f"store its CodeSystem (with nested concepts or parent/subsumedBy properties) to {needed}.",
            )
        tree = _HIERARCHIES.get(stored.key)
        if tree is None:
            tree = hierarchy(stored.resource)
            _HIERARCHIES.put(stored.key, tree)
        return tree

    # -- stored resources ----------------------------------------------------------------------

    def _stored(self, name: str, res_type: str, canonical: str) -> _Stored | None:
        from fhir_server.search.query import find  # the search engine, which builds on this module

        url, _, version = canonical.partition("|")
        params = [("url", url), *([("version", version)] if version else [])]
        found = find(self.conn, default_registry(), res_type, params, limit=2)
        if len(found) > 1:
            hint = "; name one as url|version" if res_type == "ValueSet" else ""
            raise bad_value(name, f"Several {res_type} resources have the URL {url}{hint}.")
        return self._load(found[0]) if found else None

    def _stored_by_id(self, res_id: str) -> _Stored | None:
        pk = self.conn.execute(
            select(resources.c.res_pk).where(
                resources.c.res_type == "ValueSet", resources.c.res_id == res_id, resources.c.deleted.is_(False)
            )
        ).scalar_one_or_none()
        return self._load(pk) if pk is not None else None

    def _load(self, res_pk: int) -> _Stored | None:
        versions = Repository(default_registry()).load_many(self.conn, [res_pk])
        if not versions or versions[0].body is None:
            return None
        return _Stored((res_pk, versions[0].version), versions[0].resource())


@cache
def _official_codes(system: str) -> frozenset[str]:
    """The codes of ``system`` that the official value sets of the definition table list."""
    found: set[str] = set()
    for url in definitions.value_set_urls():
        found |= (definitions.value_set_codes(url) or {}).get(system, frozenset())
    return frozenset(found)


def _contained(contains: list[Any]) -> Iterable[Pair]:
    pending = list(contains)
    while pending:
        item = pending.pop()
        if not isinstance(item, dict):
            continue
        if isinstance(item.get("system"), str) and isinstance(item.get("code"), str):
            yield item["system"], item["code"]
        pending.extend(item.get("contains") or [])


__all__ = [
    "Expansion",
    "Hierarchy",
    "Subsumption",
    "Terminology",
    "TerminologyError",
    "ValueSetRef",
    "hierarchy",
]
