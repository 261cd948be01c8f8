"""``Patient/$ihe-pix`` (IHE PIXm ITI-83): the identifiers the region holds for the resident of one identifier.

The source identifier names institutions' records; their goldens gather every record of the resident, whose
identifiers (and references) are returned, filtered by ``targetSystem``. Errors as ITI-83 §2:3.83.4.2.3: an
identifier system the region does not define → 400 (``sourceIdentifier Assigning Authority not found``); no
record with the identifier → 404; a ``targetSystem`` the region does not define → 403.

An institution gets the identifiers of the records it may read only (its own, and those the resident's consent
shares with it); when it may read none of the resident's records the answer is the 404 of an unknown identifier
(docs/MPI.md, "Who sees what").
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from ehr_archive.identifiers import identifier_system, normalize_identifier_value
from ehr_archive.mpi import links, require_mpi
from ehr_archive.mpi.operations.common import (
    as_exchange,
    readable_patients,
    records_with_identifier,
    sees_everything,
)
from fhir_server.access import refuse_resident_app
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
    refuse_resident_app(call.principal, "$ihe-pix")
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
    if not sees_everything(call):  # an institution names only records it may read (its own, or shared by consent)
        readable_sources = readable_patients(call, conn, sources)
        sources = [source_id for source_id in sources if source_id in readable_sources]
    if not sources:  # the same answer whether nobody holds the identifier or the caller may not see who does
        raise FhirError("not-found", "sourceIdentifier Patient Identifier not found", expression=("sourceIdentifier",))
    goldens: list[str] = []
    for source_id in sources:
        with as_exchange():
            mpi.source_record(conn, source_id)
        record = links.get_record(conn, source_id)
        if record is not None and record.golden_id not in goldens:
            goldens.append(record.golden_id)
    members = {golden_id: links.members(conn, golden_id) for golden_id in goldens}
    if not sees_everything(call):  # and learns the identifiers of the records it may read only
        readable = readable_patients(call, conn, [m.source_id for found in members.values() for m in found])
        members = {g: [m for m in found if m.source_id in readable] for g, found in members.items()}
    asked = (system, normalize_identifier_value(system, value))
    wanted = set(targets)
    parameters: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = {asked}
    for golden_id, found in members.items():
        if not wanted:
            parameters.append({"name": "targetId", "valueReference": {"reference": f"Patient/{golden_id}"}})
        for member in found:
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
