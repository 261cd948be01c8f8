"""Parse a search query into a typed request: criteria (ANDed clauses of ORed values) and result controls.

R4B §3.1.1 Search: parameter types §3.1.1.4, modifiers and prefixes §3.1.1.4.x, chaining §3.1.1.4.8.1–2,
result parameters §3.1.1.5. Every malformed or unknown part raises a FhirError naming the parameter; with
``lenient`` it is left out and reported in :attr:`SearchRequest.ignored` instead.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from fhir_server import definitions
from fhir_server.errors import FhirError
from fhir_server.search.parameters import Registry, SearchParam
from fhir_server.search.terminology import Subsumption, ValueSetRef
from fhir_server.search.values import (
    number_range,
    parse_decimal,
    search_date,
    split_escaped,
    split_prefix,
    unescape,
)

ID = SearchParam("_id", "token", "Resource.id", "http://hl7.org/fhir/SearchParameter/Resource-id")
LAST_UPDATED = SearchParam(
    "_lastUpdated", "date", "Resource.meta.lastUpdated", "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated"
)
RESULT_PARAMETERS = frozenset(
    {"_count", "_sort", "_include", "_revinclude", "_summary", "_total", "_elements", "_contained", "_containedType"}
)
PASSIVE_PARAMETERS = frozenset({"_format", "_pretty", "_cursor"})
"""Handled outside search (content negotiation, paging cursor)."""
UNSUPPORTED = frozenset({"_text", "_content", "_filter", "_query", "_security-label"})
MODIFIERS = {
    "string": {"exact", "contains", "missing"},
    "token": {"not", "text", "of-type", "missing", "in", "not-in", "above", "below"},
    "reference": {"identifier", "missing"},
    "date": {"missing"},
    "number": {"missing"},
    "quantity": {"missing"},
    "uri": {"below", "above", "missing"},
    "composite": set(),
    "special": set(),
}
MAX_CHAIN = 4
_KM_PER_UNIT = {"km": 1.0, "m": 0.001, "mi": 1.609344, "[mi_i]": 1.609344, "[mi_us]": 1.609347}
DEFAULT_NEAR_KM = 10.0


# -- values -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    """``code``, ``system|code``, ``|code`` (system "") or ``system|`` (code None)."""

    system: str | None
    code: str | None


@dataclass(frozen=True)
class OfType:
    system: str
    code: str
    value: str


@dataclass(frozen=True)
class Bounds:
    """A date, number or quantity value: prefix, exact value (numbers) and implicit range (low/high)."""

    prefix: str
    low: float | int
    high: float | int
    value: float | int = 0
    system: str | None = None
    code: str | None = None


@dataclass(frozen=True)
class Ref:
    """``id``, ``Type/id`` or an absolute/canonical ``url``."""

    type: str | None = None
    id: str | None = None
    url: str | None = None


@dataclass(frozen=True)
class Near:
    latitude: float
    longitude: float
    km: float


# -- clauses ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Match:
    """``name[:modifier]=v1,v2``: any of ``values`` (typed per parameter type) matches."""

    param: SearchParam
    modifier: str | None
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Missing:
    param: SearchParam
    missing: bool


@dataclass(frozen=True)
class Chain:
    """``ref[:Type].rest=value``: a target of ``ref`` (one of ``inner``'s types) satisfies the inner clause."""

    param: SearchParam
    inner: tuple[tuple[str, Clause], ...]


@dataclass(frozen=True)
class Has:
    """``_has:Type:ref:rest=value``: some ``Type`` referring here through ``ref`` satisfies the inner clause."""

    source_type: str
    param: SearchParam
    inner: Clause


@dataclass(frozen=True)
class InList:
    list_ids: tuple[str, ...]


@dataclass(frozen=True)
class Compartment:
    """Members of ``Type/id``'s compartment: resources that refer to it through their type's ``params``."""

    type: str
    id: str
    params: tuple[tuple[str, tuple[str, ...]], ...]
    """(resource type, parameter codes) pairs from the CompartmentDefinition (R4B §3.1.1.2)."""


Clause = Match | Missing | Chain | Has | InList | Compartment


@dataclass(frozen=True)
class SortKey:
    param: SearchParam
    descending: bool


@dataclass(frozen=True)
class Include:
    """``_include[:iterate]=Source:param[:Target]`` or ``_revinclude`` (``param`` "*" for every reference)."""

    source: str
    param: str
    target: str | None
    iterate: bool
    reverse: bool


@dataclass
class SearchRequest:
    types: tuple[str, ...]
    """Resource types searched; empty for every type (system search without ``_type``)."""
    clauses: list[Clause] = field(default_factory=list)
    count: int = 20
    sort: list[SortKey] = field(default_factory=list)
    total: str = "accurate"
    summary: str | None = None
    elements: str | None = None
    includes: list[Include] = field(default_factory=list)
    cursor: str | None = None
    applied: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    lenient: bool = False
    """``Prefer: handling=lenient``: what turns out unusable later (a ValueSet that is not known) is ignored too."""

    def ignore(self, name: str, reason: str) -> None:
        """Leave out an applied criterion found unusable after parsing (``name`` as written, or its last link)."""
        self.ignored.append(f"{name}: {reason}")
        for position, (applied, _) in enumerate(self.applied):
            if applied == name or applied.endswith(("." + name, ":" + name)):
                del self.applied[position]
                return


def invalid_parameter(name: str, message: str) -> FhirError:
    return FhirError("invalid", message, expression=(name,))


# -- parsing ------------------------------------------------------------------------------------


def parse_request(
    registry: Registry,
    types: tuple[str, ...],
    params: list[tuple[str, str]],
    *,
    lenient: bool = False,
    default_count: int = 20,
    max_count: int = 1000,
    base_url: str | None = None,
    system_level: bool = False,
) -> SearchRequest:
    """The typed request of a search on ``types`` (every type when empty and ``system_level``)."""
    if system_level:
        for name, raw in params:
            if name == "_type":
                types = tuple(dict.fromkeys((*types, *_types(name, raw))))
    request = SearchRequest(types=types, count=min(default_count, max_count), lenient=lenient)
    for name, raw in params:
        try:
            if name == "_type":
                if not system_level:
                    raise invalid_parameter(name, "_type is only for searches across types (GET [base]?_type=…).")
                request.applied.append((name, raw))
                continue
            _parse_one(registry, request, name, raw, max_count=max_count, base_url=base_url)
        except FhirError as error:
            if not lenient:
                raise
            request.ignored.append(f"{name}: {error.diagnostics}")
            continue
        if name != "_cursor":
            request.applied.append((name, raw))
    if request.cursor:
        try:
            decode_cursor(request.cursor, sort_signature(request.sort), len(request.sort))
        except FhirError as error:
            if not lenient:
                raise
            request.ignored.append(f"_cursor: {error.diagnostics}")
            request.cursor = None
    return request


def _parse_one(
    registry: Registry, request: SearchRequest, name: str, raw: str, *, max_count: int, base_url: str | None
) -> None:
    base, _, modifier = name.partition(":")
    if base in PASSIVE_PARAMETERS:
        if base == "_cursor":
            request.cursor = raw
        return
    if base == "_count":
        if not raw.isdigit():
            raise invalid_parameter(name, f"_count must be a non-negative whole number, not '{raw}'.")
        request.count = min(int(raw), max_count)
    elif base == "_total":
        if raw not in ("none", "estimate", "accurate"):
            raise invalid_parameter(name, f"_total={raw} is not one of none, estimate, accurate.")
        request.total = raw
    elif base == "_summary":
        if raw not in ("true", "text", "data", "count", "false"):
            raise invalid_parameter(name, f"_summary={raw} is not one of true, text, data, count, false.")
        request.summary = raw
    elif base == "_elements":
        request.elements = raw
    elif base == "_sort":
        request.sort = [_sort_key(registry, request.types, name, key) for key in raw.split(",") if key]
    elif base in ("_include", "_revinclude"):
        if modifier not in ("", "iterate", "recurse"):
            raise invalid_parameter(name, f"{base} takes only the :iterate modifier, not ':{modifier}'.")
        request.includes.append(_include(registry, name, raw, iterate=bool(modifier), reverse=base == "_revinclude"))
    elif base in ("_contained", "_containedType"):
        if raw not in ("false", "container"):
            raise invalid_parameter(name, f"{name}={raw} is not supported: contained resources are not searched.")
    else:
        request.clauses.append(parse_clause(registry, request.types, name, raw, base_url=base_url))


def parse_clause(
    registry: Registry, types: tuple[str, ...], name: str, raw: str, *, base_url: str | None = None, depth: int = 0
) -> Clause:
    """One search criterion on resources of ``types`` (R4B §3.1.1.4)."""
    if depth > MAX_CHAIN:
        raise invalid_parameter(name, f"'{name}' chains more than {MAX_CHAIN} levels.")
    if name.startswith("_has:"):
        return _has(registry, types, name, raw, base_url=base_url, depth=depth)
    if "." in name:  # parameter codes and modifiers never hold a dot
        return _chain(registry, types, name, raw, base_url=base_url, depth=depth)
    code, _, modifier = name.partition(":")
    if code in UNSUPPORTED:
        raise invalid_parameter(name, f"{code} is not supported by this server.")
    if code == "_list":
        if modifier:
            raise invalid_parameter(name, "_list takes no modifier.")
        return InList(tuple(unescape(v) for v in split_escaped(raw, ",") if v))
    param = _param(registry, types, name, code)
    if modifier == "missing":
        if raw not in ("true", "false"):
            raise invalid_parameter(name, f"{name} must be true or false, not '{raw}'.")
        return Missing(param, raw == "true")
    if modifier and not (
        modifier in MODIFIERS[param.type] or (param.type == "reference" and modifier in definitions.resource_types())
    ):
        raise invalid_parameter(
            name, f"Modifier ':{modifier}' is not supported on the {param.type} parameter '{code}'."
        )
    if param.code in ("_id", "_lastUpdated") and modifier and modifier != "not":
        raise invalid_parameter(name, f"Modifier ':{modifier}' is not supported on {param.code}.")
    values = []
    for text in split_escaped(raw, ","):
        if text == "":
            continue
        values.append(parse_value(param, modifier or None, text, name, base_url=base_url))
    if not values:
        raise invalid_parameter(name, f"Search parameter '{name}' has no value.")
    return Match(param, modifier or None, tuple(values))


def _param(registry: Registry, types: tuple[str, ...], name: str, code: str) -> SearchParam:
    if code == "_id":
        return ID
    if code == "_lastUpdated":
        return LAST_UPDATED
    found = [registry.get(t, code) for t in types] if types else [registry.get("Resource", code)]
    if any(p is None for p in found) or not found:
        where = ", ".join(types) if types else "every resource type"
        raise invalid_parameter(name, f"Unknown search parameter '{code}' for {where}.")
    if len({p.type for p in found}) > 1:  # type: ignore[union-attr]
        raise invalid_parameter(name, f"'{code}' has different types on {', '.join(types)}; search them one by one.")
    return found[0]  # type: ignore[return-value]


def _types(name: str, raw: str) -> list[str]:
    types = [t.strip() for t in raw.split(",") if t.strip()]
    unknown = [t for t in types if t not in definitions.resource_types()]
    if unknown or not types:
        raise invalid_parameter(name, f"_type names unknown resource types: {', '.join(unknown) or raw!r}.")
    return types


def _chain(
    registry: Registry, types: tuple[str, ...], name: str, raw: str, *, base_url: str | None, depth: int
) -> Clause:
    head, rest = name.split(".", 1)
    code, _, target = head.partition(":")
    param = _param(registry, types, name, code)
    if param.type != "reference":
        raise invalid_parameter(name, f"Cannot chain through '{code}': it is a {param.type}, not a reference.")
    if target and target not in definitions.resource_types():
        raise invalid_parameter(name, f"'{target}' in '{name}' is not a resource type.")
    candidates = [target] if target else list(param.targets)
    next_code = rest.split(".", 1)[0].split(":", 1)[0]
    inner = []
    for candidate in candidates:
        if (
            next_code.startswith("_has")
            or next_code in ("_id", "_lastUpdated", "_list")
            or registry.get(candidate, next_code)
        ):
            inner.append(
                (candidate, parse_clause(registry, (candidate,), rest, raw, base_url=base_url, depth=depth + 1))
            )
    if not inner:
        shown = target or ", ".join(param.targets) or "any type"
        raise invalid_parameter(name, f"Bad chain '{name}': no target of '{code}' ({shown}) has '{next_code}'.")
    return Chain(param, tuple(inner))


def _has(registry: Registry, types: tuple[str, ...], name: str, raw: str, *, base_url: str | None, depth: int) -> Has:
    parts = name.split(":", 3)
    if len(parts) != 4 or not parts[3]:
        raise invalid_parameter(name, f"'{name}' is not _has:[type]:[reference parameter]:[parameter].")
    _, source, code, rest = parts
    if source not in definitions.resource_types():
        raise invalid_parameter(name, f"'{source}' in '{name}' is not a resource type.")
    param = registry.get(source, code)
    if param is None or param.type != "reference":
        raise invalid_parameter(name, f"'{code}' is not a reference parameter of {source} (in '{name}').")
    if param.targets and types and not set(types) & set(param.targets):
        raise invalid_parameter(name, f"{source}.{code} never refers to {', '.join(types)}.")
    inner = parse_clause(registry, (source,), rest, raw, base_url=base_url, depth=depth + 1)
    return Has(source, param, inner)


# -- typed values --------------------------------------------------------------------------------


def parse_value(param: SearchParam, modifier: str | None, text: str, name: str, *, base_url: str | None) -> Any:
    """One comma-separated value of a parameter, as the type's value class; malformed → FhirError."""
    kind = param.type
    if kind == "token" and modifier in ("in", "not-in", "above", "below"):
        return _terminology(modifier, text, name, base_url)
    if kind == "token":
        return _token(param, modifier, text, name)
    if kind in ("string", "uri"):
        return unescape(text)
    if kind == "date":
        return _date(text, name)
    if kind == "number":
        return _number(text, name)
    if kind == "quantity":
        return _quantity(text, name)
    if kind == "reference":
        return _reference(param, modifier, text, name, base_url)
    if kind == "composite":
        parts = split_escaped(text, "$")
        if len(parts) != len(param.components):
            raise invalid_parameter(
                name, f"'{text}' needs {len(param.components)} parts separated by '$' for composite '{param.code}'."
            )
        return tuple(
            parse_value(SearchParam(param.code, c.type, c.expression, c.url), None, part, name, base_url=base_url)
            for c, part in zip(param.components, parts, strict=True)
        )
    if kind == "special" and param.code == "near":
        return _near(text, name)
    raise invalid_parameter(name, f"Search parameter '{param.code}' of type {kind} is not supported.")


def _token(param: SearchParam, modifier: str | None, text: str, name: str) -> Token | OfType | str:
    if modifier == "text":
        return unescape(text)
    parts = split_escaped(text, "|")
    if modifier == "of-type":
        if len(parts) != 3 or not all(parts):
            raise invalid_parameter(name, f"'{text}' is not [type system]|[type code]|[identifier value].")
        return OfType(*(unescape(p) for p in parts))
    if param.code == "_id":
        return Token(None, unescape(text))
    if len(parts) == 1:
        return Token(None, unescape(parts[0]))
    system, code = unescape(parts[0]), unescape("|".join(parts[1:]))
    if system == "" and code == "":
        raise invalid_parameter(name, f"'{text}' names neither a system nor a code.")
    return Token(system, code or None)


def _terminology(modifier: str, text: str, name: str, base_url: str | None) -> ValueSetRef | Subsumption:
    """``:in`` / ``:not-in`` take a ValueSet URL or ``ValueSet/[id]``; ``:above`` / ``:below`` take ``system|code``."""
    if modifier in ("above", "below"):
        parts = split_escaped(text, "|")
        system, code = (unescape(p) for p in parts) if len(parts) == 2 else ("", "")
        if not system or not code:
            raise invalid_parameter(
                name, f"'{text}' is not system|code: :{modifier} follows the hierarchy of a code system."
            )
        return Subsumption(name, system, code, below=modifier == "below")
    value = unescape(text)
    if base_url and value.startswith(base_url.rstrip("/") + "/ValueSet/"):
        value = value[len(base_url.rstrip("/")) + 1 :]
    parts = value.split("/")
    if len(parts) == 2 and parts[0] == "ValueSet" and parts[1]:
        return ValueSetRef(name, id=parts[1])
    if "://" in value or value.startswith("urn:"):
        return ValueSetRef(name, canonical=value)
    raise invalid_parameter(name, f"'{text}' is not a ValueSet URL or ValueSet/[id] (the value of :{modifier}).")


def _date(text: str, name: str) -> Bounds:
    prefix, rest = split_prefix(text)
    span = search_date(unescape(rest))
    if span is None:
        raise invalid_parameter(name, f"'{text}' is not a FHIR date, dateTime or instant (with an optional prefix).")
    return Bounds(prefix, span[0], span[1])


def _number(text: str, name: str) -> Bounds:
    prefix, rest = split_prefix(text)
    number = parse_decimal(rest)
    if number is None:
        raise invalid_parameter(name, f"'{text}' is not a number (with an optional prefix such as ge or lt).")
    return _bounds(prefix, number)


def _bounds(prefix: str, number: Decimal, system: str | None = None, code: str | None = None) -> Bounds:
    low, high = number_range(number)
    return Bounds(prefix, low, high, float(number), system, code)


def _quantity(text: str, name: str) -> Bounds:
    parts = split_escaped(text, "|")
    if len(parts) not in (1, 3):
        raise invalid_parameter(name, f"'{text}' is not [prefix][number]|[system]|[code].")
    prefix, rest = split_prefix(parts[0])
    number = parse_decimal(rest)
    if number is None:
        raise invalid_parameter(name, f"'{parts[0]}' is not a number (with an optional prefix).")
    system = unescape(parts[1]) or None if len(parts) == 3 else None
    code = unescape(parts[2]) or None if len(parts) == 3 else None
    return _bounds(prefix, number, system, code)


def _reference(param: SearchParam, modifier: str | None, text: str, name: str, base_url: str | None) -> Any:
    if modifier == "identifier":
        return _token(param, None, text, name)
    value = unescape(text)
    if base_url and value.startswith(base_url.rstrip("/") + "/"):
        value = value[len(base_url.rstrip("/")) + 1 :]
    if "://" in value or value.startswith("urn:"):
        return Ref(url=value)
    parts = value.split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) == 1:
        return Ref(type=modifier, id=parts[0])
    if len(parts) == 2 and parts[0] in definitions.resource_types() and parts[1]:
        if modifier and modifier != parts[0]:
            raise invalid_parameter(name, f"'{text}' is not a {modifier} (the modifier of '{name}').")
        return Ref(type=parts[0], id=parts[1])
    raise invalid_parameter(name, f"'{text}' is not [id], [type]/[id] or an absolute URL.")


