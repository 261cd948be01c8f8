"""Index rows of a resource: each search parameter's values turned into rows of its type's table (R4B §3.1.1.4).

Rows of a composite parameter's components go to the component types' tables under ``code$i`` with a
group number tying the components of one element together; Location ``near`` fills the coordinates table.
Each type's parameters are compiled once into indexers; a walk whose first element the resource lacks is skipped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection

from fhir_server.search import date_spans, param_ids, pinyin, ucum
from fhir_server.search.extract import Extractor, compile_expression, root_elements
from fhir_server.search.parameters import Registry, SearchParam
from fhir_server.search.values import date_range, fold

Row = dict[str, Any]
Converter = Callable[[Any], Iterator[tuple[str, Row]]]
"""A value of the parameter → (table type, row) pairs; a reference also yields token rows for ``:identifier``."""

MAX_TEXT = 2000
UNBOUNDED_LOW = -(2**62)
UNBOUNDED_HIGH = 2**62
IDENTIFIER_SUFFIX = ":identifier"
"""Token rows of ``Reference.identifier`` are stored under ``<param>:identifier``."""
OF_TYPE = "of-type"
"""``text`` marker of the token rows that serve ``:of-type`` (code ``TYPECODE|value``)."""
_NAME_PARTS = ("family", "given", "prefix", "suffix", "text")
_ADDRESS_PARTS = ("line", "city", "district", "state", "postalCode", "country", "text")
_GROUPED = frozenset({"token", "string", "date", "number", "quantity", "uri", "reference"})


def index_rows(
    registry: Registry, resource_type: str, resource: dict[str, Any], *, only: frozenset[str] | None = None
) -> dict[str, list[Row]]:
    """All index rows of a resource, grouped by the table type they go to (keys of ``INDEX_TABLES``); with
    ``only``, the rows of the parameters whose walk may start from one of those top-level elements."""
    rows: dict[str, list[Row]] = {}
    seen: set[tuple] = set()

    def emit(table: str, param: str, row: Row, group: int | None = None) -> None:
        # Every converter gives the rows of one table the same keys in the same order: the values identify a row.
        key = (table, param, group, *row.values())
        if key not in seen:
            seen.add(key)
            full = {"param": param, **row}
            if table in _GROUPED:
                full["grp"] = group
            rows.setdefault(table, []).append(_hashed(table, resource_type, full))

    walked: dict[Extractor, list[Any]] = {}  # parameters sharing an expression (the composites) walk it once
    converted: dict[tuple[int, Extractor, Converter], list[tuple[str, Row]]] = {}
    for indexer in _indexers(registry, resource_type):
        if indexer.roots is not None and indexer.roots.isdisjoint(resource):
            continue  # none of the elements the walk starts from is present
        if only is not None and indexer.roots is not None and indexer.roots.isdisjoint(only):
            continue
        if indexer.components:
            foci = walked.get(indexer.extract)
            if foci is None:
                foci = walked[indexer.extract] = indexer.extract(resource, resource)
            if foci:
                _composite(resource, indexer, foci, emit, converted)
            continue
        values = indexer.extract(resource, resource)
        if not values:
            continue
        if indexer.pinyin:
            for value in values:
                for form in pinyin.name_forms(value):
                    emit("string", indexer.code, {"norm": form[:MAX_TEXT], "exact": form[:MAX_TEXT]})
        else:
            convert = indexer.convert
            for value in values:
                for table, row in convert(value):  # type: ignore[misc]
                    emit(table, indexer.code if table in indexer.own_tables else indexer.identifier_code, row)
    return rows


def reindexed(
    registry: Registry,
    resource_type: str,
    resource: dict[str, Any],
    rows: dict[str, list[Row]],
    changed: frozenset[str],
) -> dict[str, list[Row]]:
    """``rows`` (:func:`index_rows` of an earlier state of ``resource``) after its top-level elements ``changed``
    changed: the parameters whose walk may read them are extracted again, the other parameters' rows kept."""
    redone: set[str] = set()
    for indexer in _indexers(registry, resource_type):
        if indexer.roots is None or not indexer.roots.isdisjoint(changed):
            redone.update((indexer.code, indexer.identifier_code))
            redone.update(f"{indexer.code}${position}" for position in range(len(indexer.components)))
    result = {table: [row for row in table_rows if row["param"] not in redone] for table, table_rows in rows.items()}
    for table, table_rows in index_rows(registry, resource_type, resource, only=changed).items():
        result.setdefault(table, []).extend(table_rows)
    return {table: table_rows for table, table_rows in result.items() if table_rows}


