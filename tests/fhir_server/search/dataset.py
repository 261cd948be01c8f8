"""A small, fixed data set covering every parameter type, stored under readable ids."""

from __future__ import annotations

from typing import Any

from ehr_archive.identifiers import (
    CITIZEN_CARD_SYSTEM,
    NCMS_CARD_SYSTEM,
    RESIDENT_ID_SYSTEM,
    SOCIAL_SECURITY_CARD_SYSTEM,
    mrn_system,
    resident_id_check_char,
)

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
MRN_SYSTEM = mrn_system("org-hongshizi")
RESIDENT_ID = "45040319800501001" + resident_id_check_char("45040319800501001")
OTHER_RESIDENT_ID = "45040319500101001" + resident_id_check_char("45040319500101001")

REGIONAL_IDENTIFIERS = {
    RESIDENT_ID_SYSTEM: RESIDENT_ID,
    NCMS_CARD_SYSTEM: "4504000012345678",
    CITIZEN_CARD_SYSTEM: "880012345678",
    SOCIAL_SECURITY_CARD_SYSTEM: "K12345678",
    MRN_SYSTEM: "MR-0001",
}


def _ref(target: str) -> dict[str, str]:
    return {"reference": target}


def _quantity(value: float, code: str) -> dict[str, Any]:
    return {"value": value, "unit": code, "system": UCUM, "code": code}


def _code(code: str, system: str = LOINC, display: str | None = None) -> dict[str, Any]:
    coding = {"system": system, "code": code, **({"display": display} if display else {})}
    return {"coding": [coding]}


