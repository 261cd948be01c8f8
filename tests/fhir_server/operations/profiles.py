"""A blood-pressure profile exercising every rule the profile checker covers, and resources for it."""

from __future__ import annotations

import copy
from typing import Any

PROFILE_URL = "https://hie.wuzhou.gov.cn/fhir/StructureDefinition/test-blood-pressure"
VALUE_SET_URL = "https://hie.wuzhou.gov.cn/fhir/ValueSet/test-interpretation"
EXTENSION_URL = "https://hie.wuzhou.gov.cn/fhir/StructureDefinition/test-device-kind"
LOINC = "http://loinc.org"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"


def _component(name: str, code: str) -> list[dict[str, Any]]:
    base = f"Observation.component:{name}"
    return [
        {"id": base, "path": "Observation.component", "sliceName": name, "min": 1, "max": "1"},
        {
            "id": f"{base}.code",
            "path": "Observation.component.code",
            "patternCodeableConcept": {"coding": [{"system": LOINC, "code": code}]},
        },
        {
            "id": f"{base}.value[x]",
            "path": "Observation.component.value[x]",
            "min": 1,
            "type": [{"code": "Quantity"}],
            "constraint": [
                {
                    "key": f"{name}-1",
                    "severity": "error",
                    "human": "a plausible pressure",
                    "expression": "value < 300",
                }
            ],
        },
        {"id": f"{base}.value[x].code", "path": "Observation.component.value[x].code", "fixedCode": "mm[Hg]"},
    ]


def blood_pressure_profile() -> dict[str, Any]:
    elements: list[dict[str, Any]] = [
        {
            "id": "Observation",
            "path": "Observation",
            "constraint": [
                {"key": "bp-1", "severity": "error", "human": "needs a time", "expression": "effective.exists()"},
                {"key": "bp-2", "severity": "warning", "human": "has a note", "expression": "note.exists()"},
            ],
        },
        {
            "id": "Observation.extension",
            "path": "Observation.extension",
            "slicing": {"discriminator": [{"type": "value", "path": "url"}], "rules": "open"},
        },
        {
            "id": "Observation.extension:deviceKind",
            "path": "Observation.extension",
            "sliceName": "deviceKind",
            "min": 1,
            "max": "1",
            "type": [{"code": "Extension", "profile": [EXTENSION_URL]}],
        },
        {"id": "Observation.status", "path": "Observation.status", "fixedCode": "final"},
        {
            "id": "Observation.category",
            "path": "Observation.category",
            "min": 1,
            "slicing": {"discriminator": [{"type": "pattern", "path": "$this"}], "rules": "open"},
        },
        {
            "id": "Observation.category:VSCat",
            "path": "Observation.category",
            "sliceName": "VSCat",
            "min": 1,
            "max": "1",
            "patternCodeableConcept": {"coding": [{"system": CATEGORY, "code": "vital-signs"}]},
        },
        {
            "id": "Observation.code",
            "path": "Observation.code",
            "patternCodeableConcept": {"coding": [{"system": LOINC, "code": "85354-9"}]},
        },
        {
            "id": "Observation.subject",
            "path": "Observation.subject",
            "min": 1,
            "type": [{"code": "Reference", "targetProfile": ["http://hl7.org/fhir/StructureDefinition/Patient"]}],
        },
        {"id": "Observation.value[x]", "path": "Observation.value[x]", "max": "0"},
        {
            "id": "Observation.interpretation",
            "path": "Observation.interpretation",
            "binding": {"strength": "required", "valueSet": VALUE_SET_URL},
        },
        {
            "id": "Observation.component",
            "path": "Observation.component",
            "min": 2,
            "slicing": {"discriminator": [{"type": "pattern", "path": "code"}], "rules": "closed"},
        },
        *_component("systolic", "8480-6"),
        *_component("diastolic", "8462-4"),
    ]
    return {
        "resourceType": "StructureDefinition",
        "url": PROFILE_URL,
        "name": "TestBloodPressure",
        "status": "active",
        "kind": "resource",
        "abstract": False,
        "type": "Observation",
        "baseDefinition": "http://hl7.org/fhir/StructureDefinition/Observation",
        "derivation": "constraint",
        "differential": {"element": elements},
    }


def interpretation_value_set() -> dict[str, Any]:
    return {
        "resourceType": "ValueSet",
        "url": VALUE_SET_URL,
        "status": "active",
        "compose": {"include": [{"system": INTERPRETATION, "concept": [{"code": "N"}, {"code": "H"}]}]},
    }


def _quantity(value: float) -> dict[str, Any]:
    return {"value": value, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}


def blood_pressure(patient: str = "Patient/p1", *, systolic: float = 128, diastolic: float = 82) -> dict[str, Any]:
    return copy.deepcopy(
        {
            "resourceType": "Observation",
            "meta": {"profile": [PROFILE_URL]},
            "extension": [{"url": EXTENSION_URL, "valueString": "cuff"}],
            "status": "final",
            "category": [
                {"coding": [{"system": CATEGORY, "code": "vital-signs"}]},
                {"text": "home measurement"},
            ],
            "code": {"coding": [{"system": LOINC, "code": "85354-9", "display": "Blood pressure panel"}]},
            "subject": {"reference": patient},
            "effectiveDateTime": "2024-05-01T08:00:00+08:00",
            "note": [{"text": "seated"}],
            "interpretation": [{"coding": [{"system": INTERPRETATION, "code": "N"}]}],
            "component": [
                {"code": {"coding": [{"system": LOINC, "code": "8480-6"}]}, "valueQuantity": _quantity(systolic)},
                {"code": {"coding": [{"system": LOINC, "code": "8462-4"}]}, "valueQuantity": _quantity(diastolic)},
            ],
        }
    )
