"""``$export`` at system, Patient and Group level (Bulk Data Access IG v2 §$export): the declarations.

The kick-off, status polling and file download follow the asynchronous request pattern and are served by
their own routes (``fhir_server.api.bulk``); these declarations list the three operations in the
CapabilityStatement and serve their OperationDefinitions. Each is the IG's definition (``base``) narrowed to
the parameters this server takes; anything else is refused by the kick-off with a 400 naming it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from fhir_server.errors import FhirError
from fhir_server.operations.base import Invocation, Operation

BULK_DATA_BASE = "http://hl7.org/fhir/uv/bulkdata/"
CAPABILITY = BULK_DATA_BASE + "CapabilityStatement/bulk-data"
"""The IG's CapabilityStatement this server instantiates."""

_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "_outputFormat",
        "use": "in",
        "min": 0,
        "max": "1",
        "type": "string",
        "documentation": "application/fhir+ndjson (also application/ndjson, ndjson), the default.",
    },
    {
        "name": "_since",
        "use": "in",
        "min": 0,
        "max": "1",
        "type": "instant",
        "documentation": (
            "Only resources changed after this instant, in their current version; resources deleted since "
            "are listed in the manifest's deleted array."
        ),
    },
    {
        "name": "_type",
        "use": "in",
        "min": 0,
        "max": "*",
        "type": "string",
        "documentation": "Comma-separated resource types to export (all in scope when absent).",
    },
    {
        "name": "_typeFilter",
        "use": "in",
        "min": 0,
        "max": "*",
        "type": "string",
        "documentation": "Type?search queries; several for one type are ORed, types without one are exported whole.",
    },
]


def _declaration(definition_id: str, name: str, title: str, level: str, description: str) -> dict[str, Any]:
    return {
        "id": definition_id,
        "name": name,
        "title": title,
        "code": "export",
        "resource": ["Group"] if level == "group" else ["Patient"],
        "system": level == "system",
        "type": level == "patient",
        "instance": level == "group",
        "affectsState": False,
        "base": f"{BULK_DATA_BASE}OperationDefinition/{definition_id}",
        "description": description
        + " Asynchronous only (Prefer: respond-async): 202 with Content-Location of a status URL.",
        "parameter": _PARAMETERS,
    }


def served_by_route(call: Invocation, conn: Connection) -> dict[str, Any]:
    """An asynchronous kick-off answers 202 from its own route; it cannot run as a synchronous step."""
    raise FhirError(
        "invalid",
        f"{call.path} starts an asynchronous Bulk Data export: send it on its own with 'Prefer: respond-async'.",
    )


SYSTEM = Operation(
    _declaration(
        "export",
        "BulkDataExport",
        "Bulk Data export of every resource",
        "system",
        "NDJSON files of every current resource, one set per type.",
    ),
    served_by_route,
)
PATIENT = Operation(
    _declaration(
        "patient-export",
        "PatientLevelExport",
        "Bulk Data export of every patient's compartment",
        "patient",
        "NDJSON files of the Patients and the resources of their Patient compartment (R4B CompartmentDefinition).",
    ),
    served_by_route,
)
GROUP = Operation(
    _declaration(
        "group-export",
        "GroupLevelExport",
        "Bulk Data export of a Group's patients",
        "group",
        "NDJSON files of the Group's active member Patients and their Patient compartments.",
    ),
    served_by_route,
)
