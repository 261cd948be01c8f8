"""Validation on write: R4B structure (fhir.resources) plus cardinality and required bindings.

fhir.resources checks types and structure but accepts codes outside required value sets
(R4B §4.1 Terminology bindings: "required"); the generated definition table closes that gap.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import orjson
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from fhir_server import definitions
from fhir_server.errors import FhirError, Issue, invalid
from fhir_server.structure import conforms


def parse_json(body: bytes) -> Any:
    """Decode a request body; malformed JSON is a 400 with the position of the fault."""
    if not body.strip():
        raise invalid("The request body is empty; send a FHIR resource as JSON.")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise FhirError("structure", f"The body is not valid JSON: {exc}") from None


def check_resource_type(resource: Any, expected: str | None = None) -> str:
    if not isinstance(resource, dict):
        raise FhirError("structure", "The body must be a JSON object holding one FHIR resource.")
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str) or not resource_type:
        raise invalid("The resource has no resourceType.", expression=("resourceType",))
    if resource_type not in definitions.resource_types():
        raise invalid(f"Unknown resource type '{resource_type}' (not an R4B resource).", expression=("resourceType",))
    if expected is not None and resource_type != expected:
        raise invalid(f"The body holds a {resource_type} but the URL names {expected}.", expression=("resourceType",))
    return resource_type


def validate_resource(resource: Any, expected: str | None = None) -> str:
    """Check a resource fully; raise one FhirError listing every problem with its path."""
    resource_type = check_resource_type(resource, expected)
    issues = structural_issues(resource_type, resource)
    seen = {issue.expression for issue in issues}
    for issue in definition_issues(resource_type, resource):
        if issue.expression not in seen:
            issues.append(issue)
    if issues:
        count = len(issues)
        raise FhirError(
            "invalid",
            f"The {resource_type} is not valid R4B: {count} problem{'s' if count > 1 else ''} found.",
            extra=issues,
        )
    return resource_type


def _fhirpath(resource_type: str, loc: tuple[Any, ...]) -> str:
    path = resource_type
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def structural_issues(resource_type: str, resource: dict[str, Any]) -> list[Issue]:
    """The faults the fhir.resources model finds; skipped when :func:`conforms` proves there are none."""
    if conforms(resource_type, resource):
        return []
    model = get_fhir_model_class(resource_type)
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        issues = []
        for error in exc.errors():
            loc = tuple(p for p in error["loc"] if p != "__root__")
            kind = {"missing": "required", "extra_forbidden": "structure"}.get(error["type"], "value")
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = "Unknown element (not defined for this type in R4B)"
            issues.append(Issue(kind, f"{message}", expression=(_fhirpath(resource_type, loc),)))
        return issues
    except (ValueError, TypeError) as exc:
        return [Issue("structure", str(exc), expression=(resource_type,))]
    return []


def definition_issues(resource_type: str, resource: dict[str, Any]) -> list[Issue]:
    issues: list[Issue] = []
    _walk(resource_type, resource, resource_type, issues)
    return issues


@cache
def _required(type_name: str) -> tuple[str, ...]:
    """The children of a type with a minimum cardinality above zero."""
    return tuple(name for name, element in definitions.elements(type_name).items() if element.min > 0)


@cache
def _checked(type_name: str) -> dict[str, definitions.ElementDef]:
    """The children of a type that can hold a fault :func:`_walk` reports: a required binding, or a type with
    children of its own (a complex type, a backbone element, a contained resource)."""
    return {
        name: element
        for name, element in definitions.elements(type_name).items()
        if element.value_set is not None
        or element.type == "Resource"
        or definitions.elements(element.type)
        or _required(element.type)
    }


def _walk(type_name: str, node: dict[str, Any], path: str, issues: list[Issue]) -> None:
    for name in _required(type_name):
        if name not in node and f"_{name}" not in node:
            issues.append(Issue("required", f"Missing required element '{name}'", expression=(f"{path}.{name}",)))
    children = _checked(type_name)
    for key, value in node.items():
        element = children.get(key)
        if element is None:
            continue
        items = value if isinstance(value, list) else [value]
        for index, item in enumerate(items):
            item_path = f"{path}.{key}[{index}]" if isinstance(value, list) else f"{path}.{key}"
            if element.value_set is not None:
                _check_binding(element, item, item_path, issues)
            if not isinstance(item, dict):
                continue
            if element.type == "Resource":
                contained_type = item.get("resourceType")
                if contained_type in definitions.resource_types():
                    _walk(contained_type, item, item_path, issues)
            else:
                _walk(element.type, item, item_path, issues)


def _check_binding(element: definitions.ElementDef, value: Any, path: str, issues: list[Issue]) -> None:
    expansion = definitions.value_set_codes(element.value_set)
    if expansion is None:
        return
    if element.type in ("code", "string", "uri"):
        if isinstance(value, str) and not any(value in codes for codes in expansion.values()):
            allowed = sorted(set().union(*expansion.values()))
            shown = ", ".join(allowed[:12]) + (", …" if len(allowed) > 12 else "")
            issues.append(
                Issue(
                    "code-invalid",
                    f"'{value}' is not in the required value set {element.value_set} (allowed: {shown})",
                    expression=(path,),
                )
            )
        return
    codings = [value] if element.type == "Coding" else (value.get("coding") or [] if isinstance(value, dict) else [])
    if not codings:
        return
    for coding in codings:
        if not isinstance(coding, dict):
            return
        system, code = coding.get("system"), coding.get("code")
        if system in expansion and code in expansion[system]:
            return
        if system is None and any(code in codes for codes in expansion.values()):
            return
    issues.append(
        Issue(
            "code-invalid",
            f"No coding is in the required value set {element.value_set}",
            expression=(path,),
        )
    )
