"""Identifier systems: PID-3 type codes and authorities, facility ids, visit/order/appointment numbers."""

from __future__ import annotations

import pytest

from adapters.hl7v2.identifier_systems import (
    CITIZEN_CARD_SYSTEM,
    RESIDENT_ID_SYSTEM,
    SOCIAL_SECURITY_CARD_SYSTEM,
    IdentifierSystems,
)
from adapters.hl7v2.message import Composite
from adapters.hl7v2.parse import parse_message

HEADER = "MSH|^~\\&|WZHIS|450400-001|HIE|WZHIE|20240315093000+0800||ADT^A01|MSG1|P|2.5.1\r"
MRN = "https://hie.wuzhou.gov.cn/fhir/sid/mrn/450400-001"


def _composite(text: str) -> Composite:
    return parse_message(HEADER + "ZZZ|" + text).segments[1].first(1)


@pytest.mark.parametrize(
    ("cx", "system"),
    [
        ("450403195803120012^^^CHN^NI", RESIDENT_ID_SYSTEM),
        ("450403195803120012^^^^RI", RESIDENT_ID_SYSTEM),
        ("450403195803120012^^^^CN", RESIDENT_ID_SYSTEM),
        ("450403195803120012^^^^NNCHN", RESIDENT_ID_SYSTEM),
        ("A12345678^^^^SS", SOCIAL_SECURITY_CARD_SYSTEM),
        ("4504001234567890^^^^CZ", CITIZEN_CARD_SYSTEM),
        ("0012345678^^^450400-001^MR", MRN),
        ("0012345678^^^HIS^PI", MRN),
        ("0012345678", MRN),
        ("14^^^LAB&2.16.840.1.114222.4.3&ISO^PI", "urn:oid:2.16.840.1.114222.4.3"),
        ("14^^^LAB&2.16.1&HCD^MR", MRN),
        ("G1234567^^^^PPN", None),
    ],
)
def test_patient_system(cx: str, system: str | None) -> None:
    assert IdentifierSystems().patient_system(_composite(cx), "450400-001") == system


def test_caller_maps_authorities_and_types() -> None:
    systems = IdentifierSystems(
        authority_systems={"WZYB": "https://example.org/yb"},
        type_systems={"PPN": "urn:oid:2.16.156.10011.1.4"},
    )

    assert systems.patient_system(_composite("1^^^WZYB^MR"), "450400-001") == "https://example.org/yb"
    assert systems.patient_system(_composite("G1^^^^PPN"), "450400-001") == "urn:oid:2.16.156.10011.1.4"
    assert systems.patient_system(_composite("4504^^^^NI"), "450400-001") is None


@pytest.mark.parametrize(
    ("hd", "facility_id"),
    [
        ("450400-001", "450400-001"),
        ("GOOD HEALTH HOSPITAL", "GOOD-HEALTH-HOSPITAL"),
        ("梧州市红十字会医院^2.16.156.10011.1.5.450400001^ISO", "2.16.156.10011.1.5.450400001"),
        ("梧州市红十字会医院", None),
    ],
)
def test_facility_id(hd: str, facility_id: str | None) -> None:
    assert IdentifierSystems().facility_id(_composite(hd)) == facility_id


def test_facility_ids_mapping_wins() -> None:
    systems = IdentifierSystems(facility_ids={"梧州市红十字会医院": "450400-001"})

    assert systems.facility_id(_composite("梧州市红十字会医院")) == "450400-001"


def test_entity_systems_separate_fillers_within_a_facility() -> None:
    systems = IdentifierSystems()
    lab = systems.entity_system("filler-order", _composite("L240315^WZ LIS"), "450400-001")
    pacs = systems.entity_system("filler-order", _composite("L240315^PACS"), "450400-001")
    oid = systems.entity_system("filler-order", _composite("986^LAB^2.16.840.1.114222^ISO"), "450400-001")

    assert lab == "https://hie.wuzhou.gov.cn/fhir/sid/filler-order/450400-001/WZ-LIS"
    assert pacs != lab
    assert oid == "urn:oid:2.16.840.1.114222"


def test_record_and_visit_systems_are_per_facility() -> None:
    systems = IdentifierSystems()

    assert systems.visit_system("450400-001") != systems.visit_system("450400-002")
    assert systems.record_system("450400-001", "allergy").endswith("/450400-001/allergy")
