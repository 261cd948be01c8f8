"""ADT^A40 (v2.5.1 §3.3.40, merge patient - patient identifier list) applied as the MPI's merge.

The mapping (``adt.py``) writes the surviving patient (PID-3) with the message's transaction and adds a
``Patient/$merge`` entry per PID/MRG pair. Those entries are taken out of the Bundle and run here, after it,
in the same unit of work: MRG-1 names the prior record, merged into the survivor (``ehr_archive.mpi.merge``).

A prior patient the archive does not know is answered AE with table 0357 code 204 (unknown key identifier) at
MRG-1 and kept as a dead letter: v2.5.1 §3.6.2 describes A40 as joining two existing identifiers, so nothing is
merged, and a replay applies it once the prior record has arrived. A prior record already merged into the
survivor (a resend after a lost ACK) is not merged twice.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from adapters.hl7v2.errors import DUPLICATE_KEY_IDENTIFIER, UNKNOWN_KEY_IDENTIFIER, Hl7v2Error
from adapters.hl7v2.message import MessageHeader
from ehr_archive.mpi import MasterPatientIndex, mpi_of
from ehr_archive.mpi.merge import merge
from ehr_archive.mpi.operations.common import as_exchange, records_with_identifier
from fhir_server.errors import FhirError
from fhir_server.service import FhirService

MERGE_URL = "Patient/$merge"


def take_merges(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """Remove the ``Patient/$merge`` entries from a mapped Bundle; their Parameters, in message order."""
    entries = bundle.get("entry") or []
    merges = [e["resource"] for e in entries if (e.get("request") or {}).get("url") == MERGE_URL]
    bundle["entry"] = [e for e in entries if (e.get("request") or {}).get("url") != MERGE_URL]
    return merges


def apply_merges(
    conn: Connection, service: FhirService, merges: list[dict[str, Any]], header: MessageHeader
) -> list[dict[str, Any]]:
    """Run each A40 merge; a summary entry ``{status, location}`` per merge."""
    if not merges:
        return []
    mpi = mpi_of(service)
    if mpi is None:
        raise FhirError("not-supported", "ADT^A40 merges need the master patient index, which is turned off.")
    summary = []
    for sequence, parameters in enumerate(merges, start=1):
        summary.append(_apply_merge(conn, service, mpi, sequence, parameters, header))
    return summary


def _apply_merge(
    conn: Connection,
    service: FhirService,
    mpi: MasterPatientIndex,
    sequence: int,
    parameters: dict[str, Any],
    header: MessageHeader,
) -> dict[str, Any]:
    with as_exchange():
        sources = _named(conn, service, parameters, "source-patient-identifier")
        targets = _named(conn, service, parameters, "target-patient-identifier")
        shown = ", ".join(_shown(parameters, "source-patient-identifier"))
        if not sources:
            raise Hl7v2Error(
                f"the prior patient {shown} is not known to the archive; nothing to merge",
                segment="MRG",
                sequence=sequence,
                field=1,
                code=UNKNOWN_KEY_IDENTIFIER,
                header=header,
            )
        if len(sources) > 1 or len(targets) != 1:
            raise Hl7v2Error(
                f"the identifiers {shown} name {len(sources)} patients in the archive; merge them by hand",
                segment="MRG",
                sequence=sequence,
                field=1,
                code=DUPLICATE_KEY_IDENTIFIER,
                header=header,
            )
        source, target = sources[0], targets[0]
        current = service.repository.read(conn, "Patient", source).resource()
        already = {"other": {"reference": f"Patient/{target}"}, "type": "replaced-by"} in (current.get("link") or [])
        if not already:
            merge(mpi, conn, source, target, None)
    return {"status": "200 OK" if not already else "304 Not Modified", "location": f"Patient/{target}"}


def _shown(parameters: dict[str, Any], name: str) -> list[str]:
    return [
        f"{p['valueIdentifier'].get('system')}|{p['valueIdentifier'].get('value')}"
        for p in parameters.get("parameter") or []
        if p.get("name") == name
    ]


def _named(conn: Connection, service: FhirService, parameters: dict[str, Any], name: str) -> list[str]:
    found: list[str] = []
    for shown in _shown(parameters, name):
        system, _, value = shown.partition("|")
        found.extend(i for i in records_with_identifier(service, conn, system, value) if i not in found)
    return found