def _near(text: str, name: str) -> Near:
    parts = [unescape(p) for p in split_escaped(text, "|")]
    try:
        latitude, longitude = float(parts[0]), float(parts[1])
        km = float(parts[2]) if len(parts) > 2 and parts[2] else DEFAULT_NEAR_KM
    except (ValueError, IndexError):
        raise invalid_parameter(name, f"'{text}' is not [latitude]|[longitude]|[distance]|[units].") from None
    unit = parts[3] if len(parts) > 3 and parts[3] else "km"
    if unit not in _KM_PER_UNIT or not (-90 <= latitude <= 90 and -180 <= longitude <= 180) or km < 0:
        raise invalid_parameter(name, f"'{text}': units are km, m, mi; coordinates are WGS84 degrees.")
    return Near(latitude, longitude, km * _KM_PER_UNIT[unit])


# -- result controls -----------------------------------------------------------------------------


def _sort_key(registry: Registry, types: tuple[str, ...], name: str, key: str) -> SortKey:
    descending = key.startswith("-")
    code = key.lstrip("-")
    if "." in code or ":" in code:
        raise invalid_parameter(name, f"Sorting by '{code}' is not supported (no chains or modifiers in _sort).")
    param = _param(registry, types, name, code)
    if param.type in ("composite", "special"):
        raise invalid_parameter(name, f"Cannot sort by '{code}', a {param.type} parameter.")
    return SortKey(param, descending)


