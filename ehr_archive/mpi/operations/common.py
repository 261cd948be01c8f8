"""What the MPI operations share: naming a Patient by reference or by identifier."""

from __future__ import annotations

import re
from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy import Connection, select

from ehr_archive.identifiers import normalize_identifier_value
from ehr_archive.mpi.records import is_golden
from fhir_server.access import acting_as
from fhir_server.auth.principal import SYSTEM
from fhir_server.errors import FhirError
from fhir_server.operations.base import Invocation
from fhir_server.operations.inputs import bad_input
from fhir_server.service import FhirService
from fhir_server.storage.tables import resources


def as_exchange() -> AbstractContextManager[None]:
    """MPI work runs as the exchange: goldens, Tasks and Provenance are its own, and lookups see every record."""
    return acting_as(SYSTEM)


def require_steward(call: Invocation) -> None:
    """Linking and merging residents' records is the exchange's identity stewards' work, not an institution's.

    Those operations change records of every institution, so only the exchange's own clients (registered with
    ``--exchange``; their scopes still apply) and its in-process adapters may call them; an institution's client
    gets 403.
    """
    if not call.principal.exchange:
        raise FhirError(
            "forbidden",
            f"${call.path.rsplit('$', 1)[-1]} links or merges residents' records across institutions: only the "
            "exchange's identity stewards (a client registered with --exchange) may call it.",
        )


def sees_everything(call: Invocation) -> bool:
    """The exchange's stewards, its in-process adapters and a justified break-glass read see every resident."""
    return call.access.restriction is None


def readable_patients(call: Invocation, conn: Connection, ids: list[str]) -> set[str]:
    """Which of these Patients (records or goldens) the caller may read as a read of each would decide: the
    records its institution wrote, and any record or golden of a resident whose consent shares it with the caller
    now (docs/SECURITY.md). The MPI's disclosure policy (docs/MPI.md, "Who sees what") rests on this."""
    wanted = sorted(set(ids))
    restriction = call.access.restriction
    if restriction is None or not wanted:
        return set(wanted)
    r = resources
    query = select(r.c.res_id).where(
        r.c.res_type == "Patient", r.c.res_id.in_(wanted), r.c.deleted.is_(False), restriction(r, "Patient")
    )
    return set(conn.execute(query).scalars())


_PATIENT_REFERENCE = re.compile(r"^(?:.*/)?Patient/([A-Za-z0-9\-.]{1,64})(?:/_history/\d+)?$")


def reference_param(name: str, documentation: str, *, min_: int = 1) -> dict[str, Any]:
    return {"name": name, "use": "in", "min": min_, "max": "1", "type": "Reference", "documentation": documentation}


def referenced_id(call: Invocation, name: str) -> str | None:
    """The Patient id of a Reference input (``Patient/id``, absolute, or versioned)."""
    value = call.one(name)
    if value is None:
        return None
    found = _PATIENT_REFERENCE.match(value.get("reference") or "")
    if found is None:
        raise bad_input(name, f"'{name}' must reference a Patient (Patient/[id]), not {value.get('reference')!r}.")
    return found.group(1)


def records_with_identifier(service: FhirService, conn: Connection, system: str, value: str) -> list[str]:
    """Ids of institutions' Patients (goldens left out) carrying ``system|value`` as a current identifier.

    An identifier with ``use: old`` (e.g. copied to the survivor of a merge) does not name a record any more.
    """
    values = dict.fromkeys((value, normalize_identifier_value(system, value)))
    ids: list[str] = []
    for candidate in values:
        found = service.matches(conn, "Patient", [("identifier", f"{system}|{candidate}")], limit=50)
        for version in service.repository.load_many(conn, found):
            patient = version.resource()
            current = any(
                i.get("system") == system and i.get("value") in values and i.get("use") != "old"
                for i in patient.get("identifier") or []
            )
            if current and not is_golden(patient) and version.res_id not in ids:
                ids.append(version.res_id)
    return ids


def patient_named(call: Invocation, conn: Connection, name: str, *, role: str) -> str:
    """The id named by ``name`` (a Reference) or ``name-identifier`` (Identifiers, all naming one record)."""
    by_reference = referenced_id(call, name)
    identifiers = call.all(f"{name}-identifier")
    if by_reference is not None:
        return by_reference
    if not identifiers:
        raise bad_input(name, f"Name the {role} Patient with '{name}' or '{name}-identifier'.")
    ids: set[str] = set()
    for identifier in identifiers:
        system, value = identifier.get("system"), identifier.get("value")
        if not system or not value:
            raise bad_input(f"{name}-identifier", f"'{name}-identifier' needs a system and a value.")
        ids.update(records_with_identifier(call.service, conn, system, value))
    if not ids:
        shown = ", ".join(f"{i.get('system')}|{i.get('value')}" for i in identifiers)
        raise FhirError("not-found", f"No Patient has the {role} identifier {shown}.")
    if len(ids) > 1:
        raise FhirError("multiple-matches", f"The {role} identifiers name {len(ids)} different Patients.")
    return ids.pop()
