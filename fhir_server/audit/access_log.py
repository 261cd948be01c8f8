"""A resident's access log: the audit events about one Patient, newest first, one index range per page.

What a resident sees of an event is limited to them: an event that also concerns other residents (a search
across several records, a transaction) is shown with only this resident's entity, without the query or the
other resources, so the log never discloses who else was looked at.
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import Connection, select

from fhir_server.audit.chain import event_patients
from fhir_server.storage.tables import audit_log, audit_patients


def access_events(
    conn: Connection, patient: str, *, since: int | None, count: int, before: int | None
) -> tuple[list[dict[str, Any]], int | None]:
    """Up to ``count`` events about ``patient`` (``Patient/{id}``), newest first, with ``seq`` below ``before``;
    and the ``seq`` to continue below, None on the last page."""
    query = (
        select(audit_log.c.seq, audit_log.c.event)
        .join(audit_patients, audit_patients.c.seq == audit_log.c.seq)
        .where(audit_patients.c.patient == patient)
        .order_by(audit_patients.c.seq.desc())
        .limit(count + 1)
    )
    if before is not None:
        query = query.where(audit_patients.c.seq < before)
    if since is not None:
        query = query.where(audit_log.c.recorded >= since)
    rows = conn.execute(query).all()
    events = [resident_view(orjson.loads(row.event), patient) for row in rows[:count]]
    return events, rows[count - 1].seq if len(rows) > count else None


def resident_view(event: dict[str, Any], patient: str) -> dict[str, Any]:
    """The event as ``patient`` may see it: only their own entity when it concerns others too."""
    if set(event_patients(event)) == {patient}:
        return event
    kept = [
        entity
        for entity in event.get("entity", ())
        if entity.get("what", {}).get("reference") == patient and entity.get("role", {}).get("code") == "1"
    ]
    return {**event, "entity": kept}