def unchanged_rows(registry: Registry, resource_type: str, changed: frozenset[str]) -> frozenset[str]:
    """Names (``param``) of the rows that no change of the top-level elements ``changed`` can change: those of
    the official and local parameters whose walk cannot read them. ``index_rows(..., only=changed)`` gives every
    other row. Empty when parameters posted at run time apply to the type (their rows are always written again)."""
    params = registry.for_type(resource_type)
    cached = _UNCHANGED.get((id(params), changed))
    if cached is not None and cached[0] is params:
        return cached[1]
    kept: set[str] = set()
    if not registry.has_custom(resource_type):
        for indexer in _indexers(registry, resource_type):
            if indexer.roots is not None and indexer.roots.isdisjoint(changed):
                kept.update((indexer.code, indexer.identifier_code))
                kept.update(f"{indexer.code}${position}" for position in range(len(indexer.components)))
        kept.discard("")
    if len(_UNCHANGED) > 4096:
        _UNCHANGED.clear()
    _UNCHANGED[id(params), changed] = (params, frozenset(kept))
    return frozenset(kept)


_UNCHANGED: dict[tuple[int, frozenset[str]], tuple[dict[str, SearchParam], frozenset[str]]] = {}


def stored_rows(
    conn: Connection, registry: Registry, resource_type: str, resource: dict[str, Any], res_pk: int
) -> dict[str, list[Row]]:
    """``index_rows`` as stored: with ``res_pk``, and the ``param_id`` of (type, parameter) for the parameter."""
    return as_stored(conn, resource_type, index_rows(registry, resource_type, resource), res_pk)


def as_stored(conn: Connection, resource_type: str, rows: dict[str, list[Row]], res_pk: int) -> dict[str, list[Row]]:
    """Rows of :func:`index_rows` (extracted before the unit of work) made the rows :func:`stored_rows` gives."""
    pairs = {(resource_type, row["param"]) for table_rows in rows.values() for row in table_rows}
    ids = param_ids.assign(conn, pairs)
    for table_rows in rows.values():
        for row in table_rows:
            row["param_id"], row["res_pk"] = ids[resource_type, row.pop("param")], res_pk
    if "date" in rows:
        date_spans.widen(conn, reach_of_dates(rows["date"]))
    return rows


def reach_of_dates(rows: list[Row]) -> dict[int, int]:
    """``param_id`` → how far one resource's date rows of it reach: its greatest bound (``low`` or ``high``) less
    its least, for the bound ``search.date_spans`` keeps. A parameter of which the resource has a row with an
    open end is left out (a search reads those rows apart)."""
    hulls: dict[int, tuple[int, int]] = {}
    open_ended: set[int] = set()
    for row in rows:
        param_id, low, high = row["param_id"], row["low"], row["high"]
        if low == UNBOUNDED_LOW or high == UNBOUNDED_HIGH:
            open_ended.add(param_id)
        else:
            first, last = hulls.get(param_id, (low, high))
            hulls[param_id] = (min(first, low, high), max(last, low, high))
    return {param_id: last - first for param_id, (first, last) in hulls.items() if param_id not in open_ended}