def _include(registry: Registry, name: str, raw: str, *, iterate: bool, reverse: bool) -> Include:
    if raw == "*":
        return Include("*", "*", None, iterate, reverse)
    parts = raw.split(":")
    if len(parts) not in (2, 3) or parts[0] not in definitions.resource_types():
        raise invalid_parameter(name, f"{name}={raw} is not [source type]:[search parameter][:target type].")
    source, code = parts[0], parts[1]
    target = parts[2] if len(parts) == 3 else None
    if code != "*":
        param = registry.get(source, code)
        if param is None or param.type != "reference":
            raise invalid_parameter(name, f"{name}={raw}: '{code}' is not a reference parameter of {source}.")
    if target is not None and target not in definitions.resource_types():
        raise invalid_parameter(name, f"{name}={raw}: '{target}' is not a resource type.")
    return Include(source, code, target, iterate, reverse)


# -- paging cursor ------------------------------------------------------------------------------


def sort_signature(sort: list[SortKey]) -> str:
    return ",".join(("-" if k.descending else "") + k.param.code for k in sort)


def encode_cursor(direction: str, signature: str, keys: tuple[Any, ...], pk: int) -> str:
    """An opaque ``_cursor``: direction (next/previous), the sort it belongs to, the row's sort keys and res_pk."""
    payload = json.dumps([direction, signature, list(keys), pk], separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode_cursor(token: str, signature: str, size: int) -> tuple[str, list[Any], int]:
    try:
        direction, sort, values, pk = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        valid = direction in ("n", "p") and isinstance(values, list) and len(values) == size and isinstance(pk, int)
    except (ValueError, TypeError):
        valid, sort = False, None
    if not valid:
        message = "The paging cursor is not one this server issued; start again from the first page."
        raise invalid_parameter("_cursor", message)
    if sort != signature:
        raise invalid_parameter("_cursor", "The paging cursor belongs to another _sort; start again from page one.")
    return direction, values, pk
