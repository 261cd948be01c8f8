"""``Patient/$merge`` (after FHIR R5 patient-operation-merge) and ``Patient/$unmerge`` on the MPI.

Patients are named by reference or by identifiers (``source-patient-identifier``, as HL7 v2 A40 does). With
``preview`` the merge runs and is rolled back: the answer shows the result, nothing is stored. See
``ehr_archive.mpi.merge`` for what changes; every change is a new version and a Provenance records it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from ehr_archive.mpi import merge as merging
from ehr_archive.mpi import require_mpi
from ehr_archive.mpi.operations.common import as_exchange, patient_named, reference_param, require_steward
from fhir_server.operations.base import Invocation, Operation


def _identifiers(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "use": "in",
        "min": 0,
        "max": "*",
        "type": "Identifier",
        "documentation": "Instead of a reference.",
    }


_PREVIEW = {"name": "preview", "use": "in", "min": 0, "max": "1", "type": "boolean", "documentation": "Do not store."}
_OUT = [
    {
        "name": "outcome",
        "use": "out",
        "min": 1,
        "max": "1",
        "type": "OperationOutcome",
        "documentation": "What happened.",
    },
    {"name": "result", "use": "out", "min": 0, "max": "1", "type": "Patient", "documentation": "The survivor."},
]

MERGE_DECLARATION: dict[str, Any] = {
    "id": "Patient-merge",
    "name": "Merge",
    "title": "Merge two Patients (records of one institution, or two golden Patients)",
    "code": "merge",
    "resource": ["Patient"],
    "system": False,
    "type": True,
    "instance": False,
    "affectsState": True,
    "base": "http://hl7.org/fhir/OperationDefinition/Patient-merge",
    "description": "The source becomes inactive, replaced-by the target; nothing is deleted; $unmerge undoes it.",
    "parameter": [
        reference_param("source-patient", "The Patient merged away.", min_=0),
        _identifiers("source-patient-identifier"),
        reference_param("target-patient", "The surviving Patient.", min_=0),
        _identifiers("target-patient-identifier"),
        {
            "name": "result-patient",
            "use": "in",
            "min": 0,
            "max": "1",
            "type": "Patient",
            "documentation": "The survivor as it should be.",
        },
        _PREVIEW,
        *_OUT,
    ],
}

UNMERGE_DECLARATION: dict[str, Any] = {
    "id": "Patient-unmerge",
    "name": "Unmerge",
    "title": "Undo the latest merge of a Patient",
    "code": "unmerge",
    "resource": ["Patient"],
    "system": False,
    "type": True,
    "instance": False,
    "affectsState": True,
    "description": "Restores the merged-away Patient from its version before the merge and relinks its records.",
    "parameter": [
        reference_param("source-patient", "The Patient that was merged away.", min_=0),
        _identifiers("source-patient-identifier"),
        _PREVIEW,
        *_OUT,
    ],
}


def _answer(resource: dict[str, Any], text: str, preview: bool) -> dict[str, Any]:
    if preview:
        text = f"Preview only, nothing was stored: {text}."
    issue = {"severity": "information", "code": "informational", "diagnostics": text}
    return {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "outcome", "resource": {"resourceType": "OperationOutcome", "issue": [issue]}},
            {"name": "result", "resource": resource},
        ],
    }


def _run(call: Invocation, conn: Connection, work: Any) -> dict[str, Any]:
    preview = bool(call.one("preview", False))
    savepoint = conn.begin_nested() if preview else None
    try:
        with as_exchange():
            resource, text = work()
    finally:
        if savepoint is not None:
            savepoint.rollback()
    return _answer(resource, text, preview)


def merge(call: Invocation, conn: Connection) -> dict[str, Any]:
    require_steward(call)
    mpi = require_mpi(call.service)
    with as_exchange():
        source = patient_named(call, conn, "source-patient", role="source")
        target = patient_named(call, conn, "target-patient", role="target")
    result = call.one("result-patient")
    return _run(call, conn, lambda: merging.merge(mpi, conn, source, target, result))


def unmerge(call: Invocation, conn: Connection) -> dict[str, Any]:
    require_steward(call)
    mpi = require_mpi(call.service)
    with as_exchange():
        source = patient_named(call, conn, "source-patient", role="source")
    return _run(call, conn, lambda: merging.unmerge(mpi, conn, source))


MERGE = Operation(MERGE_DECLARATION, merge)
UNMERGE = Operation(UNMERGE_DECLARATION, unmerge)