@dataclass(frozen=True, slots=True)
class _Indexer:
    """One search parameter of one resource type, compiled once: its walk and how its values become rows."""

    code: str
    extract: Extractor
    roots: frozenset[str] | None
    """Keys of the resource of which one must be present for the walk to find anything (None: unknown)."""
    convert: Converter | None = None
    pinyin: bool = False
    own_tables: frozenset[str] = frozenset()
    """Tables whose rows go under the parameter's code (the others: ``code:identifier``)."""
    identifier_code: str = ""
    components: tuple[tuple[str, Converter, Extractor], ...] = ()
    """Composites: (type, converter, walk relative to the focus) of each component."""


_COMPILED: dict[int, tuple[dict[str, SearchParam], tuple[_Indexer, ...]]] = {}


def _indexers(registry: Registry, resource_type: str) -> tuple[_Indexer, ...]:
    """The compiled indexers of a type, cached for as long as the registry serves the same parameters."""
    params = registry.for_type(resource_type)
    cached = _COMPILED.get(id(params))
    if cached is not None and cached[0] is params:
        return cached[1]
    compiled = tuple(filter(None, (_indexer(param) for param in params.values())))
    if len(_COMPILED) > 4096:  # custom parameters reloaded many times: start again
        _COMPILED.clear()
    _COMPILED[id(params)] = (params, compiled)
    return compiled


def _indexer(param: SearchParam) -> _Indexer | None:
    if param.code in ("_id", "_lastUpdated"):
        return None  # served by the resources table
    walk, roots = compile_expression(param.expression)[0], root_elements(param.expression)
    if param.type == "composite":
        components = []
        for component in param.components:
            convert = CONVERTERS.get(component.type)
            if convert is None:
                return None  # a component without values: no element has them all
            components.append((component.type, convert, compile_expression(component.expression, relative=True)[0]))
        return _Indexer(param.code, walk, roots, components=tuple(components)) if components else None
    if param.index_function == "pinyin":
        return _Indexer(param.code, walk, roots, pinyin=True)
    convert = CONVERTERS.get(param.type)
    if convert is None:
        return None
    return _Indexer(
        param.code,
        walk,
        roots,
        convert,
        own_tables=frozenset({param.type, "coords"}),
        identifier_code=param.code + IDENTIFIER_SUFFIX,
    )


@lru_cache(maxsize=16_384)  # parameter names, systems and codes repeat from resource to resource
def search_hash(*parts: str | None) -> int:
    """A signed 64-bit hash of (resource type, parameter, value parts), as HAPI FHIR keys its index rows.

    Equality on a hash column is one probe of a narrow bigint index; a missing part hashes as empty.
    """
    text = "\x1f".join(part or "" for part in parts)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big", signed=True)


def _hashed(table: str, resource_type: str, row: Row) -> Row:
    """Token rows get ``hash_value`` / ``hash_sys_value``, string rows ``hash_prefix``."""
    param = row["param"]
    if table == "token":
        code = row["code"]
        if code is None:
            row["hash_value"] = row["hash_sys_value"] = None
        else:
            row["hash_value"] = search_hash(resource_type, param, code)
            row["hash_sys_value"] = search_hash(resource_type, param, row["system"], code)
    elif table == "string":
        row["hash_prefix"] = search_hash(resource_type, param, row["norm"][:1])
    return row


def _composite(
    resource: dict[str, Any],
    indexer: _Indexer,
    foci: list[Any],
    emit: Callable[..., None],
    converted: dict[tuple[int, Extractor, Converter], list[tuple[str, Row]]],
) -> None:
    """Rows of each component under ``code$i``, for the elements where every component has a value.

    ``converted`` keeps each focus's rows of a component walk for the other composites of the resource that share
    it (``code`` in every ``code-value-*``): rows are read, never changed, by ``emit``."""
    for group, focus in enumerate(foci):
        parts = []
        for kind, convert, walk in indexer.components:
            key = (id(focus), walk, convert)
            every = converted.get(key)
            if every is None:
                every = converted[key] = [pair for value in walk(focus, resource) for pair in convert(value)]
            found = [pair for pair in every if pair[0] == kind]
            if not found:
                break
            parts.append(found)
        else:
            for position, found in enumerate(parts):
                for table, row in found:
                    emit(table, f"{indexer.code}${position}", row, group)


