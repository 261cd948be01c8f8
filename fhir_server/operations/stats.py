"""``Observation/$stats`` (R4B observation-operation-stats): statistics of a subject's quantity observations.

Observations are found like a search: ``subject``, ``combo-code`` (so a code matches ``Observation.code`` or a
component's code, e.g. systolic pressure inside blood-pressure panels) and ``date`` within ``period`` or the
last ``duration`` hours; entered-in-error and cancelled ones are left out. The answer holds one ``statistic``
Observation per code and unit, with one component per statistic (codes of the R4B observation-statistics code
system), and the ``source`` observations when ``include`` is true. Not offered: 4-dev, 5-1..5-4, skew, kurtosis
and regression. More than :data:`MAX_OBSERVATIONS` observations is a 413 asking for a shorter window.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection

from fhir_server.errors import FhirError
from fhir_server.operations.base import Invocation, Operation
from fhir_server.operations.inputs import bad_input
from fhir_server.repository import instant
from fhir_server.search.custom import sync_custom_parameters
from fhir_server.search.query import filtered
from fhir_server.search.request import parse_request
from fhir_server.search.values import search_date, to_micros

STATISTICS_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-statistics"
MAX_OBSERVATIONS = 50_000
_ALIASES = {"max": "maximum", "min": "minimum"}

DECLARATION: dict[str, Any] = {
    "id": "Observation-stats",
    "name": "StatisticsData",
    "title": "Observation statistics",
    "code": "stats",
    "resource": ["Observation"],
    "system": False,
    "type": True,
    "instance": False,
    "affectsState": False,
    "base": "http://hl7.org/fhir/OperationDefinition/Observation-stats",
    "description": (
        "Average, maximum, minimum, count, totalcount, median, std-dev, sum, variance, 20-percent, 80-percent, "
        "4-lower and 4-upper of the quantity values of a subject's observations of the given codes."
    ),
    "parameter": [
        {"name": "subject", "use": "in", "min": 1, "max": "1", "type": "uri", "documentation": "e.g. Patient/123."},
        {"name": "code", "use": "in", "min": 0, "max": "*", "type": "string", "documentation": "Codes (of system)."},
        {"name": "system", "use": "in", "min": 0, "max": "1", "type": "uri", "documentation": "System of code."},
        {"name": "coding", "use": "in", "min": 0, "max": "*", "type": "Coding", "documentation": "Codes as Coding."},
        {"name": "duration", "use": "in", "min": 0, "max": "1", "type": "decimal", "documentation": "Last hours."},
        {"name": "period", "use": "in", "min": 0, "max": "1", "type": "Period", "documentation": "Or this period."},
        {
            "name": "statistic",
            "use": "in",
            "min": 1,
            "max": "*",
            "type": "code",
            "documentation": "Codes of the observation-statistics code system (max and min are accepted too).",
        },
        {"name": "include", "use": "in", "min": 0, "max": "1", "type": "boolean", "documentation": "Add sources."},
        {"name": "limit", "use": "in", "min": 0, "max": "1", "type": "positiveInt", "documentation": "Of sources."},
        {"name": "statistic", "use": "out", "min": 0, "max": "*", "type": "Observation"},
        {"name": "source", "use": "out", "min": 0, "max": "*", "type": "Observation"},
    ],
}


def _quantile(values: list[float], n: int, i: int) -> float:
    return statistics.quantiles(values, n=n, method="inclusive")[i] if len(values) > 1 else values[0]


CALCULATIONS = {
    "average": lambda v: statistics.fmean(v),
    "maximum": max,
    "minimum": min,
    "median": statistics.median,
    "std-dev": lambda v: statistics.stdev(v) if len(v) > 1 else 0.0,
    "sum": lambda v: sum(v),
    "variance": lambda v: statistics.variance(v) if len(v) > 1 else 0.0,
    "20-percent": lambda v: _quantile(v, 5, 0),
    "80-percent": lambda v: _quantile(v, 5, 3),
    "4-lower": lambda v: _quantile(v, 4, 0),
    "4-upper": lambda v: _quantile(v, 4, 2),
}
COUNTS = ("count", "totalcount")


def stats(call: Invocation, conn: Connection) -> dict[str, Any]:
    wanted = [_ALIASES.get(code, code) for code in call.all("statistic")]
    for code in wanted:
        if code not in CALCULATIONS and code not in COUNTS:
            raise bad_input("statistic", f"statistic={code} is not offered; use {', '.join([*CALCULATIONS, *COUNTS])}.")
    codes = _codes(call)
    tokens = [f"{_escape(s)}|{_escape(c)}" if s else _escape(c) for s, c in codes]
    params = [("subject", _escape(call.one("subject"))), ("combo-code", ",".join(tokens))]
    params += [("status:not", "entered-in-error"), ("status:not", "cancelled")]
    low, high = _window(call)
    if low is not None:
        params.append(("date", f"ge{low}"))
    if high is not None:
        params.append(("date", f"le{high}"))
    registry = call.service.registry
    sync_custom_parameters(conn, registry)
    request = parse_request(registry, ("Observation",), params, base_url=call.base)
    matching = filtered(conn, request, restrict=call.access.restriction)
    pks = list(conn.execute(matching.order_by(None).limit(MAX_OBSERVATIONS + 1)).scalars())
    if len(pks) > MAX_OBSERVATIONS:
        raise FhirError("too-costly", f"$stats finds more than {MAX_OBSERVATIONS} observations; shorten the period.")
    sources = [version.resource() for version in call.service.repository.load_many(conn, sorted(pks))]
    groups = _values(sources, codes)
    out = [
        {"name": "statistic", "resource": _statistic(call, key, values, wanted, low, high)}
        for key, values in sorted(groups.items())
    ]
    if call.one("include", False):
        limit = call.one("limit", len(sources))
        out += [{"name": "source", "resource": resource} for resource in sources[:limit]]
    return {"resourceType": "Parameters", **({"parameter": out} if out else {})}


def _codes(call: Invocation) -> list[tuple[str | None, str]]:
    system = call.one("system")
    codes = [(system, code) for code in call.all("code")]
    for coding in call.all("coding"):
        if not coding.get("code"):
            raise bad_input("coding", "Each coding of $stats needs a code.")
        codes.append((coding.get("system"), coding["code"]))
    if not codes:
        raise bad_input("code", "$stats needs the codes to summarise: code (with system) or coding.")
    return codes


def _window(call: Invocation) -> tuple[str | None, str | None]:
    duration, period = call.one("duration"), call.one("period")
    if duration is not None and period is not None:
        raise bad_input("period", "$stats takes duration or period, not both.")
    if duration is not None:
        if duration <= 0:
            raise bad_input("duration", "duration is a positive number of hours.")
        now = datetime.now(UTC)
        start = now - timedelta(hours=float(duration))
        return instant(to_micros(start)), instant(to_micros(now))
    if period is not None:
        for side in ("start", "end"):
            if side in period and search_date(period[side]) is None:
                raise bad_input("period", f"period.{side} is not a date this server can compare.")
        return period.get("start"), period.get("end")
    return None, None


def _escape(value: str) -> str:
    """A search value with its separators escaped (R4B §3.1.1.5.7)."""
    for char in "\\,$|":
        value = value.replace(char, "\\" + char)
    return value


def _values(sources: list[dict[str, Any]], codes: list[tuple[str | None, str]]) -> dict[tuple, list[float | None]]:
    """Values by (system, code, unit system, unit code, unit); a value left out (None) counts in every unit's total."""
    by_unit: dict[tuple, list[float | None]] = defaultdict(list)
    missing: dict[tuple, int] = defaultdict(int)
    for resource in sources:
        for node in [resource, *(resource.get("component") or [])]:
            for coding in (node.get("code") or {}).get("coding") or []:
                system, code = coding.get("system"), coding.get("code")
                if not any(code == c and s in (None, system) for s, c in codes):
                    continue
                quantity = node.get("valueQuantity") or {}
                value = quantity.get("value")
                if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
                    unit = (quantity.get("system") or "", quantity.get("code") or "", quantity.get("unit") or "")
                    by_unit[(system or "", code, *unit)].append(float(value))
                else:
                    missing[(system or "", code)] += 1
    for coded, count in missing.items():
        groups = [key for key in by_unit if key[:2] == coded] or [(*coded, "", "", "")]
        for key in groups:
            by_unit[key].extend([None] * count)
    return by_unit


def _statistic(
    call: Invocation, key: tuple, found: list[float | None], wanted: list[str], low: str | None, high: str | None
) -> dict[str, Any]:
    system, code, unit_system, unit_code, unit = key
    values = [value for value in found if value is not None]
    quantity_unit = {k: v for k, v in (("unit", unit), ("system", unit_system), ("code", unit_code)) if v}
    components = []
    for statistic in wanted:
        component: dict[str, Any] = {"code": {"coding": [{"system": STATISTICS_SYSTEM, "code": statistic}]}}
        if statistic in COUNTS:
            component["valueInteger"] = len(values) if statistic == "count" else len(found)
        elif values:
            component["valueQuantity"] = {"value": round(CALCULATIONS[statistic](values), 6), **quantity_unit}
        else:
            component["dataAbsentReason"] = {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": "not-applicable"}
                ]
            }
        components.append(component)
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{k: v for k, v in (("system", system), ("code", code)) if v}]},
        "subject": {"reference": call.one("subject")},
        "component": components,
    }
    if low or high:
        observation["effectivePeriod"] = {k: v for k, v in (("start", low), ("end", high)) if v}
    return observation


OPERATION = Operation(DECLARATION, stats)
