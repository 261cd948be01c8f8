"""``$expunge``: hard-delete resources with every version and index row (after HAPI FHIR's ``$expunge``).

Refused (403) unless ``HIE_ALLOW_EXPUNGE`` is set, for administrators until authorisation exists. At instance
level it removes one resource whatever its state; at type level the resources of the type that are deleted
(tombstoned), oldest first, at most ``limit`` per call (the answer says how many were removed: call again until
it is 0). The audit trail records each call with the removed resources as entities of lifecycle 14 (permanent
erasure) and action D.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from fhir_server.errors import FhirError, not_found
from fhir_server.operations.base import Invocation, Operation
from fhir_server.operations.inputs import bad_input

DEFAULT_LIMIT = 1000

DECLARATION: dict[str, Any] = {
    "id": "Resource-expunge",
    "name": "Expunge",
    "title": "Hard-delete resources and their history",
    "code": "expunge",
    "resource": ["Resource"],
    "system": False,
    "type": True,
    "instance": True,
    "affectsState": True,
    "description": (
        "Removes a resource (instance level) or the deleted resources of a type (type level) with every version "
        "and index row; audited by an AuditEvent; only when the server allows it (HIE_ALLOW_EXPUNGE)."
    ),
    "parameter": [
        {
            "name": "limit",
            "use": "in",
            "min": 0,
            "max": "1",
            "type": "positiveInt",
            "documentation": f"Type level: at most this many resources per call (default {DEFAULT_LIMIT}).",
        },
        {"name": "count", "use": "out", "min": 1, "max": "1", "type": "integer", "documentation": "Resources."},
        {"name": "versions", "use": "out", "min": 1, "max": "1", "type": "integer", "documentation": "Versions."},
    ],
}


def expunge(call: Invocation, conn: Connection) -> dict[str, Any]:
    if not call.settings.allow_expunge:
        raise FhirError("forbidden", "$expunge is disabled on this server (set HIE_ALLOW_EXPUNGE to allow it).")
    repository = call.service.repository
    res_type = call.res_type or ""
    if call.res_id is not None:
        if call.inputs.get("limit"):
            raise bad_input("limit", "limit applies to $expunge at type level only.")
        found = repository.current(conn, res_type, call.res_id, lock=True)
        if found is None:
            raise not_found(f"{res_type}/{call.res_id} is not known to this server.")
        targets = [found]
    else:
        targets = repository.deleted_resources(conn, res_type, limit=call.one("limit", DEFAULT_LIMIT))
    removed = repository.expunge(conn, [version.res_pk for version in targets])
    if targets and call.audit is not None:
        call.audit.expunged([f"{v.res_type}/{v.res_id}" for v in targets])
    return {
        "resourceType": "Parameters",
        "parameter": [{"name": "count", "valueInteger": len(targets)}, {"name": "versions", "valueInteger": removed}],
    }


OPERATION = Operation(DECLARATION, expunge)