def _text(value: Any) -> str | None:
    return value[:MAX_TEXT] if isinstance(value, str) and value else None


def _folded(value: Any) -> str | None:
    return fold(value)[:MAX_TEXT] if isinstance(value, str) and value.strip() else None


def token_rows(value: Any) -> Iterator[tuple[str, Row]]:
    """Coding, CodeableConcept, Identifier, ContactPoint, code, boolean, string (R4B §3.1.1.4.10)."""
    if isinstance(value, bool):
        yield "token", {"system": None, "code": "true" if value else "false", "text": None}
    elif isinstance(value, str | int | float | Decimal):
        if str(value):
            yield "token", {"system": None, "code": _text(str(value)), "text": None}
    elif not isinstance(value, dict):
        return
    elif "coding" in value or ("text" in value and not {"code", "value", "system"} & value.keys()):
        for coding in value.get("coding") or []:
            yield from token_rows(coding)
        if _folded(value.get("text")):
            yield "token", {"system": None, "code": None, "text": _folded(value["text"])}
    elif "value" in value:  # Identifier or ContactPoint
        kind = value.get("type") if isinstance(value.get("type"), dict) else {}
        yield (
            "token",
            {
                "system": _text(value.get("system")),
                "code": _text(str(value["value"])),
                "text": _folded(kind.get("text")),
            },
        )
        for coding in kind.get("coding") or []:
            if isinstance(coding, dict) and coding.get("code"):
                row = {"system": _text(coding.get("system")), "code": _text(f"{coding['code']}|{value['value']}")}
                yield "token", {**row, "text": OF_TYPE}
    elif "code" in value or "system" in value:
        yield (
            "token",
            {
                "system": _text(value.get("system")),
                "code": _text(value.get("code")),
                "text": _folded(value.get("display")),
            },
        )


def string_rows(value: Any) -> Iterator[tuple[str, Row]]:
    """A string, or the parts of a HumanName or Address (R4B §3.1.1.4.9); 张三 is also indexed whole."""
    if isinstance(value, str):
        if value.strip():
            yield "string", {"norm": fold(value)[:MAX_TEXT], "exact": value[:MAX_TEXT]}
        return
    if not isinstance(value, dict):
        return
    is_name = bool({"family", "given"} & value.keys())
    for key in _NAME_PARTS if is_name else _ADDRESS_PARTS:
        item = value.get(key)
        for text in item if isinstance(item, list) else [item]:
            if isinstance(text, str):
                yield from string_rows(text)
    family = value.get("family")
    if is_name and isinstance(family, str) and family and pinyin.is_cjk(family[0]) and value.get("given"):
        yield from string_rows(family + "".join(g for g in value["given"] if isinstance(g, str)))


def _span(value: Any) -> tuple[int, int] | None:
    return date_range(value) if isinstance(value, str) else None


def date_rows(value: Any) -> Iterator[tuple[str, Row]]:
    """date, dateTime, instant, Period (open ends unbounded), Timing events and bounds (R4B §3.1.1.4.3)."""
    if isinstance(value, str):
        span = _span(value)
        if span:
            yield "date", {"low": span[0], "high": span[1]}
        return
    if not isinstance(value, dict):
        return
    if "start" in value or "end" in value:
        start, end = _span(value.get("start")), _span(value.get("end"))
        if start or end:
            yield "date", {"low": start[0] if start else UNBOUNDED_LOW, "high": end[1] if end else UNBOUNDED_HIGH}
        return
    for event in value.get("event") or []:
        yield from date_rows(event)
    bounds = (value.get("repeat") or {}).get("boundsPeriod")
    if bounds:
        yield from date_rows(bounds)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return None
    return float(value)


