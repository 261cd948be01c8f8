"""The CapabilityStatement, generated from what the server really supports (R4B §3.1.0.13)."""

from __future__ import annotations

from typing import Any

from fhir_server import definitions
from fhir_server.operations import bulk_export, system_operations, type_operations
from fhir_server.search.parameters import Registry
from fhir_server.search.query import SUPPORTED_TYPES

_INTERACTIONS = ["read", "vread", "update", "patch", "delete", "history-instance", "history-type", "create"]


def capability_statement(registry: Registry, base: str, *, software_version: str, search: bool) -> dict[str, Any]:
    resources = []
    for res_type in sorted(definitions.resource_types()):
        entry: dict[str, Any] = {
            "type": res_type,
            "profile": f"http://hl7.org/fhir/StructureDefinition/{res_type}",
            "interaction": [{"code": code} for code in [*_INTERACTIONS, *(["search-type"] if search else [])]],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": True,
            "conditionalRead": "full-support",
            "conditionalUpdate": True,
            "conditionalDelete": "multiple",
            "searchParam": [
                {"name": p.code, "definition": p.url, "type": p.type}
                for p in sorted(registry.for_type(res_type).values(), key=lambda p: p.code)
                if p.type in SUPPORTED_TYPES
            ],
            "operation": [{"name": o.code, "definition": o.definition()["url"]} for o in type_operations(res_type)],
        }
        resources.append(entry)
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-28",
        "publisher": "Wuzhou Health Information Exchange",
        "kind": "instance",
        "instantiates": [bulk_export.CAPABILITY],
        "software": {"name": "Wuzhou HIE FHIR server", "version": software_version},
        "implementation": {"description": "Wuzhou regional health archive", "url": base},
        "fhirVersion": definitions.FHIR_VERSION,
        "format": ["application/fhir+json", "json"],
        "patchFormat": ["application/json-patch+json", "application/fhir+json"],
        "rest": [
            {
                "mode": "server",
                "resource": resources,
                "interaction": [{"code": c} for c in ("transaction", "batch", "search-system", "history-system")],
                "operation": [{"name": o.code, "definition": o.definition()["url"]} for o in system_operations()],
            }
        ],
    }
