"""AL1 allergies and DG1 diagnoses (v2.5.1 §3.4.6, §6.5.2) as AllergyIntolerance and Condition."""

from __future__ import annotations

from typing import Any

from adapters.hl7v2.context import MappingContext
from adapters.hl7v2.datatypes import codeable_concept, date_only, date_time
from adapters.hl7v2.errors import MissingRequiredError
from adapters.hl7v2.message import Composite
from adapters.hl7v2.patient import PatientRef

__all__ = ["add_allergies", "add_conditions"]

# Table 0127 allergen type -> AllergyIntolerance.category; table 0128 severity -> criticality.
_ALLERGY_CATEGORY = {
    "DA": "medication",
    "FA": "food",
    "EA": "environment",
    "AA": "environment",
    "PA": "environment",
    "LA": "environment",
}
_CRITICALITY = {"SV": "high", "MO": "low", "MI": "low", "U": "unable-to-assess"}
_ALLERGY_CLINICAL = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
_CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"


def add_allergies(ctx: MappingContext, patient: PatientRef) -> None:
    """AL1 rows as AllergyIntolerance, keyed by patient and allergen (AL1-3)."""
    system = ctx.systems.record_system(ctx.facility_id, "allergy")
    for al1 in ctx.message.all("AL1"):
        code = codeable_concept(al1.first(3))
        if code is None:
            raise al1.error(MissingRequiredError, "AL1-3 allergen code/description is empty", 3)
        value = f"{patient.value}/{al1.value(3, 1) or al1.value(3, 2)}"
        allergy: dict[str, Any] = {
            "resourceType": "AllergyIntolerance",
            "identifier": [{"system": system, "value": value}],
            "clinicalStatus": {"coding": [{"system": _ALLERGY_CLINICAL, "code": "active"}]},
            "code": code,
            "patient": patient.as_reference(),
        }
        category = _ALLERGY_CATEGORY.get(al1.value(2).upper())
        if category:
            allergy["category"] = [category]
        criticality = _CRITICALITY.get(al1.value(4).upper())
        if criticality:
            allergy["criticality"] = criticality
        onset = date_only(al1, 6)
        if onset:
            allergy["onsetDateTime"] = onset
        manifestations = [{"text": rep.get(1).strip()} for rep in al1.repetitions(5) if rep.get(1).strip()]
        if manifestations:
            allergy["reaction"] = [{"manifestation": manifestations}]
        ctx.builder.upsert(allergy, system, value)


def add_conditions(ctx: MappingContext, patient: PatientRef, encounter: tuple[str, str] | None) -> None:
    """DG1 rows as encounter-diagnosis Conditions, keyed by DG1-20 or by visit (else patient) and DG1-3 code.

    `encounter` is the (fullUrl, key value) of the visit the diagnoses belong to, if any.
    """
    system = ctx.systems.record_system(ctx.facility_id, "diagnosis")
    for dg1 in ctx.message.all("DG1"):
        ce = dg1.first(3)
        if ce.get(1).strip() and not ce.get(3).strip() and dg1.value(2):
            # DG1-2 (diagnosis coding method, withdrawn in v2.5) names the system older senders leave out of DG1-3.
            head = (*ce.parts[:2], *((("",),) * (2 - len(ce.parts[:2]))))
            ce = Composite((*head, (dg1.value(2),), *ce.parts[3:]))
        code = codeable_concept(ce) or ({"text": dg1.text(4)} if dg1.text(4) else None)
        if code is None:
            raise dg1.error(MissingRequiredError, "DG1-3 diagnosis code (or DG1-4 description) is empty", 3)
        owner = encounter[1] if encounter else patient.value
        value = dg1.value(20) or f"{owner}/{ce.get(1).strip() or dg1.text(4)}"
        condition: dict[str, Any] = {
            "resourceType": "Condition",
            "identifier": [{"system": system, "value": value}],
            "category": [{"coding": [{"system": _CONDITION_CATEGORY, "code": "encounter-diagnosis"}]}],
            "code": code,
            "subject": patient.as_reference(),
        }
        if encounter:
            condition["encounter"] = {"reference": encounter[0]}
        recorded = date_time(dg1, 5)
        if recorded:
            condition["recordedDate"] = recorded
        ctx.builder.upsert(condition, system, value)
