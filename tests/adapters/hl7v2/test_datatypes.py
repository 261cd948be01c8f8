"""HL7 v2 data types to FHIR: dates and times, names, addresses, telecom, coded values, numbers."""

from __future__ import annotations

import pytest

from adapters.hl7v2.datatypes import (
    address,
    codeable_concept,
    coding_system,
    contact_point,
    date_only,
    date_time,
    human_name,
    instant,
    number,
    practitioner_name,
)
from adapters.hl7v2.errors import InvalidValueError
from adapters.hl7v2.message import Composite, Segment
from adapters.hl7v2.parse import parse_message

HEADER = "MSH|^~\\&|WZHIS|450400-001|HIE|WZHIE|20240315093000+0800||ADT^A01|MSG1|P|2.5.1\r"


def _segment(text: str) -> Segment:
    return parse_message(HEADER + text).segments[1]


def _composite(text: str) -> Composite:
    return _segment("ZZZ|" + text).first(1)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024", "2024"),
        ("202403", "2024-03"),
        ("20240315", "2024-03-15"),
        ("2024031509", "2024-03-15T09:00:00+08:00"),
        ("202403150930", "2024-03-15T09:30:00+08:00"),
        ("20240315093005", "2024-03-15T09:30:05+08:00"),
        ("20240315093005.25+0800", "2024-03-15T09:30:05.25+08:00"),
        ("20240315093005-0500", "2024-03-15T09:30:05-05:00"),
        ("20240315+0800", "2024-03-15"),
    ],
)
def test_date_time(value: str, expected: str) -> None:
    assert date_time(_segment(f"EVN|A01|{value}"), 2) == expected


def test_date_only_and_instant() -> None:
    evn = _segment("EVN|A01|19580312083000|20240315")

    assert date_only(evn, 2) == "1958-03-12"
    assert instant(evn, 3) == "2024-03-15T00:00:00+08:00"
    assert date_time(evn, 4) is None


@pytest.mark.parametrize("value", ["20241315", "20240230", "2024-03-15", "20240315256000", "20240315+1500", "今天"])
def test_invalid_dates_name_the_field(value: str) -> None:
    with pytest.raises(InvalidValueError) as caught:
        date_time(_segment(f"PID|1||123||陈^建国||{value}"), 7)

    assert caught.value.location == "PID-7"
    assert value in caught.value.text


def test_invalid_date_in_a_component_names_the_component() -> None:
    with pytest.raises(InvalidValueError) as caught:
        instant(_segment("SCH|1|2|||||||||^^30^202404XX"), 11, 4)

    assert caught.value.location == "SCH-11.4"


def test_chinese_name_gets_text_family_name_first() -> None:
    assert human_name(_composite("陈^建国^^^^^L")) == {
        "use": "official",
        "text": "陈建国",
        "family": "陈",
        "given": ["建国"],
    }


def test_western_name_with_middle_prefix_and_degree() -> None:
    assert human_name(_composite("EVERYMAN&&&&Aniston^ADAM^A B^III^Dr.^MD^M")) == {
        "use": "maiden",
        "family": "EVERYMAN",
        "given": ["ADAM", "A", "B"],
        "prefix": ["Dr."],
        "suffix": ["III", "MD"],
    }


def test_empty_name_is_none() -> None:
    assert human_name(_composite("^^^^Dr.")) is None


def test_practitioner_name_skips_the_id() -> None:
    assert practitioner_name(_composite("D0012^黄^志明^^^主任医师")) == {
        "text": "黄志明",
        "family": "黄",
        "given": ["志明"],
        "prefix": ["主任医师"],
    }


def test_wuzhou_address_keeps_county_and_chinese_text() -> None:
    result = address(_composite("新兴二路8号^3栋2单元501室^梧州市^广西壮族自治区^543002^CHN^H^^长洲区"))

    assert result == {
        "use": "home",
        "text": "广西壮族自治区梧州市长洲区新兴二路8号3栋2单元501室",
        "line": ["新兴二路8号", "3栋2单元501室"],
        "city": "梧州市",
        "district": "长洲区",
        "state": "广西壮族自治区",
        "postalCode": "543002",
        "country": "CHN",
    }


def test_street_address_subcomponents_are_joined_and_mailing_is_postal() -> None:
    result = address(_composite("1000&Hospital Lane^Ste. 123^Ann Arbor^MI^99999^USA^M"))

    assert result is not None
    assert result["line"] == ["1000 Hospital Lane", "Ste. 123"]
    assert result["type"] == "postal"
    assert "use" not in result


@pytest.mark.parametrize(
    ("xtn", "default_use", "expected"),
    [
        ("13907740001^PRN^CP", "home", {"system": "phone", "value": "13907740001", "use": "mobile"}),
        ("0774-2020123^WPN^PH", "home", {"system": "phone", "value": "0774-2020123", "use": "work"}),
        ("0774-3825211", "work", {"system": "phone", "value": "0774-3825211", "use": "work"}),
        ("^NET^Internet^chen@example.cn", None, {"system": "email", "value": "chen@example.cn"}),
        ("^PRN^PH^^86^774^3825211^8", None, {"system": "phone", "value": "+86 774 3825211 ext. 8", "use": "home"}),
        ("^^FX^^^774^3825212", None, {"system": "fax", "value": "774 3825212"}),
    ],
)
def test_contact_point(xtn: str, default_use: str | None, expected: dict[str, str]) -> None:
    assert contact_point(_composite(xtn), default_use) == expected


def test_empty_contact_point_is_none() -> None:
    assert contact_point(_composite("^PRN^PH"), "home") is None


def test_codeable_concept_maps_known_systems_and_keeps_local_codes() -> None:
    concept = codeable_concept(_composite("I21.9^急性心肌梗死^I10^XNK01^心梗^99WZ"))

    assert concept == {
        "coding": [
            {"system": "http://hl7.org/fhir/sid/icd-10", "code": "I21.9", "display": "急性心肌梗死"},
            {"code": "XNK01", "display": "心梗"},
        ],
        "text": "急性心肌梗死",
    }


def test_codeable_concept_text_only_and_original_text() -> None:
    assert codeable_concept(_composite("^海鲜")) == {"text": "海鲜"}
    assert codeable_concept(_composite("882-1^ABO^LN^^^^2.73^^ABO血型"))["text"] == "ABO血型"
    assert codeable_concept(_composite("")) is None


@pytest.mark.parametrize(
    ("name", "system"),
    [
        ("LN", "http://loinc.org"),
        ("SCT", "http://snomed.info/sct"),
        ("I10", "http://hl7.org/fhir/sid/icd-10"),
        ("I9C", "http://hl7.org/fhir/sid/icd-9-cm"),
        ("UCUM", "http://unitsofmeasure.org"),
        ("HL70063", "http://terminology.hl7.org/CodeSystem/v2-0063"),
        ("L", None),
        ("99WZ", None),
    ],
)
def test_coding_system(name: str, system: str | None) -> None:
    assert coding_system(name) == system


@pytest.mark.parametrize(
    ("text", "expected"), [("11.2", 11.2), ("128", 128), ("-0.5", -0.5), (".5", 0.5), ("1e3", None), ("阳性", None)]
)
def test_number(text: str, expected: float | None) -> None:
    assert number(text) == expected
