"""The mapping context: the sending facility (MSH-4, else MSH-3) and the Provenance that closes a Bundle."""

from __future__ import annotations

import pytest

from adapters.hl7v2.context import MappingContext
from adapters.hl7v2.errors import InvalidValueError, MissingRequiredError
from adapters.hl7v2.identifier_systems import IdentifierSystems
from adapters.hl7v2.parse import parse_message
from tests.adapters.hl7v2.samples import message_bytes

TEMPLATE = "MSH|^~\\&|{app}|{facility}|HIE|WZHIE|{when}||ORU^R01|MSG1|P|2.4\rPID|1||123^^^^MR"


def _context(systems: IdentifierSystems | None = None, **fields: str) -> MappingContext:
    values = {"app": "WZLIS", "facility": "450400-001", "when": "20240315093000+0800", **fields}
    return MappingContext.for_message(parse_message(TEMPLATE.format(**values)), systems or IdentifierSystems())


def test_facility_comes_from_msh4() -> None:
    context = _context()

    assert context.facility_id == "450400-001"
    assert context.facility_reference == {
        "identifier": {"system": "https://hie.wuzhou.gov.cn/fhir/sid/organization", "value": "450400-001"},
        "display": "450400-001",
    }


def test_empty_msh4_falls_back_to_the_sending_application() -> None:
    assert _context(facility="").facility_id == "WZLIS"


def test_no_sender_at_all_is_missing_msh4() -> None:
    with pytest.raises(MissingRequiredError) as caught:
        _context(app="", facility="")

    assert caught.value.location == "MSH-4"


def test_chinese_facility_name_needs_a_configured_id() -> None:
    with pytest.raises(InvalidValueError) as caught:
        _context(facility="梧州市红十字会医院")
    assert caught.value.location == "MSH-4"

    systems = IdentifierSystems(facility_ids={"梧州市红十字会医院": "450400-001"})
    context = _context(systems, facility="梧州市红十字会医院")
    assert context.facility_id == "450400-001"
    assert context.facility_reference["display"] == "梧州市红十字会医院"


def test_provenance_names_facility_message_and_event() -> None:
    context = MappingContext.for_message(parse_message(message_bytes("adt_a01.hl7")), IdentifierSystems())

    provenance = context.finish()["entry"][-1]["resource"]

    assert provenance["recorded"] == "2024-03-15T09:30:00+08:00"
    assert provenance["agent"][0]["who"]["identifier"]["value"] == "450400-001"
    assert provenance["entity"][0]["what"]["identifier"] == {
        "system": "https://hie.wuzhou.gov.cn/fhir/sid/hl7v2-message/450400-001",
        "value": "A01-20240315-0001",
    }
    assert provenance["activity"]["coding"][0]["code"] == "A01"


def test_message_time_is_required_for_provenance() -> None:
    with pytest.raises(MissingRequiredError) as caught:
        _context(when="").finish()

    assert caught.value.location == "MSH-7"
