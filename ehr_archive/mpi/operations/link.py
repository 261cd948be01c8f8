"""``Patient/$mpi-link`` and ``Patient/$mpi-not-duplicate``: a reviewer's decision on a record and a golden.

Link puts an institution's record in a golden Patient (a manual link the matcher never undoes); not-duplicate
records that the two are different residents (the record leaves that golden if it was there). Either completes
the review Tasks of the pair and is recorded by a Provenance; the Patients get new versions.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from ehr_archive.mpi import require_mpi
from ehr_archive.mpi.operations.common import as_exchange, reference_param, referenced_id, require_steward
from fhir_server.operations.base import Invocation, Operation

_OUTPUTS = [
    {
        "name": "golden",
        "use": "out",
        "min": 1,
        "max": "1",
        "type": "Reference",
        "documentation": "The record's golden.",
    },
    {"name": "written", "use": "out", "min": 0, "max": "*", "type": "Reference", "documentation": "New versions."},
    {"name": "task", "use": "out", "min": 0, "max": "*", "type": "Reference", "documentation": "Tasks completed."},
]


def _declaration(code: str, title: str, description: str) -> dict[str, Any]:
    return {
        "id": f"Patient-{code}",
        "name": "".join(part.capitalize() for part in code.split("-")),
        "title": title,
        "code": code,
        "resource": ["Patient"],
        "system": False,
        "type": True,
        "instance": False,
        "affectsState": True,
        "description": description,
        "parameter": [
            reference_param("source-patient", "An institution's Patient (a source record)."),
            reference_param("golden-patient", "A golden (master) Patient."),
            *_OUTPUTS,
        ],
    }


def mpi_link(call: Invocation, conn: Connection) -> dict[str, Any]:
    require_steward(call)
    mpi = require_mpi(call.service)
    with as_exchange():
        return mpi.link(conn, referenced_id(call, "source-patient"), referenced_id(call, "golden-patient"))  # type: ignore[arg-type]


def mpi_not_duplicate(call: Invocation, conn: Connection) -> dict[str, Any]:
    require_steward(call)
    mpi = require_mpi(call.service)
    with as_exchange():
        return mpi.not_duplicate(conn, referenced_id(call, "source-patient"), referenced_id(call, "golden-patient"))  # type: ignore[arg-type]


LINK = Operation(
    _declaration("mpi-link", "Link a record to a golden Patient", "Manual MPI link; completes the pair's review Task."),
    mpi_link,
)
NOT_DUPLICATE = Operation(
    _declaration(
        "mpi-not-duplicate",
        "A record is not the resident of a golden Patient",
        "Manual MPI unlink / not-a-duplicate decision; completes the pair's review Task.",
    ),
    mpi_not_duplicate,
)
