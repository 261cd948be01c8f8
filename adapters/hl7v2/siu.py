"""SIU^S12-S15 scheduling (v2.5.1 chapter 10: SCH §10.6.2, TQ1 §4.5.4, AIS/AIG/AIL/AIP) as an Appointment.

The Appointment is keyed by SCH-2 filler appointment ID (else SCH-1 placer ID); S15 cancels it.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from adapters.hl7v2.context import MappingContext
from adapters.hl7v2.datatypes import codeable_concept, instant, number, table_coding
from adapters.hl7v2.encounter import add_location, add_practitioner
from adapters.hl7v2.errors import MissingRequiredError
from adapters.hl7v2.message import Segment
from adapters.hl7v2.patient import add_patient

__all__ = ["SIU_EVENTS", "map_siu"]

SIU_EVENTS = frozenset({"S12", "S13", "S14", "S15"})

# Table 0278 filler status -> Appointment.status.
_FILLER_STATUS = {
    "PENDING": "pending",
    "WAITLIST": "waitlist",
    "BOOKED": "booked",
    "OVERBOOK": "booked",
    "BLOCKED": "booked",
    "STARTED": "arrived",
    "COMPLETE": "fulfilled",
    "CANCELLED": "cancelled",
    "DC": "cancelled",
    "DELETED": "entered-in-error",
    "NOSHOW": "noshow",
}
# Table 0276 appointment reasons: FHIR's Appointment.appointmentType code system.
_APPOINTMENT_REASONS = frozenset({"CHECKUP", "EMERGENCY", "FOLLOWUP", "ROUTINE", "WALKIN"})
_MINUTES_PER_UNIT = {
    "S": 1 / 60,
    "SEC": 1 / 60,
    "MIN": 1,
    "M": 1,
    "H": 60,
    "HR": 60,
    "HOUR": 60,
    "HOURS": 60,
    "D": 1440,
}
_UNDATED_STATUSES = frozenset({"proposed", "cancelled", "waitlist"})


def map_siu(ctx: MappingContext) -> dict[str, Any]:
    """Map one SIU message: the Appointment with the patient, staff (AIP), rooms (AIL) and equipment (AIG)."""
    sch = ctx.message.require("SCH")
    patient = add_patient(ctx, ctx.message.require("PID"), owner=False)
    system, value, identifiers = _appointment_key(ctx, sch)
    event = ctx.message.header.trigger_event
    status = "cancelled" if event == "S15" else _FILLER_STATUS.get(sch.value(25).upper(), "booked")
    appointment: dict[str, Any] = {"resourceType": "Appointment", "identifier": identifiers, "status": status}
    reason = codeable_concept(sch.first(6))
    if reason:
        appointment["reasonCode"] = [reason]
    appointment_type = _appointment_type(sch)
    if appointment_type:
        appointment["appointmentType"] = appointment_type
    services = [concept for ais in ctx.message.all("AIS") if (concept := codeable_concept(ais.first(3)))]
    if services:
        appointment["serviceType"] = _unique(services)
    appointment.update(_timing(ctx, sch, status))
    comments = _schedule_notes(ctx)
    if comments:
        appointment["comment"] = comments
    participants = [{"actor": patient.as_reference(), "required": "required", "status": "accepted"}]
    for aip in ctx.message.all("AIP"):
        actor = add_practitioner(ctx, aip.first(3), owner=False)
        if actor:
            participants.append(_participant(actor, codeable_concept(aip.first(4))))
    for ail in ctx.message.all("AIL"):
        actor = add_location(ctx, ail.first(3), owner=False)
        if actor:
            participants.append(_participant(actor, codeable_concept(ail.first(4))))
    for aig in ctx.message.all("AIG"):
        resource = codeable_concept(aig.first(3))
        if resource:
            actor = {"type": "Device", "display": resource.get("text") or resource["coding"][0]["code"]}
            participants.append(_participant(actor, codeable_concept(aig.first(4))))
    appointment["participant"] = _unique(participants)
    ctx.builder.upsert(appointment, system, value)
    return ctx.finish()


def _appointment_key(ctx: MappingContext, sch: Segment) -> tuple[str, str, list[dict[str, Any]]]:
    identifiers = []
    for field, kind, type_code in ((2, "filler-appointment", "FILL"), (1, "placer-appointment", "PLAC")):
        ei = sch.first(field)
        if ei.get(1).strip():
            system = ctx.systems.entity_system(kind, ei, ctx.facility_id)
            type_ = {"coding": [table_coding("0203", type_code)]}
            identifiers.append({"type": type_, "system": system, "value": ei.get(1).strip()})
    if not identifiers:
        raise sch.error(MissingRequiredError, "SCH-2 filler appointment ID (and SCH-1 placer ID) is empty", 2)
    return identifiers[0]["system"], identifiers[0]["value"], identifiers


def _appointment_type(sch: Segment) -> dict[str, Any] | None:
    concept = codeable_concept(sch.first(7))
    if concept is None:
        return None
    for index, coding in enumerate(concept.get("coding", [])):
        if "system" not in coding and coding["code"].upper() in _APPOINTMENT_REASONS:
            concept["coding"][index] = table_coding("0276", coding["code"].upper(), coding.get("display", ""))
    return concept


def _timing(ctx: MappingContext, sch: Segment, status: str) -> dict[str, Any]:
    """Start/end from TQ1-7/8, else SCH-11.4/5 (TQ, withdrawn), else AIS-4 plus the SCH-9/10 or AIS-7/8
    duration; only proposed, cancelled and waitlisted appointments may lack them (R4B invariant app-3)."""
    tq1, ais = ctx.message.segment("TQ1"), ctx.message.segment("AIS")
    start = _first_instant((tq1, 7, 1), (sch, 11, 4), (ais, 4, 1))
    end = _first_instant((tq1, 8, 1), (sch, 11, 5))
    minutes = _minutes(sch.value(9), sch.value(10))
    if minutes is None and ais is not None:
        minutes = _minutes(ais.value(7), ais.value(8))
    if start and not end and minutes:
        end = (datetime.fromisoformat(start) + timedelta(minutes=minutes)).isoformat()
    timing: dict[str, Any] = {"minutesDuration": minutes} if minutes else {}
    if start and end:
        timing.update(start=start, end=end)
    elif status not in _UNDATED_STATUSES:
        missing = "start" if not start else "end (or a duration in SCH-9/SCH-10)"
        text = f"a {status} appointment needs its {missing}"
        if tq1 is not None:
            raise tq1.error(MissingRequiredError, text, 7 if not start else 8)
        raise sch.error(MissingRequiredError, text, 11, component=4 if not start else 5)
    return timing


def _first_instant(*places: tuple[Segment | None, int, int]) -> str | None:
    for segment, field, component in places:
        found = instant(segment, field, component) if segment is not None else None
        if found:
            return found
    return None


def _minutes(amount: str, units: str) -> int | None:
    value = number(amount)
    factor = _MINUTES_PER_UNIT.get(re.sub(r"[^A-Za-z]", "", units).upper() or "MIN")
    if value is None or factor is None or value <= 0:
        return None
    return max(1, round(value * factor))


def _schedule_notes(ctx: MappingContext) -> str:
    notes = []
    for segment in ctx.message.segments[1:]:
        if segment.id in ("PID", "RGS"):
            break
        if segment.id == "NTE" and segment.text(3):
            notes.append(segment.text(3))
    return "\n".join(notes)


def _participant(actor: dict[str, Any], role: dict[str, Any] | None) -> dict[str, Any]:
    participant: dict[str, Any] = {"actor": actor, "required": "required", "status": "accepted"}
    if role:
        participant["type"] = [role]
    return participant


def _unique(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen, unique = set(), []
    for item in items:
        key = repr(sorted(item.items()))
        if key not in seen:
            seen.add(key)
            unique.append(item)
    return unique
