"""``Patient/[id]/$access-log``: who accessed a resident's record, when, how and why (issue 5, residents' log).

Answers a ``searchset`` Bundle of the AuditEvents about the resident, newest first: the client and its
institution (``agent``), the time (``recorded``), the interaction (``subtype``, ``action``), the outcome, the
purpose of use and the break-glass label (``meta.security`` BTG). Readable by the resident's own app (a token
whose patient context is this Patient, or another record the master patient index links to the same person) and
by clients granted read on AuditEvent; anyone else gets 403. The audit trail writes events shortly after each
response: a page may lack the last fraction of a second.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from sqlalchemy import Connection, select

from fhir_server.audit.access_log import access_events
from fhir_server.auth.scopes import grants_for
from fhir_server.errors import FhirError
from fhir_server.operations.base import Invocation, Operation
from fhir_server.operations.inputs import bad_input, position_cursor, read_position_cursor, text_value
from fhir_server.search.values import search_date
from fhir_server.storage.tables import mpi_records

DECLARATION: dict[str, Any] = {
    "id": "Patient-access-log",
    "name": "AccessLog",
    "title": "Who accessed a resident's record",
    "code": "access-log",
    "resource": ["Patient"],
    "system": False,
    "type": False,
    "instance": True,
    "affectsState": False,
    "description": (
        "The AuditEvents about this resident, newest first: who (client, institution), when, the interaction, "
        "outcome, purpose of use and break-glass flag. For the resident's own app or clients allowed to read "
        "AuditEvent."
    ),
    "parameter": [
        {
            "name": "_since",
            "use": "in",
            "min": 0,
            "max": "1",
            "type": "dateTime",
            "documentation": "Only events recorded at or after this time.",
        },
        {
            "name": "_count",
            "use": "in",
            "min": 0,
            "max": "1",
            "type": "positiveInt",
            "documentation": "Events per page (the server's page size by default).",
        },
        {
            "name": "return",
            "use": "out",
            "min": 1,
            "max": "1",
            "type": "Bundle",
            "documentation": "A searchset Bundle of AuditEvents, paged with next links.",
        },
    ],
}


def may_read_access_log(call: Invocation, conn: Connection, patient: str) -> bool:
    principal = call.principal
    if principal.unrestricted or principal.patient == patient:
        return True
    if principal.patient is not None and principal.organization is None:
        # a resident's app: its person's records only (its patient/ scopes read no other resident's log)
        return patient.removeprefix("Patient/") in _same_person(conn, principal.patient.removeprefix("Patient/"))
    return grants_for(principal.scopes).readable("AuditEvent")


def _same_person(conn: Connection, patient_id: str) -> set[str]:
    """Ids of the records the master patient index links to the same person as ``patient_id`` (its golden and the
    golden's records, as the access filters find a resident app's records); a Patient it does not know: itself."""
    golden = conn.execute(select(mpi_records.c.golden_id).where(mpi_records.c.source_id == patient_id)).scalar()
    person = golden or patient_id
    linked = conn.execute(select(mpi_records.c.source_id).where(mpi_records.c.golden_id == person)).scalars()
    return {patient_id, person, *linked}


def access_log(call: Invocation, conn: Connection) -> dict[str, Any]:
    patient = f"Patient/{call.res_id}"
    if not may_read_access_log(call, conn, patient):
        raise FhirError(
            "forbidden",
            f"The access log of {patient} is for the resident's own app or clients allowed to read AuditEvent "
            "(system/AuditEvent.rs).",
        )
    count = min(call.one("_count", call.settings.default_page_size), call.settings.max_page_size)
    since_text = call.one("_since")
    since = None
    if since_text is not None:
        span = search_date(since_text)
        if span is None:
            raise bad_input("_since", f"_since={since_text} is not a time this server can compare.")
        since = span[0]
    before = read_position_cursor("access-log", call.cursor) if call.cursor else None
    events, next_seq = access_events(conn, patient, since=since, count=count, before=before)
    return _bundle(call, events, position_cursor("access-log", next_seq) if next_seq is not None else None)


def _bundle(call: Invocation, events: list[dict[str, Any]], next_cursor: str | None) -> dict[str, Any]:
    params = [(name, text_value(value)) for name, values in call.inputs.items() for value in values]
    url = f"{call.base}/{call.path}"

    def link(relation: str, cursor: str | None) -> dict[str, str]:
        query = urlencode([*params, *([("_cursor", cursor)] if cursor else [])])
        return {"relation": relation, "url": url + (f"?{query}" if query else "")}

    links = [link("self", call.cursor), link("first", None)]
    if next_cursor:
        links.append(link("next", next_cursor))
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "link": links}
    if events:
        bundle["entry"] = [
            {"fullUrl": f"{call.base}/AuditEvent/{event['id']}", "resource": event, "search": {"mode": "match"}}
            for event in events
        ]
    return bundle


OPERATION = Operation(DECLARATION, access_log, paged=True)
