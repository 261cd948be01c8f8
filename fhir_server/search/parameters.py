"""The search parameters in force: official R4B definitions, our local ones, and SearchParameter resources posted to us.

Local and posted parameters are SearchParameter resources (R4B §3.1.1.4). A parameter whose value cannot be a
FHIRPath expression names its index function in the extension :data:`INDEX_FUNCTION_URL` (``pinyin``).
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from fhir_server import definitions

_UNION = re.compile(r"\s+\|\s+")
LOCAL_BASE = "https://hie.wuzhou.gov.cn/fhir/"
INDEX_FUNCTION_URL = LOCAL_BASE + "StructureDefinition/search-index-function"
"""Extension on a SearchParameter naming a built-in index function that replaces FHIRPath evaluation."""
INDEX_FUNCTIONS = frozenset({"pinyin"})
TYPES = frozenset({"number", "date", "string", "token", "reference", "composite", "quantity", "uri", "special"})
_IGNORED_OFFICIAL = frozenset({"http://hl7.org/fhir/SearchParameter/example"})  # an example, not a definition


@dataclass(frozen=True)
class Component:
    """One part of a composite parameter: its type and the expression relative to the composite's focus."""

    type: str
    expression: str
    url: str


@dataclass(frozen=True)
class SearchParam:
    """One search parameter as it applies to one resource type (R4B §3.1.1.4 SearchParameter)."""

    code: str
    type: str
    expression: str
    url: str
    base: str = "Resource"
    targets: tuple[str, ...] = ()
    components: tuple[Component, ...] = field(default=())
    index_function: str | None = None
    """A built-in index function (see :data:`INDEX_FUNCTIONS`) used instead of the FHIRPath values."""


def expression_for(full_expression: str, resource_type: str) -> str | None:
    """Keep the union members of a multi-base expression that apply to ``resource_type``."""
    parts = []
    for part in _UNION.split(full_expression.strip()):
        head = part.lstrip("(").split(".", 1)[0].split(" ", 1)[0]
        if head in (resource_type, "Resource", "DomainResource") or head not in definitions.resource_types():
            parts.append(part)
    return " | ".join(parts) if parts else None


def _index_function(spec: dict[str, Any]) -> str | None:
    for extension in spec.get("extension") or []:
        if isinstance(extension, dict) and extension.get("url") == INDEX_FUNCTION_URL:
            return extension.get("valueCode")
    return None


def local_parameters() -> list[dict[str, Any]]:
    """The SearchParameter resources this exchange ships (``definitions/local-search-parameters.json``)."""
    text = resources.files(definitions.__name__).joinpath("local-search-parameters.json").read_text("utf-8")
    return json.loads(text)


class Registry:
    """Search parameters by resource type; posted SearchParameters are added and removed at run time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._specs: dict[str, dict[str, Any]] = {}
        self._fixed: dict[str, dict[str, SearchParam]] = {}
        self._custom: dict[str, dict[str, SearchParam]] = {}
        self._merged: dict[str, dict[str, SearchParam]] = {}
        self.custom_stamp: object = None
        """What the custom layer was loaded from (see ``search.custom``)."""
        fixed = [s for s in definitions.search_parameters() if s.get("url") not in _IGNORED_OFFICIAL]
        fixed += local_parameters()
        for spec in fixed:  # composites name their components by url: know every url first
            self._specs.setdefault(spec["url"], spec)
        for spec in fixed:
            self._add(self._fixed, spec)

    # -- building -------------------------------------------------------------------------------

    def _add(self, layer: dict[str, dict[str, SearchParam]], spec: dict[str, Any]) -> list[SearchParam]:
        if spec.get("url"):
            self._specs.setdefault(spec["url"], spec)
        added = []
        for base in spec.get("base", []):
            expression = expression_for(spec.get("expression") or "", base)
            if expression is None:
                continue
            param = self._param(spec, base, expression)
            if param.code in self._fixed.get(base, {}):
                continue  # official and local definitions cannot be replaced
            layer.setdefault(base, {})[param.code] = param
            added.append(param)
        return added

    def _param(self, spec: dict[str, Any], base: str, expression: str) -> SearchParam:
        components = []
        for component in spec.get("component", []):
            definition = self._specs.get(component.get("definition", ""))
            kind = definition["type"] if definition else "token"
            components.append(Component(kind, component.get("expression", ""), component.get("definition", "")))
        return SearchParam(
            code=spec["code"],
            type=spec["type"],
            expression=expression,
            url=spec.get("url", ""),
            base=base,
            targets=tuple(spec.get("target", [])),
            components=tuple(components),
            index_function=_index_function(spec),
        )

    def check(self, spec: dict[str, Any]) -> str | None:
        """Why a SearchParameter cannot be activated here, or None when it can."""
        if spec.get("type") not in TYPES or not spec.get("code") or not spec.get("base"):
            return "it needs a code, a base and a known type"
        function = _index_function(spec)
        if function is not None and function not in INDEX_FUNCTIONS:
            return f"index function '{function}' is not one of {sorted(INDEX_FUNCTIONS)}"
        if not spec.get("expression") and function is None:
            return "it has no expression"
        if spec["code"].startswith("_"):
            return "codes starting with '_' are reserved for the common parameters"
        for base in spec["base"]:
            if spec["code"] in self._fixed.get(base, {}):
                return f"{base} already has an official or local parameter '{spec['code']}'"
        return None

    def replace_custom(self, specs: list[dict[str, Any]], stamp: object = None) -> list[SearchParam]:
        """Make exactly these SearchParameter resources the custom layer (R4B §3.1.1.4, status active)."""
        layer: dict[str, dict[str, SearchParam]] = {}
        added = []
        for spec in specs:
            if spec.get("status") == "active" and self.check(spec) is None:
                added.extend(self._add(layer, spec))
        with self._lock:
            self._merged = {}
            self._custom = layer
            self.custom_stamp = stamp
        return added

    # -- lookup ---------------------------------------------------------------------------------

    def for_type(self, resource_type: str) -> dict[str, SearchParam]:
        cache, custom = self._merged, self._custom  # read once: a concurrent reload swaps both
        merged = cache.get(resource_type)
        if merged is None:
            merged = {}
            for layer in (self._fixed, custom):
                merged |= layer.get("Resource", {}) | layer.get("DomainResource", {}) | layer.get(resource_type, {})
            cache[resource_type] = merged
        return merged

    def get(self, resource_type: str, code: str) -> SearchParam | None:
        return self.for_type(resource_type).get(code)

    def has_custom(self, resource_type: str) -> bool:
        """Whether SearchParameters posted at run time apply to the type (the others never change)."""
        custom = self._custom
        return any(custom.get(base) for base in ("Resource", "DomainResource", resource_type))

    def by_url(self, url: str) -> dict | None:
        return self._specs.get(url)

    def add(self, spec: dict[str, Any]) -> list[SearchParam]:
        """Activate one SearchParameter in addition to the current custom layer."""
        with self._lock:
            layer = {base: dict(params) for base, params in self._custom.items()}
            added = self._add(layer, spec)
            self._merged = {}
            self._custom = layer
        return added


@cache
def default_registry() -> Registry:
    return Registry()
