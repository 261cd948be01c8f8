"""A small demo data set for the embedded default: Wuzhou institutions, residents and their vital signs."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from ehr_archive.identifiers import RESIDENT_ID_SYSTEM, mrn_system, resident_id_check_char
from fhir_server.service import FhirService
from fhir_server.storage.engine import unit_of_work

ORG_SYSTEM = "https://hie.wuzhou.gov.cn/fhir/sid/organization"
RESIDENT_ID = RESIDENT_ID_SYSTEM


def _resident_id(region: str, birth: str, sequence: str) -> str:
    first17 = region + birth + sequence
    return first17 + resident_id_check_char(first17)


_ORGANIZATIONS = [
    ("450400-001", "梧州市红十字会医院", "万秀区"),
    ("450400-002", "梧州市人民医院", "长洲区"),
    ("450400-003", "苍梧县人民医院", "苍梧县"),
]

_RESIDENTS = [
    (_resident_id("450405", "19580312", "001"), "陈", "建国", "male", "1958-03-12", "长洲区", "13907740001"),
    (_resident_id("450403", "19651123", "002"), "李", "秀英", "female", "1965-11-23", "万秀区", "13907740002"),
    (_resident_id("450421", "19470707", "001"), "黄", "德明", "male", "1947-07-07", "苍梧县", "13907740003"),
    (_resident_id("450422", "19720915", "004"), "梁", "桂芳", "female", "1972-09-15", "藤县", "13907740004"),
    (_resident_id("450481", "19880101", "001"), "莫", "伟", "male", "1988-01-01", "岑溪市", "13907740005"),
]


def _organization(code: str, name: str, district: str) -> dict[str, Any]:
    return {
        "resourceType": "Organization",
        "identifier": [{"system": ORG_SYSTEM, "value": code}],
        "active": True,
        "name": name,
        "address": [{"city": "梧州市", "district": district, "state": "广西壮族自治区", "country": "CN"}],
    }


def _patient(resident: tuple[str, ...], org_ref: str, mrn: str) -> dict[str, Any]:
    id_number, family, given, gender, birth, district, phone = resident
    return {
        "resourceType": "Patient",
        "identifier": [
            {"system": mrn_system(org_ref.split("/")[1]), "value": mrn},
            {"system": RESIDENT_ID, "value": id_number},
        ],
        "name": [{"use": "official", "text": family + given, "family": family, "given": [given]}],
        "gender": gender,
        "birthDate": birth,
        "telecom": [{"system": "phone", "value": phone, "use": "mobile"}],
        "address": [{"city": "梧州市", "district": district, "state": "广西壮族自治区", "country": "CN"}],
        "managingOrganization": {"reference": org_ref},
    }


def _blood_pressure(patient_ref: str, when: str, systolic: int, diastolic: int) -> dict[str, Any]:
    loinc = "http://loinc.org"
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [
            {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}
                ]
            }
        ],
        "code": {"coding": [{"system": loinc, "code": "85354-9", "display": "Blood pressure panel"}], "text": "血压"},
        "subject": {"reference": patient_ref},
        "effectiveDateTime": when,
        "component": [
            {
                "code": {"coding": [{"system": loinc, "code": "8480-6"}]},
                "valueQuantity": {
                    "value": systolic,
                    "unit": "mmHg",
                    "system": "http://unitsofmeasure.org",
                    "code": "mm[Hg]",
                },
            },
            {
                "code": {"coding": [{"system": loinc, "code": "8462-4"}]},
                "valueQuantity": {
                    "value": diastolic,
                    "unit": "mmHg",
                    "system": "http://unitsofmeasure.org",
                    "code": "mm[Hg]",
                },
            },
        ],
    }


def load_demo(engine: Engine, service: FhirService) -> int:
    """Load the demo set; conditional creates make it safe to run again. Returns resources created."""
    created = 0
    with unit_of_work(engine) as conn:
        org_refs = []
        for org in _ORGANIZATIONS:
            outcome = service.create(conn, _organization(*org), if_none_exist=f"identifier={ORG_SYSTEM}|{org[0]}")
            created += outcome.created
            org_refs.append(f"Organization/{outcome.version.res_id}")
        for index, resident in enumerate(_RESIDENTS):
            # The institution's own record, found again by its medical record number: the resident ID number
            # is also on the golden Patient the master patient index keeps for the resident.
            org_ref = org_refs[index % len(org_refs)]
            mrn = f"MZ{index + 1:06d}"
            outcome = service.create(
                conn,
                _patient(resident, org_ref, mrn),
                if_none_exist=f"identifier={mrn_system(org_ref.split('/')[1])}|{mrn}",
            )
            created += outcome.created
            if outcome.created:
                ref = f"Patient/{outcome.version.res_id}"
                for day, (sys_bp, dia_bp) in enumerate([(128, 82), (142, 91), (135, 86)], start=1):
                    service.create(conn, _blood_pressure(ref, f"2026-11-{day:02d}T08:30:00+08:00", sys_bp, dia_bp))
                    created += 1
    return created
