"""ADT events (v2.5.1 chapter 3: A01-A05, A08, A11, A13, A28, A31, A40) as a transaction Bundle.

A40 becomes a `Patient/$merge` entry with the Parameters of the FHIR R5 operation, for the server's MPI to run.
"""

from __future__ import annotations

from typing import Any

from adapters.hl7v2.clinical import add_allergies, add_conditions
from adapters.hl7v2.context import MappingContext
from adapters.hl7v2.datatypes import date_time
from adapters.hl7v2.encounter import EncounterRef, add_encounter, visit_period
from adapters.hl7v2.errors import InvalidValueError, MissingRequiredError
from adapters.hl7v2.message import Segment
from adapters.hl7v2.patient import add_coverages, add_patient, add_related_people, patient_identifiers

__all__ = ["ADT_EVENTS", "map_adt"]

ADT_EVENTS = frozenset({"A01", "A02", "A03", "A04", "A05", "A08", "A11", "A13", "A28", "A31", "A40"})

# Encounter.status each visit event sets; A08 derives it from the visit dates.
_VISIT_STATUS = {
    "A01": "in-progress",
    "A02": "in-progress",
    "A03": "finished",
    "A04": "arrived",
    "A05": "planned",
    "A11": "entered-in-error",
    "A13": "in-progress",
}
_CANCEL_EVENTS = frozenset({"A11", "A13"})


def map_adt(ctx: MappingContext) -> dict[str, Any]:
    """Map one ADT message; the event (MSH-9.2) decides Encounter status and which segments count."""
    event = ctx.message.header.trigger_event
    if event == "A40":
        return _merge_patients(ctx)
    pid = ctx.message.require("PID")
    patient = add_patient(ctx, pid, owner=event not in _CANCEL_EVENTS)
    encounter: EncounterRef | None = None
    if event in _VISIT_STATUS:
        pv1 = ctx.message.require("PV1")
        encounter = add_encounter(ctx, pv1, patient, status=_VISIT_STATUS[event], period=_event_period(ctx, event, pv1))
    elif event == "A08":
        pv1 = ctx.message.segment("PV1")
        if pv1 is not None and _describes_visit(pv1):
            encounter = add_encounter(ctx, pv1, patient, status=_updated_status(pv1), period=visit_period(pv1))
    if event not in _CANCEL_EVENTS:
        add_related_people(ctx, patient)
        add_allergies(ctx, patient)
        add_conditions(ctx, patient, encounter)
        add_coverages(ctx, patient)
    return ctx.finish()


def _event_period(ctx: MappingContext, event: str, pv1: Segment) -> dict[str, str]:
    if event == "A13":
        return visit_period(pv1, end=False)
    period = visit_period(pv1)
    evn = ctx.message.segment("EVN")
    if event == "A03" and "end" not in period and evn is not None:
        discharged = date_time(evn, 6)
        if discharged:
            period["end"] = discharged
    return period


def _describes_visit(pv1: Segment) -> bool:
    has_key = any(pv1.value(field) for field in (19, 50, 44))
    return has_key and pv1.value(2).upper() != "N"


def _updated_status(pv1: Segment) -> str:
    if pv1.value(45):
        return "finished"
    return "planned" if pv1.value(2).upper() == "P" else "in-progress"


def _merge_patients(ctx: MappingContext) -> dict[str, Any]:
    """A40 (§3.3.40): each PID (surviving patient) with its MRG (patient merged into it)."""
    pairs: list[tuple[Segment, Segment]] = []
    pending: Segment | None = None
    for segment in ctx.message.segments:
        if segment.id == "PID":
            if pending is not None:
                raise _missing_mrg(pending)
            pending = segment
        elif segment.id == "MRG":
            if pending is None:
                raise segment.error(MissingRequiredError, "MRG has no PID of the surviving patient before it")
            pairs.append((pending, segment))
            pending = None
    if pending is not None:
        raise _missing_mrg(pending)
    if not pairs:
        ctx.message.require("PID")
    for pid, mrg in pairs:
        target = add_patient(ctx, pid, owner=True)
        identifiers, _ = patient_identifiers(mrg, 1, ctx)
        sources = [(i["system"], i["value"]) for i in identifiers if "system" in i]
        if not sources:
            raise mrg.error(MissingRequiredError, "MRG-1 has no prior patient identifier with a known system", 1)
        if (target.system, target.value) in sources:
            raise mrg.error(InvalidValueError, "MRG-1 names the surviving patient of PID-3 itself", 1)
        parameters = {
            "resourceType": "Parameters",
            "parameter": [
                *(
                    {"name": "source-patient-identifier", "valueIdentifier": {"system": system, "value": value}}
                    for system, value in sources
                ),
                {"name": "target-patient", "valueReference": target.as_reference()},
                {
                    "name": "target-patient-identifier",
                    "valueIdentifier": {"system": target.system, "value": target.value},
                },
            ],
        }
        ctx.builder.invoke(parameters, "Patient/$merge")
    return ctx.finish()


def _missing_mrg(pid: Segment) -> MissingRequiredError:
    return MissingRequiredError(
        f"PID {pid.sequence} is not followed by the MRG naming the merged patient",
        segment="MRG",
        sequence=pid.sequence,
        code="100",
    )