RESOURCES: list[dict[str, Any]] = [
    {
        "resourceType": "Organization",
        "id": "org-weijian",
        "name": "Wuzhou Health Commission",
        "identifier": [{"system": "urn:oid:2.16.156.10011.1.5", "value": "WZ-0000"}],
    },
    {
        "resourceType": "Organization",
        "id": "org-hongshizi",
        "name": "梧州市红十字会医院",
        "alias": ["Wuzhou Red Cross Hospital"],
        "partOf": _ref("Organization/org-weijian"),
        "address": [{"city": "梧州市", "district": "万秀区"}],
    },
    {"resourceType": "Practitioner", "id": "dr-li", "name": [{"family": "李", "given": ["四"]}]},
    {
        "resourceType": "Patient",
        "id": "zhangsan",
        "meta": {
            "tag": [{"system": "urn:test:tag", "code": "vip"}],
            "profile": ["https://hie.wuzhou.gov.cn/fhir/StructureDefinition/cn-patient"],
            "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}],
            "source": "https://his.example.org/hongshizi",
        },
        "identifier": [{"system": system, "value": value} for system, value in REGIONAL_IDENTIFIERS.items()],
        "active": True,
        "name": [{"family": "张", "given": ["三"]}],
        "telecom": [{"system": "phone", "value": "0774-1234567"}],
        "gender": "male",
        "birthDate": "1980-05-01",
        "address": [{"city": "梧州市", "district": "万秀区", "line": ["新兴二路 1 号"]}],
        "generalPractitioner": [_ref("Practitioner/dr-li")],
        "managingOrganization": _ref("Organization/org-hongshizi"),
    },
    {
        "resourceType": "Patient",
        "id": "muller",
        "identifier": [
            {
                "type": {"coding": [{"system": V2_0203, "code": "MR"}], "text": "Medical record number"},
                "system": "urn:test:mrn",
                "value": "MRN-2",
            },
            {"system": "urn:test:escape", "value": "a|b,c$d"},
        ],
        "active": False,
        "name": [{"family": "Müller", "given": ["Ängela"]}, {"family": "Smith, Jr", "given": ["Ann"]}],
        "gender": "female",
        "birthDate": "1975-12",
        "managingOrganization": _ref("Organization/org-hongshizi"),
    },
    {
        "resourceType": "Patient",
        "id": "shan",
        "name": [{"family": "单", "given": ["田芳"]}],
        "gender": "other",
        "birthDate": "2001-02-03",
    },
    {
        "resourceType": "Encounter",
        "id": "enc-1",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
        "subject": _ref("Patient/zhangsan"),
        "serviceProvider": _ref("Organization/org-hongshizi"),
        "period": {"start": "2024-01-01T08:00:00+08:00", "end": "2024-01-03"},
    },
    {
        "resourceType": "Observation",
        "id": "bp-1",
        "status": "final",
        "category": [_code("vital-signs", "http://terminology.hl7.org/CodeSystem/observation-category")],
        "code": _code("8480-6", display="Systolic blood pressure"),
        "subject": _ref("Patient/zhangsan"),
        "encounter": _ref("Encounter/enc-1"),
        "performer": [_ref("Practitioner/dr-li")],
        "effectiveDateTime": "2024-01-02T10:00:00+08:00",
        "valueQuantity": _quantity(120, "mm[Hg]"),
    },
    {
        "resourceType": "Observation",
        "id": "bp-2",
        "status": "final",
        "code": _code("8480-6"),
        "subject": _ref("Patient/zhangsan"),
        "effectivePeriod": {"start": "2024-02-01", "end": "2024-02-02"},
        "valueQuantity": _quantity(135.5, "mm[Hg]"),
    },
    {
        "resourceType": "Observation",
        "id": "weight",
        "status": "preliminary",
        "code": {"coding": [{"system": LOINC, "code": "29463-7"}], "text": "Body weight"},
        "subject": _ref("Patient/muller"),
        "effectiveDateTime": "2023-06-15",
        "valueQuantity": _quantity(72, "kg"),
    },
    {
        "resourceType": "Observation",
        "id": "panel",
        "status": "final",
        "code": _code("85354-9"),
        "subject": _ref("Patient/muller"),
        "effectiveDateTime": "2024-03-01T12:00:00Z",
        "component": [
            {"code": _code("8480-6"), "valueQuantity": _quantity(150, "mm[Hg]")},
            {"code": _code("8462-4"), "valueQuantity": _quantity(95, "mm[Hg]")},
        ],
    },
    {
        "resourceType": "Observation",
        "id": "dipstick",
        "status": "final",
        "code": {"text": "Urine dipstick"},
        "subject": _ref("Patient/shan"),
        "valueString": "negative",
    },
    {
        "resourceType": "Observation",
        "id": "remote",
        "status": "final",
        "code": _code("8480-6"),
        "subject": {"reference": "http://other.example.org/fhir/Patient/999"},
        "effectiveDateTime": "2024-01-05",
    },
    {
        "resourceType": "Observation",
        "id": "by-identifier",
        "status": "final",
        "code": _code("8480-6"),
        "subject": {"identifier": {"system": RESIDENT_ID_SYSTEM, "value": OTHER_RESIDENT_ID}},
    },
    {
        "resourceType": "Location",
        "id": "loc-wuzhou",
        "name": "梧州市红十字会医院门诊楼",
        "position": {"latitude": 23.4769, "longitude": 111.2790},
    },
    {"resourceType": "Location", "id": "loc-guangzhou", "position": {"latitude": 23.1291, "longitude": 113.2644}},
    {"resourceType": "Location", "id": "loc-beijing", "position": {"latitude": 39.9042, "longitude": 116.4074}},
    {
        "resourceType": "List",
        "id": "list-1",
        "status": "current",
        "mode": "working",
        "entry": [{"item": _ref("Observation/bp-1")}, {"item": _ref("Observation/weight")}],
    },
    {
        "resourceType": "Provenance",
        "id": "prov-1",
        "target": [_ref("Observation/bp-1")],
        "recorded": "2024-01-02T10:05:00+08:00",
        "agent": [{"who": _ref("Practitioner/dr-li")}],
    },
    {"resourceType": "ValueSet", "id": "vs-a", "url": "https://hie.wuzhou.gov.cn/fhir/ValueSet/a", "status": "active"},
    {
        "resourceType": "ValueSet",
        "id": "vs-a-sub",
        "url": "https://hie.wuzhou.gov.cn/fhir/ValueSet/a/sub",
        "status": "draft",
    },
    {
        "resourceType": "RiskAssessment",
        "id": "risk-low",
        "status": "final",
        "subject": _ref("Patient/zhangsan"),
        "prediction": [{"probabilityDecimal": 0.25}],
    },
    {
        "resourceType": "RiskAssessment",
        "id": "risk-high",
        "status": "final",
        "subject": _ref("Patient/muller"),
        "prediction": [{"probabilityDecimal": 0.7}],
    },
]
