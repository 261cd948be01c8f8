"""Checking an operation's inputs against its declaration (R4B operations.html, "Executing operations").

Inputs come as URL query parameters (primitive types only) or as a ``Parameters`` body of a POST. An
undeclared name, a missing required input, a value of the wrong type and too many values are each a 400
OperationOutcome naming the parameter.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from fhir_server import definitions
from fhir_server.errors import FhirError
from fhir_server.operations.base import Operation, Parameter

PASSIVE = frozenset({"_format", "_pretty"})
"""Handled by content negotiation, accepted by every operation."""

_YEAR = r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)"
_TIME = r"([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]{1,9})?"
_ZONE = r"(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))"
_MONTH_DAY = r"-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1])"
# Regular expressions of the R4B primitive types (datatypes.html#primitive).
PRIMITIVES: dict[str, re.Pattern[str]] = {
    name: re.compile(pattern)
    for name, pattern in {
        "boolean": r"true|false",
        "integer": r"[0]|[-+]?[1-9][0-9]*",
        "positiveInt": r"\+?[1-9][0-9]*",
        "unsignedInt": r"[0]|([1-9][0-9]*)",
        "decimal": r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?",
        "date": _YEAR + r"(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1]))?)?",
        "dateTime": _YEAR + r"(" + _MONTH_DAY + r"(T" + _TIME + r")?)?)?" + _ZONE + r"?",
        "instant": _YEAR + r"-(0[1-9]|1[0-2])-(0[1-9]|[1-2][0-9]|3[0-1])T" + _TIME + _ZONE,
        "time": _TIME,
        "code": r"[^\s]+(\s[^\s]+)*",
        "id": r"[A-Za-z0-9\-\.]{1,64}",
        "string": r"[\s\S]+",
        "markdown": r"[\s\S]+",
        "uri": r"\S*",
        "url": r"\S*",
        "canonical": r"\S*",
        "oid": r"urn:oid:[0-2](\.(0|[1-9][0-9]*))+",
        "uuid": r"urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        "base64Binary": r"(\s*([0-9a-zA-Z\+/=]){4}\s*)+",
    }.items()
}
_INT_BOUNDS = {"integer": (-(2**31), 2**31 - 1), "positiveInt": (1, 2**31 - 1), "unsignedInt": (0, 2**31 - 1)}
_PARAMETER_KEYS = frozenset({"id", "extension", "modifierExtension", "name"})


@dataclass
class Inputs:
    """Checked inputs: typed values by parameter name, plus search parameters and a paging cursor."""

    values: dict[str, list[Any]] = field(default_factory=dict)
    search: list[tuple[str, str]] = field(default_factory=list)
    cursor: str | None = None


def bad_input(name: str, message: str) -> FhirError:
    return FhirError("invalid", message, expression=(name,))


def read_inputs(operation: Operation, query: list[tuple[str, str]], body: dict[str, Any] | None) -> Inputs:
    """The typed inputs of a call, from the URL query and an optional POST body, checked against the declaration."""
    inputs = Inputs()
    declared = operation.inputs
    for name, raw in query:
        if name in PASSIVE:
            continue
        if name == "_cursor" and operation.paged:
            inputs.cursor = raw
            continue
        parameter = declared.get(name)
        if parameter is None:
            if operation.accepts_search:
                inputs.search.append((name, raw))
                continue
            raise _unknown(operation, name)
        inputs.values.setdefault(name, []).append(_from_text(operation, parameter, raw))
    if body is not None:
        _read_body(operation, body, inputs)
    for parameter in declared.values():
        count = len(inputs.values.get(parameter.name, []))
        if count < parameter.min:
            raise bad_input(parameter.name, f"${operation.code} needs the parameter '{parameter.name}'.")
        if parameter.limit is not None and count > parameter.limit:
            raise bad_input(
                parameter.name,
                f"'{parameter.name}' of ${operation.code} may be given at most {parameter.limit} time(s), not {count}.",
            )
    return inputs


def _unknown(operation: Operation, name: str) -> FhirError:
    known = ", ".join(sorted(operation.inputs)) or "none"
    return bad_input(name, f"Unknown parameter '{name}' for ${operation.code} (its parameters: {known}).")


def is_resource_type(type_name: str) -> bool:
    return type_name == "Resource" or type_name in definitions.resource_types()


def _from_text(operation: Operation, parameter: Parameter, raw: str) -> Any:
    """A URL query value: only primitive types can be sent this way."""
    if parameter.type not in PRIMITIVES:
        raise bad_input(
            parameter.name,
            f"'{parameter.name}' of ${operation.code} is a {parameter.type}; send it in a POST Parameters body.",
        )
    if parameter.type in ("dateTime", "instant") and len(raw) > 19 and raw[-6] == " ":
        raw = raw[:-6] + "+" + raw[-5:]  # an unencoded '+' of an offset, decoded as a space
    return _primitive(operation, parameter, raw)


def _primitive(operation: Operation, parameter: Parameter, value: Any, *, from_json: bool = False) -> Any:
    """A primitive value: text from a URL, or a JSON value of the type's JSON representation from a body."""
    kind = parameter.type
    if from_json and kind == "boolean":
        ok, value = type(value) is bool, text_value(value)
    elif from_json and kind in _INT_BOUNDS:
        ok, value = type(value) is int, str(value)
    elif from_json and kind == "decimal":
        ok, value = type(value) in (int, float), str(value)
    else:
        ok = isinstance(value, str) and PRIMITIVES[kind].fullmatch(value) is not None
    if ok and kind in _INT_BOUNDS:
        low, high = _INT_BOUNDS[kind]
        ok = low <= int(value) <= high
    if not ok:
        raise bad_input(
            parameter.name, f"'{parameter.name}' of ${operation.code} must be a {kind}, not {str(value)[:80]!r}."
        )
    if kind == "boolean":
        return value == "true"
    if kind in _INT_BOUNDS:
        return int(value)
    if kind == "decimal":
        return Decimal(value)
    return value


