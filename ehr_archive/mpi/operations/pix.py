"""``Patient/$ihe-pix`` (IHE PIXm ITI-83): the identifiers the region holds for the resident of one identifier.

The source identifier names institutions' records; their goldens gather every record of the resident, whose
identifiers (and references) are returned, filtered by ``targetSystem``. Errors as ITI-83 §2:3.83.4.2.3: an
identifier system the region does not define → 400 (``sourceIdentifier Assigning Authority not found``); no
record with the identifier → 404; a ``targetSystem`` the region does not define → 403.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from ehr_archive.identifiers import identifier_system, normalize_identifier_value
from ehr_archive.mpi import links, require_mpi
from ehr_archive.mpi.operations.common import as_exchange, records_with_identifier
from fhir_server.errors import FhirError, Issue
from fhir_server.operations.base import Invocation, Operation
from fhir_server.operations.inputs import bad_input

DECLARATION: dict[str, Any] = {
    "id": "Patient-ihe-pix",
    "name": "IHE_PIXm_pix",
    "title": "PIXm query: cross-referenced identifiers of a patient",
    "code": "ihe-pix",
    "resource": ["Patient"],
    "system": False,
    "type": True,
    "instance": False,
    "affectsState": False,
    "base": "https://profiles.ihe.net/ITI/PIXm/OperationDefinition/IHE.PIXm.pix",
    "description": "IHE PIXm ITI-83 over the master patient index: every identifier of the resident's records.",
    "parameter": [
        {
            "name": "sourceIdentifier",
            "use": "in",
            "min": 1,
            "max": "1",
            "type": "string",
            "documentation": "system|value (a token) of an identifier the region knows.",
        },
        {
            "name": "targetSystem",
            "use": "in",
            "min": 0,
            "max": "*",
            "type": "uri",
            "documentation": "Only identifiers of these systems (repeatable).",
        },
        {"name": "targetIdentifier", "use": "out", "min": 0, "max": "*", "type": "Identifier"},
        {"name": "targetId", "use": "out", "min": 0, "max": "*", "type": "Reference"},
    ],
}


def pix(call: Invocation, conn: Connection) -> dict[str, Any]:
    mpi = require_mpi(call.service)
    system, _, value = call.one("sourceIdentifier").partition("|")
    if not system or not value:
        raise bad_input("sourceIdentifier", "sourceIdentifier is a token system|value with both parts.")
    if identifier_system(system) is None:
        raise FhirError(
            "code-invalid", "sourceIdentifier Assigning Authority not found", expression=("sourceIdentifier",)
        )
    targets = call.all("targetSystem")
    unknown = [t for t in targets if identifier_system(t) is None]
    if unknown:
        raise FhirError(
            "forbidden",
            f"targetSystem not found: {', '.join(unknown)}",
            extra=[Issue("code-invalid", "targetSystem not found", expression=("targetSystem",))],
        )
    with as_exchange():
        sources = records_with_identifier(call.service, conn, system, value)
    if not sources:
        raise FhirError("not-found", "sourceIdentifier Patient Identifier not found", expression=("sourceIdentifier",))
    goldens = []
    for source_id in sources:
        with as_exchange():
            mpi.source_record(conn, source_id)
        record = links.get_record(conn, source_id)
        if record is not None and record.golden_id not in goldens:
            goldens.append(record.golden_id)
    asked = (system, normalize_identifier_value(system, value))
    wanted = set(targets)
    parameters: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = {asked}
    for golden_id in goldens:
        if not wanted:
            parameters.append({"name": "targetId", "valueReference": {"reference": f"Patient/{golden_id}"}})
        for member in links.members(conn, golden_id):
            held = False
            for identifier in member.demographics.get("identifier") or []:
                key_system, key_value = identifier.get("system"), identifier.get("value")
                if not key_system or not key_value or (wanted and key_system not in wanted):
                    continue
                key = (key_system, normalize_identifier_value(key_system, key_value))
                held = held or key != asked
                if key not in seen:
                    seen.add(key)
                    parameters.append(
                        {"name": "targetIdentifier", "valueIdentifier": {"system": key_system, "value": key_value}}
                    )
            if held or not wanted:
                parameters.append({"name": "targetId", "valueReference": {"reference": f"Patient/{member.source_id}"}})
    return {"resourceType": "Parameters", "parameter": parameters}


OPERATION = Operation(DECLARATION, pix)
