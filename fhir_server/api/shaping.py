"""``_summary`` and ``_elements`` (R4B §3.1.1.5.8–9): reduced views of a resource, tagged SUBSETTED."""

from __future__ import annotations

from typing import Any

from fhir_server import definitions
from fhir_server.errors import FhirError

_ALWAYS = ("resourceType", "id", "meta")
SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}


def _tag(resource: dict[str, Any]) -> dict[str, Any]:
    meta = dict(resource.get("meta") or {})
    meta["tag"] = [*meta.get("tag", []), SUBSETTED]
    resource["meta"] = meta
    return resource


def _summary_tree(type_name: str, node: Any) -> Any:
    if isinstance(node, list):
        return [_summary_tree(type_name, item) for item in node]
    if not isinstance(node, dict):
        return node
    children = definitions.elements(type_name)
    out = {}
    for key, value in node.items():
        element = children.get(key.lstrip("_"))
        if key == "resourceType" or (element is not None and element.summary):
            out[key] = _summary_tree(element.type, value) if element is not None else value
    return out


def summarise(resource: dict[str, Any], mode: str | None) -> dict[str, Any]:
    if mode in (None, "false"):
        return resource
    if mode == "true":
        return _tag(_summary_tree(resource["resourceType"], resource))
    if mode == "text":
        kept = {k: v for k, v in resource.items() if k in (*_ALWAYS, "text")}
        required = definitions.elements(resource["resourceType"])
        kept.update({k: v for k, v in resource.items() if k in required and required[k].min > 0})
        return _tag(kept)
    if mode == "data":
        return _tag({k: v for k, v in resource.items() if k != "text"})
    raise FhirError("invalid", f"_summary={mode} is not one of true, text, data, count, false.")


def select_elements(resource: dict[str, Any], elements: str | None) -> dict[str, Any]:
    if not elements:
        return resource
    wanted = {name.strip().split(".")[-1] for name in elements.split(",") if name.strip()}
    required = definitions.elements(resource["resourceType"])
    kept = {
        k: v
        for k, v in resource.items()
        if k in _ALWAYS or k.lstrip("_") in wanted or (k in required and required[k].min > 0)
    }
    return _tag(kept)
