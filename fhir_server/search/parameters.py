"""The search parameters in force: the official R4B definitions plus SearchParameter resources posted to us."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache

from fhir_server import definitions

_UNION = re.compile(r"\s+\|\s+")


@dataclass(frozen=True)
class SearchParam:
    """One search parameter as it applies to one resource type (R4B §3.1.1.4 SearchParameter)."""

    code: str
    type: str
    expression: str
    url: str
    targets: tuple[str, ...] = ()
    components: tuple[tuple[str, str], ...] = field(default=())
    """(definition url, expression relative to the base) pairs of a composite parameter."""


def expression_for(full_expression: str, resource_type: str) -> str | None:
    """Keep the union members of a multi-base expression that apply to ``resource_type``."""
    parts = []
    for part in _UNION.split(full_expression.strip()):
        head = part.lstrip("(").split(".", 1)[0].split(" ", 1)[0]
        if head in (resource_type, "Resource", "DomainResource") or head not in definitions.resource_types():
            parts.append(part)
    return " | ".join(parts) if parts else None


class Registry:
    """Search parameters by resource type; custom ones can be added at run time."""

    def __init__(self) -> None:
        self._by_type: dict[str, dict[str, SearchParam]] = {}
        self._by_url: dict[str, dict] = {}
        for spec in definitions.search_parameters():
            self.add(spec)

    def add(self, spec: dict) -> list[SearchParam]:
        """Register a SearchParameter (official table entry or resource); returns what was added."""
        if spec.get("url"):
            self._by_url[spec["url"]] = spec
        added = []
        for base in spec.get("base", []):
            expression = expression_for(spec.get("expression") or "", base)
            if expression is None:
                continue
            components = tuple((c["definition"], c["expression"]) for c in spec.get("component", []))
            param = SearchParam(
                code=spec["code"],
                type=spec["type"],
                expression=expression,
                url=spec.get("url", ""),
                targets=tuple(spec.get("target", [])),
                components=components,
            )
            self._by_type.setdefault(base, {})[param.code] = param
            added.append(param)
        return added

    def for_type(self, resource_type: str) -> dict[str, SearchParam]:
        common = self._by_type.get("Resource", {}) | self._by_type.get("DomainResource", {})
        return common | self._by_type.get(resource_type, {})

    def get(self, resource_type: str, code: str) -> SearchParam | None:
        return self.for_type(resource_type).get(code)

    def by_url(self, url: str) -> dict | None:
        return self._by_url.get(url)


@cache
def default_registry() -> Registry:
    return Registry()
