"""Values of a search parameter in a resource: compiled FHIRPath for the common forms, fhirpathpy otherwise.

The official expressions are mostly plain paths, ``|`` unions, ``.where(resolve() is X)``,
``as X``/``.as(X)``/``.ofType(X)`` and ``.where(field='value')``; these compile to direct walks over
the JSON. Anything else is evaluated by fhirpathpy (FHIRPath N1 §5).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from typing import Any

import fhirpathpy
from fhirpathpy.models import models as fhirpath_models

Extractor = Callable[[dict[str, Any]], list[Any]]

_NAME = r"[A-Za-z][A-Za-z0-9]*"
_PATH = rf"{_NAME}(?:\.{_NAME})+"
_FORMS = [
    (re.compile(rf"^(?P<path>{_PATH})$"), "path"),
    (re.compile(rf"^(?P<path>{_PATH})\.where\(resolve\(\) is (?P<arg>{_NAME})\)$"), "resolve"),
    (re.compile(rf"^\((?P<path>{_PATH}) as (?P<arg>{_NAME})\)$"), "as"),
    (re.compile(rf"^(?P<path>{_PATH}) as (?P<arg>{_NAME})$"), "as"),
    (re.compile(rf"^\(?(?P<path>{_PATH})\.as\((?P<arg>{_NAME})\)\)?$"), "as"),
    (re.compile(rf"^(?P<path>{_PATH})\.ofType\((?P<arg>{_NAME})\)$"), "as"),
    (re.compile(rf"^(?P<path>{_PATH})\.where\((?P<field>{_NAME})='(?P<arg>[^']*)'\)$"), "where"),
]
_UNION = re.compile(r"\s+\|\s+")


def _step(nodes: list[Any], name: str) -> list[Any]:
    out: list[Any] = []
    for node in nodes:
        if not isinstance(node, dict):
            continue
        if name in node:
            value = node[name]
        else:
            # A choice element (value[x]) named without its type: take whichever variant is present.
            value = [v for k, v in node.items() if k.startswith(name) and len(k) > len(name) and k[len(name)].isupper()]
            value = value[0] if len(value) == 1 else value
            if value == []:
                continue
        if isinstance(value, list):
            out.extend(value)
        else:
            out.append(value)
    return out


def _walk(resource: dict[str, Any], steps: tuple[str, ...]) -> list[Any]:
    nodes: list[Any] = [resource]
    for name in steps:
        nodes = _step(nodes, name)
        if not nodes:
            break
    return nodes


def _reference_type(reference: Any) -> str | None:
    if not isinstance(reference, dict) or not isinstance(reference.get("reference"), str):
        return None
    parts = reference["reference"].split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        return parts[-4]
    return parts[-2] if len(parts) >= 2 else None


def _compile_part(part: str) -> Extractor | None:
    for pattern, form in _FORMS:
        match = pattern.match(part)
        if not match:
            continue
        steps = tuple(match["path"].split(".")[1:])
        if form == "path":
            return lambda r, s=steps: _walk(r, s)
        if form == "resolve":
            return lambda r, s=steps, t=match["arg"]: [v for v in _walk(r, s) if _reference_type(v) == t]
        if form == "as":
            typed = (*steps[:-1], steps[-1] + match["arg"][0].upper() + match["arg"][1:])
            return lambda r, s=typed: _walk(r, s)
        if form == "where":
            return lambda r, s=steps, f=match["field"], v=match["arg"]: [
                n for n in _walk(r, s) if isinstance(n, dict) and n.get(f) == v
            ]
    return None


def _fhirpath_extractor(expression: str) -> Extractor:
    # fhirpathpy ships no R4B model; R4's type hierarchy is the same for what search expressions use.
    compiled = fhirpathpy.compile(expression, model=fhirpath_models["r4"])

    def extract(resource: dict[str, Any]) -> list[Any]:
        try:
            return [v for v in compiled(resource) if v is not None]
        except Exception:  # an expression that does not apply to this resource yields nothing
            return []

    return extract


@cache
def compile_expression(expression: str) -> tuple[Extractor, bool]:
    """Compile an expression; the flag says whether every part compiled to a direct walk."""
    parts = _UNION.split(expression.strip())
    compiled = [_compile_part(p) for p in parts]
    if all(c is not None for c in compiled):
        if len(compiled) == 1:
            return compiled[0], True
        return (lambda r: [v for c in compiled for v in c(r)]), True
    return _fhirpath_extractor(expression), False


def extract(resource: dict[str, Any], expression: str) -> list[Any]:
    return compile_expression(expression)[0](resource)


def extract_with_fhirpath(resource: dict[str, Any], expression: str) -> list[Any]:
    """The reference evaluation, used to check the compiled walks."""
    return _fhirpath_extractor(expression)(resource)
