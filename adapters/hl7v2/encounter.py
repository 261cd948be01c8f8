"""PV1 patient visit (v2.5.1 §3.4.3) as Encounter, with PL locations and XCN staff as Location and Practitioner."""

from __future__ import annotations

from typing import Any

from adapters.hl7v2.context import MappingContext
from adapters.hl7v2.datatypes import codeable_concept, date_time, name_display, practitioner_name, table_coding
from adapters.hl7v2.errors import MissingRequiredError
from adapters.hl7v2.message import Composite, Segment
from adapters.hl7v2.patient import PatientRef

__all__ = ["EncounterRef", "add_encounter", "add_location", "add_practitioner", "encounter_key", "visit_period"]

EncounterRef = tuple[str, str]
"""An Encounter entry: its fullUrl and the value it is keyed by."""

_ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
_PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
_PHYSICAL_TYPE = "http://terminology.hl7.org/CodeSystem/location-physical-type"
# Table 0004 patient class -> v3 ActEncounterCode.
_CLASS = {
    "E": ("EMER", "emergency"),
    "I": ("IMP", "inpatient encounter"),
    "B": ("IMP", "inpatient encounter"),
    "O": ("AMB", "ambulatory"),
    "R": ("AMB", "ambulatory"),
    "P": ("PRENC", "pre-admission"),
}
_UNKNOWN_CLASS = {"system": "http://terminology.hl7.org/CodeSystem/v3-NullFlavor", "code": "UNK", "display": "unknown"}
# PV1-7/8/9/17 doctors and their v3 ParticipationType.
_PARTICIPANTS = ((7, "ATND", "attender"), (8, "REF", "referrer"), (9, "CON", "consultant"), (17, "ADM", "admitter"))


def add_practitioner(ctx: MappingContext, xcn: Composite, *, owner: bool) -> dict[str, Any] | None:
    """An XCN (§2.A.86) as a reference: a Practitioner keyed by XCN-1, or a display-only name without one."""
    name = practitioner_name(xcn)
    display = name_display(name)
    staff_id = xcn.get(1).strip()
    if not staff_id:
        return {"display": display} if display else None
    system = ctx.systems.practitioner_system(xcn, ctx.facility_id)
    practitioner: dict[str, Any] = {
        "resourceType": "Practitioner",
        "identifier": [{"system": system, "value": staff_id}],
        "active": True,
    }
    if name:
        practitioner["name"] = [name]
    add = ctx.builder.upsert if owner else ctx.builder.ensure
    reference: dict[str, Any] = {"reference": add(practitioner, system, staff_id)}
    if display:
        reference["display"] = display
    return reference


def add_location(ctx: MappingContext, pl: Composite, *, owner: bool) -> dict[str, Any] | None:
    """A PL (§2.A.53) as a Location keyed by point of care/room/bed, the finest part giving its physical type."""
    parts = [pl.get(i).strip() for i in (1, 2, 3)]
    if not any(parts):
        return None
    value = "/".join(part for part in parts if part)
    kind = ("bd", "Bed") if parts[2] else ("ro", "Room") if parts[1] else ("wa", "Ward")
    system = ctx.systems.location_system(ctx.facility_id)
    name = pl.get(9).strip() or " ".join(part for part in parts if part)
    location = {
        "resourceType": "Location",
        "identifier": [{"system": system, "value": value}],
        "status": "active",
        "name": name,
        "mode": "instance",
        "physicalType": {"coding": [{"system": _PHYSICAL_TYPE, "code": kind[0], "display": kind[1]}]},
        "managingOrganization": ctx.facility_reference,
    }
    add = ctx.builder.upsert if owner else ctx.builder.ensure
    return {"reference": add(location, system, value), "display": name}


def encounter_key(ctx: MappingContext, pv1: Segment, patient: PatientRef) -> tuple[str, str]:
    """The identifier an Encounter is matched on: PV1-19 visit number, else PV1-50 alternate visit ID,
    else patient and PV1-44 admit time."""
    if pv1.value(19):
        return ctx.systems.visit_system(ctx.facility_id), pv1.value(19)
    if pv1.value(50):
        return ctx.systems.record_system(ctx.facility_id, "alternate-visit"), pv1.value(50)
    if pv1.value(44):
        return ctx.systems.record_system(ctx.facility_id, "admission"), f"{patient.value}/{pv1.value(44)}"
    raise pv1.error(
        MissingRequiredError,
        "PV1-19 visit number is empty (and no PV1-50 alternate visit ID or PV1-44 admit time to key the visit)",
        19,
    )


def add_encounter(
    ctx: MappingContext,
    pv1: Segment,
    patient: PatientRef,
    *,
    status: str,
    period: dict[str, str],
) -> EncounterRef:
    """Add the visit as an Encounter with `status` and `period` decided by the trigger event."""
    system, value = encounter_key(ctx, pv1, patient)
    identifier: dict[str, Any] = {"system": system, "value": value}
    if pv1.value(19):
        identifier["type"] = {"coding": [table_coding("0203", "VN", "Visit number")]}
    encounter: dict[str, Any] = {
        "resourceType": "Encounter",
        "identifier": [identifier],
        "status": status,
        "class": _encounter_class(pv1.value(2).upper()),
        "subject": patient.as_reference(),
    }
    service = pv1.value(10)
    if service:
        encounter["serviceType"] = {"text": service}
    participants = []
    for field, code, display in _PARTICIPANTS:
        for xcn in pv1.repetitions(field):
            reference = add_practitioner(ctx, xcn, owner=True)
            if reference:
                role = {"coding": [{"system": _PARTICIPATION, "code": code, "display": display}]}
                participants.append({"type": [role], "individual": reference})
    if participants:
        encounter["participant"] = participants
    if period:
        encounter["period"] = period
    pv2 = ctx.message.segment("PV2")
    reason = codeable_concept(pv2.first(3)) if pv2 else None
    if reason:
        encounter["reasonCode"] = [reason]
    hospitalization = {
        key: {"text": pv1.value(field)} for key, field in (("admitSource", 14), ("dischargeDisposition", 36))
    }
    hospitalization = {key: concept for key, concept in hospitalization.items() if concept["text"]}
    if hospitalization:
        encounter["hospitalization"] = hospitalization
    locations = []
    current = add_location(ctx, pv1.first(3), owner=True)
    if current:
        current_status = {"finished": "completed", "planned": "planned"}.get(status, "active")
        locations.append({"location": current, "status": current_status})
    prior = add_location(ctx, pv1.first(6), owner=True)
    if prior:
        locations.append({"location": prior, "status": "completed"})
    if locations:
        encounter["location"] = locations
    encounter["serviceProvider"] = ctx.facility_reference
    return ctx.builder.upsert(encounter, system, value), value


def visit_period(pv1: Segment, *, end: bool = True) -> dict[str, str]:
    """PV1-44 admit and PV1-45 discharge date/time as a Period (`end=False` drops the discharge)."""
    period = {"start": date_time(pv1, 44)}
    if end:
        period["end"] = date_time(pv1, 45)
    return {key: value for key, value in period.items() if value}


def _encounter_class(code: str) -> dict[str, str]:
    if code in _CLASS:
        act_code, display = _CLASS[code]
        return {"system": _ACT_CODE, "code": act_code, "display": display}
    return dict(_UNKNOWN_CLASS)