def number_rows(value: Any) -> Iterator[tuple[str, Row]]:
    number = _number(value)
    if number is not None:
        yield "number", {"low": number, "high": number}


def quantity_rows(value: Any) -> Iterator[tuple[str, Row]]:
    """Quantity (and Age, Duration, …), Money (code = currency) and Range (R4B §3.1.1.4.6)."""
    if not isinstance(value, dict):
        return
    if "low" in value or "high" in value:
        low, high = value.get("low") or {}, value.get("high") or {}
        low_value, high_value = _number(low.get("value")), _number(high.get("value"))
        if low_value is None and high_value is None:
            return
        unit = low if low_value is not None else high
        system, code = unit.get("system"), unit.get("code") or unit.get("unit")
        low_value = low_value if low_value is not None else float("-inf")
        high_value = high_value if high_value is not None else float("inf")
        yield "quantity", _quantity_row(system, code, low_value, high_value)
        return
    number = _number(value.get("value"))
    if number is None:
        return
    if "currency" in value:
        system, code = "urn:iso:std:iso:4217", value["currency"]
    else:
        system, code = value.get("system"), value.get("code") or value.get("unit")
    yield "quantity", _quantity_row(system, code, number, number)


def _quantity_row(system: Any, code: Any, low: float, high: float) -> Row:
    """The row as written, plus the value in UCUM base units when the unit is a UCUM code we can convert."""
    row = {"system": _text(system), "code": _text(code), "low": low, "high": high}
    unit = ucum.canonical(code) if system == ucum.UCUM_SYSTEM and isinstance(code, str) else None
    if unit is None:
        return {**row, "canon_code": None, "canon_low": None, "canon_high": None}
    return {**row, "canon_code": unit.code, "canon_low": unit.convert(low), "canon_high": unit.convert(high)}


def uri_rows(value: Any) -> Iterator[tuple[str, Row]]:
    if isinstance(value, str) and value:
        yield "uri", {"uri": value[:MAX_TEXT]}


def reference_rows(value: Any) -> Iterator[tuple[str, Row]]:
    """Reference (literal, absolute, logical by identifier) or canonical (R4B §3.1.1.4.8)."""
    if isinstance(value, str):  # canonical: by its URL, with and without |version
        for url in dict.fromkeys([value, value.split("|", 1)[0]]) if value else []:
            target_type, target_id = split_reference(url)
            yield "reference", {"target_type": target_type, "target_id": target_id, "url": url[:MAX_TEXT]}
        return
    if not isinstance(value, dict):
        return
    literal = value.get("reference")
    if isinstance(literal, str) and literal and not literal.startswith("#"):
        target_type, target_id = split_reference(literal)
        url = literal[:MAX_TEXT] if target_type is None or "://" in literal or literal.startswith("urn:") else None
        yield "reference", {"target_type": target_type, "target_id": target_id, "url": url}
    identifier = value.get("identifier")
    if isinstance(identifier, dict) and identifier.get("value"):
        yield from token_rows(identifier)


def coords_rows(value: Any) -> Iterator[tuple[str, Row]]:
    """Location.position for ``near`` (R4B §3.1.1.4.14)."""
    if isinstance(value, dict):
        latitude, longitude = _number(value.get("latitude")), _number(value.get("longitude"))
        if latitude is not None and longitude is not None:
            yield "coords", {"latitude": latitude, "longitude": longitude}


def split_reference(reference: str) -> tuple[str | None, str | None]:
    """``Patient/1``, ``Patient/1/_history/2`` or an absolute URL → (type, id)."""
    parts = reference.split("?")[0].split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) >= 2 and parts[-2][:1].isupper() and parts[-1]:
        return parts[-2][:64], parts[-1][:64]
    return None, None


CONVERTERS: dict[str, Converter] = {
    "token": token_rows,
    "string": string_rows,
    "date": date_rows,
    "number": number_rows,
    "quantity": quantity_rows,
    "uri": uri_rows,
    "reference": reference_rows,
    "special": coords_rows,
}
