"""Index rows of a resource: each search parameter's values turned into rows of its type's table."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from fhir_server.search.extract import extract
from fhir_server.search.parameters import Registry, SearchParam
from fhir_server.search.values import date_range, fold

Row = dict[str, Any]
_MAX_TEXT = 2000
_NAME_PARTS = ("family", "given", "prefix", "suffix", "text")
_ADDRESS_PARTS = ("line", "city", "district", "state", "postalCode", "country", "text")
_UNBOUNDED_LOW = -(2**62)
_UNBOUNDED_HIGH = 2**62


def index_rows(registry: Registry, resource_type: str, resource: dict[str, Any]) -> dict[str, list[Row]]:
    """All index rows of a resource, grouped by parameter type (the table they go to)."""
    rows: dict[str, list[Row]] = {}
    for param in registry.for_type(resource_type).values():
        if param.type in ("composite", "special") or param.code in ("_id", "_lastUpdated"):
            continue
        convert = _CONVERTERS.get(param.type)
        if convert is None:
            continue
        seen: set[tuple] = set()
        for value in extract(resource, param.expression):
            for row in convert(value, param):
                key = tuple(sorted(row.items()))
                if key not in seen:
                    seen.add(key)
                    rows.setdefault(param.type, []).append({"param": param.code, **row})
    return rows


def _text(value: Any) -> str | None:
    return value[:_MAX_TEXT] if isinstance(value, str) and value else None


def _token(value: Any, _param: SearchParam) -> list[Row]:
    if isinstance(value, bool):
        return [{"system": None, "code": "true" if value else "false", "text": None}]
    if isinstance(value, str | int | Decimal):
        return [{"system": None, "code": _text(str(value)), "text": None}]
    if not isinstance(value, dict):
        return []
    if "coding" in value or ("text" in value and "code" not in value and "value" not in value):
        rows = []
        for coding in value.get("coding") or []:
            rows.extend(_token(coding, _param))
        if value.get("text"):
            rows.append({"system": None, "code": None, "text": fold(value["text"])[:_MAX_TEXT]})
        return rows
    if "value" in value:  # Identifier or ContactPoint
        type_text = (value.get("type") or {}).get("text") if isinstance(value.get("type"), dict) else None
        rows = [
            {
                "system": _text(value.get("system")),
                "code": _text(str(value["value"])),
                "text": fold(type_text)[:_MAX_TEXT] if type_text else None,
            }
        ]
        for coding in (value.get("type") or {}).get("coding") or [] if isinstance(value.get("type"), dict) else []:
            rows.append(
                {
                    "system": _text(coding.get("system")),
                    "code": _text(f"{coding.get('code')}|{value['value']}"),
                    "text": "of-type",
                }
            )
        return rows
    if "code" in value or "system" in value:
        display = value.get("display")
        return [
            {
                "system": _text(value.get("system")),
                "code": _text(value.get("code")),
                "text": fold(display)[:_MAX_TEXT] if isinstance(display, str) else None,
            }
        ]
    return []


def _string(value: Any, _param: SearchParam) -> list[Row]:
    if isinstance(value, str):
        return [{"norm": fold(value)[:_MAX_TEXT], "exact": value[:_MAX_TEXT]}] if value else []
    if not isinstance(value, dict):
        return []
    parts = _NAME_PARTS if any(k in value for k in ("family", "given")) else _ADDRESS_PARTS
    rows = []
    for key in parts:
        item = value.get(key)
        for text in item if isinstance(item, list) else [item]:
            if isinstance(text, str) and text:
                rows.append({"norm": fold(text)[:_MAX_TEXT], "exact": text[:_MAX_TEXT]})
    family = value.get("family")
    if parts is _NAME_PARTS and isinstance(family, str) and family and _is_cjk(family[0]) and value.get("given"):
        # Chinese names are written family-first without a space: index "张三" as well as "张" and "三".
        whole = value["family"] + "".join(g for g in value["given"] if isinstance(g, str))
        rows.append({"norm": fold(whole)[:_MAX_TEXT], "exact": whole[:_MAX_TEXT]})
    return rows


def _is_cjk(char: str) -> bool:
    return "\u3400" <= char <= "\u9fff" or "\U00020000" <= char <= "\U0002ffff"


def _date(value: Any, _param: SearchParam) -> list[Row]:
    if isinstance(value, str):
        span = date_range(value)
        return [{"low": span[0], "high": span[1]}] if span else []
    if not isinstance(value, dict):
        return []
    if "start" in value or "end" in value:  # Period: an open end is unbounded
        low = (
            date_range(value["start"])[0]
            if isinstance(value.get("start"), str) and date_range(value["start"])
            else _UNBOUNDED_LOW
        )
        high = (
            date_range(value["end"])[1]
            if isinstance(value.get("end"), str) and date_range(value["end"])
            else _UNBOUNDED_HIGH
        )
        return [{"low": low, "high": high}]
    rows = []
    for event in value.get("event") or []:  # Timing
        rows.extend(_date(event, _param))
    bounds = (value.get("repeat") or {}).get("boundsPeriod")
    if bounds:
        rows.extend(_date(bounds, _param))
    return rows


def _number_range(value: Any) -> tuple[float, float] | None:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return None
    number = float(value)
    return number, number


def _number(value: Any, _param: SearchParam) -> list[Row]:
    span = _number_range(value)
    return [{"low": span[0], "high": span[1]}] if span else []


def _quantity(value: Any, _param: SearchParam) -> list[Row]:
    if not isinstance(value, dict):
        return []
    if "low" in value or "high" in value:  # Range
        low = _number_range((value.get("low") or {}).get("value"))
        high = _number_range((value.get("high") or {}).get("value"))
        unit = value.get("low") or value.get("high") or {}
        return [
            {
                "system": _text(unit.get("system")),
                "code": _text(unit.get("code") or unit.get("unit")),
                "low": low[0] if low else float("-inf"),
                "high": high[1] if high else float("inf"),
            }
        ]
    span = _number_range(value.get("value"))
    if span is None:
        return []
    code = value.get("code") or value.get("currency") or value.get("unit")
    return [{"system": _text(value.get("system")), "code": _text(code), "low": span[0], "high": span[1]}]


def _uri(value: Any, _param: SearchParam) -> list[Row]:
    return [{"uri": value[:_MAX_TEXT]}] if isinstance(value, str) and value else []


def _reference(value: Any, _param: SearchParam) -> list[Row]:
    if isinstance(value, str):  # canonical
        return [{"target_type": None, "target_id": None, "url": value[:_MAX_TEXT]}]
    if not isinstance(value, dict):
        return []
    reference = value.get("reference")
    rows = []
    if isinstance(reference, str) and reference and not reference.startswith("#"):
        target_type, target_id = split_reference(reference)
        if target_type is not None and "://" not in reference:
            rows.append({"target_type": target_type, "target_id": target_id, "url": None})
        else:
            rows.append({"target_type": target_type, "target_id": target_id, "url": reference[:_MAX_TEXT]})
    identifier = value.get("identifier")
    if isinstance(identifier, dict) and identifier.get("value"):
        rows.append(
            {
                "target_type": None,
                "target_id": None,
                "url": f"identifier:{identifier.get('system') or ''}|{identifier['value']}"[:_MAX_TEXT],
            }
        )
    return rows


def split_reference(reference: str) -> tuple[str | None, str | None]:
    """``Patient/1``, ``Patient/1/_history/2`` or an absolute URL → (type, id)."""
    parts = reference.split("?")[0].split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) >= 2 and parts[-2][:1].isupper():
        return parts[-2], parts[-1][:64]
    return None, None


_CONVERTERS = {
    "token": _token,
    "string": _string,
    "date": _date,
    "number": _number,
    "quantity": _quantity,
    "uri": _uri,
    "reference": _reference,
}