def _read_body(operation: Operation, body: dict[str, Any], inputs: Inputs) -> None:
    if body.get("resourceType") != "Parameters":
        resource_inputs = [p for p in operation.inputs.values() if is_resource_type(p.type)]
        if len(resource_inputs) != 1:
            raise FhirError("invalid", f"The body of POST ${operation.code} must be a Parameters resource.")
        parameter = resource_inputs[0]
        inputs.values.setdefault(parameter.name, []).append(_resource(operation, parameter, body))
        return
    unknown_keys = set(body) - {"resourceType", "id", "meta", "implicitRules", "language", "parameter"}
    if unknown_keys:
        raise FhirError("structure", f"Unknown element(s) of Parameters: {', '.join(sorted(unknown_keys))}.")
    entries = body.get("parameter", [])
    if not isinstance(entries, list):
        raise FhirError("structure", "Parameters.parameter must be an array.", expression=("Parameters.parameter",))
    declared = operation.inputs
    for index, entry in enumerate(entries):
        where = f"Parameters.parameter[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise FhirError("structure", f"{where} must be an object with a name.", expression=(where,))
        name = entry["name"]
        value_keys = [key for key in entry if key not in _PARAMETER_KEYS]
        if len(value_keys) != 1:
            message = f"{where} ('{name}') must hold exactly one of value[x], resource or part."
            raise FhirError("structure", message, expression=(where,))
        key = value_keys[0]
        parameter = declared.get(name)
        if parameter is None:
            if operation.accepts_search and key.startswith("value") and isinstance(entry[key], str | int | float):
                inputs.search.append((name, text_value(entry[key])))
                continue
            raise _unknown(operation, name)
        inputs.values.setdefault(name, []).append(_from_entry(operation, parameter, key, entry[key]))


def _from_entry(operation: Operation, parameter: Parameter, key: str, value: Any) -> Any:
    kind = parameter.type
    if is_resource_type(kind):
        if key != "resource":
            raise bad_input(parameter.name, f"'{parameter.name}' of ${operation.code} is a resource: send 'resource'.")
        return _resource(operation, parameter, value)
    expected = "value" + kind[0].upper() + kind[1:]
    if key != expected:
        raise bad_input(
            parameter.name, f"'{parameter.name}' of ${operation.code} is a {kind}: send it as {expected}, not {key}."
        )
    if kind in PRIMITIVES:
        return _primitive(operation, parameter, value, from_json=True)
    if not isinstance(value, dict):
        raise bad_input(parameter.name, f"{expected} of '{parameter.name}' must be a JSON object.")
    try:
        get_fhir_model_class(kind).model_validate(value)
    except (ValidationError, ValueError, TypeError) as exc:
        problem = str(exc).splitlines()[0][:200]
        message = f"'{parameter.name}' of ${operation.code} is not a valid {kind}: {problem}"
        raise bad_input(parameter.name, message) from None
    return value


def text_value(value: Any) -> str:
    """An input value as it is written in a URL query."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _resource(operation: Operation, parameter: Parameter, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
        raise bad_input(parameter.name, f"'{parameter.name}' of ${operation.code} must be a resource.")
    if parameter.type != "Resource" and value["resourceType"] != parameter.type:
        raise bad_input(
            parameter.name,
            f"'{parameter.name}' of ${operation.code} must be a {parameter.type}, not a {value['resourceType']}.",
        )
    return value


def position_cursor(kind: str, position: int) -> str:
    """The opaque ``_cursor`` of a paged operation's next link: which operation, and where its next page starts."""
    return base64.urlsafe_b64encode(f"{kind}.{position}".encode()).decode().rstrip("=")


def read_position_cursor(kind: str, token: str) -> int:
    """The position in a :func:`position_cursor` of this operation; 400 for any other token."""
    try:
        found, _, value = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode().partition(".")
        if found == kind and value.isdigit():
            return int(value)
    except (ValueError, UnicodeDecodeError):
        pass
    raise bad_input("_cursor", "The paging cursor is not one this server issued; start again from the first page.")
