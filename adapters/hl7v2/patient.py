"""PID, NK1 and IN1 (v2.5.1 §3.4.2, §3.4.5, §6.5.6) as Patient, RelatedPerson and Coverage."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from adapters.hl7v2.context import MappingContext
from adapters.hl7v2.datatypes import (
    address,
    codeable_concept,
    contact_point,
    date_only,
    date_time,
    human_name,
    name_display,
    table_coding,
)
from adapters.hl7v2.errors import TABLE_VALUE_NOT_FOUND, InvalidValueError, MissingRequiredError
from adapters.hl7v2.identifier_systems import MRN_SYSTEM_PREFIX, RESIDENT_ID_SYSTEM
from adapters.hl7v2.message import Composite, Segment

__all__ = [
    "PatientRef",
    "add_coverages",
    "add_patient",
    "add_related_people",
    "patient_identifiers",
]

# Table 0001 administrative sex, and GB/T 2261.1-2003 sex codes (0, 1, 2, 9) that Chinese HIS systems send.
_GENDER = {
    "M": "male",
    "F": "female",
    "O": "other",
    "A": "other",
    "U": "unknown",
    "N": "unknown",
    "1": "male",
    "2": "female",
    "0": "unknown",
    "9": "unknown",
}
_MARITAL_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus"
_NULL_FLAVOR = "http://terminology.hl7.org/CodeSystem/v3-NullFlavor"
# Table 0002 marital status and GB/T 2261.2-2003 codes -> v3 MaritalStatus (UNK/OTH are NullFlavor codes).
_MARITAL = {
    "S": "S",
    "M": "M",
    "D": "D",
    "W": "W",
    "A": "L",
    "E": "L",
    "C": "C",
    "P": "T",
    "R": "T",
    "G": "T",
    "N": "A",
    "I": "I",
    "B": "U",
    "U": "UNK",
    "T": "UNK",
    "O": "OTH",
    "10": "S",
    "20": "M",
    "21": "M",
    "22": "M",
    "23": "M",
    "30": "W",
    "40": "D",
    "90": "UNK",
}
# Table 0063 relationship -> subscriber-relationship (Coverage.relationship).
_SUBSCRIBER_RELATIONSHIP = {"SEL": "self", "SPO": "spouse", "DOM": "common", "CHD": "child", "PAR": "parent"}


@dataclass(frozen=True)
class PatientRef:
    """A Patient entry of the Bundle: its fullUrl and the identifier it is keyed by."""

    reference: str
    system: str
    value: str
    display: str = ""

    def as_reference(self) -> dict[str, Any]:
        reference = {"reference": self.reference}
        if self.display:
            reference["display"] = self.display
        return reference


def patient_identifiers(
    segment: Segment, field: int, ctx: MappingContext
) -> tuple[list[dict[str, Any]], tuple[str, str] | None]:
    """CX repetitions (PID-3, MRG-1) as identifiers, and the key to match on: the facility's MRN first,
    then the resident ID card number, then any identifier with a known system."""
    identifiers = []
    for cx in segment.repetitions(field):
        value = cx.get(1).strip()
        if not value:
            continue
        identifier: dict[str, Any] = {}
        type_code = cx.get(5).strip().upper()
        if type_code:
            identifier["type"] = {"coding": [table_coding("0203", type_code)]}
        system = ctx.systems.patient_system(cx, ctx.facility_id)
        if system:
            identifier["system"] = system
        identifier["value"] = value
        if not system and cx.sub(4).get(1).strip():
            identifier["assigner"] = {"display": cx.sub(4).get(1).strip()}
        identifiers.append(identifier)
    with_system = [(i["system"], i["value"]) for i in identifiers if "system" in i]
    ranked = sorted(
        with_system,
        key=lambda pair: 0 if pair[0].startswith(MRN_SYSTEM_PREFIX) else 1 if pair[0] == RESIDENT_ID_SYSTEM else 2,
    )
    return identifiers, (ranked[0] if ranked else None)


def add_patient(ctx: MappingContext, pid: Segment, *, owner: bool) -> PatientRef:
    """Add the PID's Patient: a conditional update when the message owns demographics (ADT), else a
    conditional create so results and bookings never overwrite what registration sent."""
    identifiers, key = patient_identifiers(pid, 3, ctx)
    if key is None:
        raise pid.error(MissingRequiredError, "PID-3 has no patient identifier with a known system", 3)
    patient: dict[str, Any] = {"resourceType": "Patient", "identifier": identifiers, "active": True}
    names = [name for name in (human_name(xpn) for xpn in pid.repetitions(5)) if name]
    if names:
        patient["name"] = names
    telecom = [
        *(contact_point(xtn, "home") for xtn in pid.repetitions(13)),
        *(contact_point(xtn, "work") for xtn in pid.repetitions(14)),
    ]
    if any(telecom):
        patient["telecom"] = [point for point in telecom if point]
    gender = _gender(pid)
    if gender:
        patient["gender"] = gender
    birth_date = date_only(pid, 7)
    if birth_date:
        patient["birthDate"] = birth_date
    death = date_time(pid, 29)
    if death:
        patient["deceasedDateTime"] = death
    elif pid.value(30).upper() in ("Y", "N"):
        patient["deceasedBoolean"] = pid.value(30).upper() == "Y"
    addresses = [found for found in (address(xad) for xad in pid.repetitions(11)) if found]
    if addresses:
        patient["address"] = addresses
    marital = _marital_status(pid.first(16))
    if marital:
        patient["maritalStatus"] = marital
    add = ctx.builder.upsert if owner else ctx.builder.ensure
    reference = add(patient, *key)
    return PatientRef(reference, key[0], key[1], name_display(names[0] if names else None))


def add_related_people(ctx: MappingContext, patient: PatientRef) -> None:
    """NK1 next of kin and contacts as RelatedPerson, keyed by patient and NK1-1 set ID."""
    system = ctx.systems.record_system(ctx.facility_id, "related-person")
    for index, nk1 in enumerate(ctx.message.all("NK1"), start=1):
        value = f"{patient.value}/{nk1.value(1) or index}"
        person: dict[str, Any] = {
            "resourceType": "RelatedPerson",
            "identifier": [{"system": system, "value": value}],
            "active": True,
            "patient": patient.as_reference(),
        }
        relationship = [
            concept for concept in (codeable_concept(nk1.first(3)), codeable_concept(nk1.first(7))) if concept
        ]
        if relationship:
            person["relationship"] = relationship
        names = [name for name in (human_name(xpn) for xpn in nk1.repetitions(2)) if name]
        if names:
            person["name"] = names
        telecom = [
            point
            for point in (
                *(contact_point(xtn, "home") for xtn in nk1.repetitions(5)),
                *(contact_point(xtn, "work") for xtn in nk1.repetitions(6)),
            )
            if point
        ]
        if telecom:
            person["telecom"] = telecom
        addresses = [found for found in (address(xad) for xad in nk1.repetitions(4)) if found]
        if addresses:
            person["address"] = addresses
        ctx.builder.upsert(person, system, value)


def add_coverages(ctx: MappingContext, patient: PatientRef) -> None:
    """IN1 insurance as Coverage, keyed by patient and insurer (IN1-3) or plan (IN1-2); payor is IN1-3/IN1-4."""
    system = ctx.systems.record_system(ctx.facility_id, "coverage")
    for in1 in ctx.message.all("IN1"):
        company_id, company_name = in1.value(3), in1.value(4)
        if not company_id and not company_name:
            raise in1.error(MissingRequiredError, "IN1-3 insurance company ID (or IN1-4 name) is empty", 3)
        value = f"{patient.value}/{company_id or company_name}/{in1.value(2) or '-'}"
        payor: dict[str, Any] = {"type": "Organization"}
        if company_id:
            payor["identifier"] = {"value": company_id}
        if company_name:
            payor["display"] = company_name
        coverage: dict[str, Any] = {
            "resourceType": "Coverage",
            "identifier": [{"system": system, "value": value}],
            "status": "active",
            "beneficiary": patient.as_reference(),
            "payor": [payor],
        }
        if in1.value(36):
            coverage["identifier"].append({"type": {"text": "policy number (IN1-36)"}, "value": in1.value(36)})
        plan_type = codeable_concept(in1.first(15))
        if plan_type:
            coverage["type"] = plan_type
        relationship = in1.value(17).upper()
        if relationship:
            coverage["relationship"] = _subscriber_relationship(relationship)
        period = {k: v for k, v in (("start", date_only(in1, 12)), ("end", date_only(in1, 13))) if v}
        if period:
            coverage["period"] = period
        classes = [
            _coverage_class("plan", in1.first(2)),
            _coverage_class("group", Composite(((in1.value(8),), (in1.value(9),)))),
        ]
        if any(classes):
            coverage["class"] = [found for found in classes if found]
        if in1.value(1).isdigit() and int(in1.value(1)) > 0:
            coverage["order"] = int(in1.value(1))
        ctx.builder.upsert(coverage, system, value)


def _gender(pid: Segment) -> str | None:
    code = pid.value(8).upper()
    if not code:
        return None
    if code not in _GENDER:
        raise pid.error(
            InvalidValueError, f"administrative sex {code!r} is not in table 0001", 8, code=TABLE_VALUE_NOT_FOUND
        )
    return _GENDER[code]


def _marital_status(ce: Composite) -> dict[str, Any] | None:
    code, text = ce.get(1).strip().upper(), ce.get(2).strip()
    if not code:
        return None
    mapped = _MARITAL.get(code)
    if mapped is None:
        return {"text": text or ce.get(1).strip()}
    system = _NULL_FLAVOR if mapped in ("UNK", "OTH") else _MARITAL_SYSTEM
    concept: dict[str, Any] = {"coding": [{"system": system, "code": mapped}]}
    if text:
        concept["text"] = text
    return concept


def _subscriber_relationship(code: str) -> dict[str, Any]:
    mapped = _SUBSCRIBER_RELATIONSHIP.get(code, "other")
    system = "http://terminology.hl7.org/CodeSystem/subscriber-relationship"
    return {"coding": [{"system": system, "code": mapped}], "text": code}


def _coverage_class(kind: str, ce: Composite) -> dict[str, Any] | None:
    value, name = ce.get(1).strip(), ce.get(2).strip()
    if not value:
        return None
    system = "http://terminology.hl7.org/CodeSystem/coverage-class"
    found: dict[str, Any] = {"type": {"coding": [{"system": system, "code": kind}]}, "value": value}
    if name:
        found["name"] = name
    return found
