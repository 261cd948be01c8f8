"""PID, NK1 and IN1 as Patient, RelatedPerson and Coverage."""

from __future__ import annotations

import pytest

from adapters.hl7v2.errors import InvalidValueError, MissingRequiredError
from adapters.hl7v2.identifier_systems import RESIDENT_ID_SYSTEM
from tests.adapters.hl7v2.samples import assert_valid_bundle, entry_for, map_sample

MRN = "https://hie.wuzhou.gov.cn/fhir/sid/mrn/450400-001"


def test_patient_from_a_utf8_admission() -> None:
    entry = entry_for(map_sample("adt_a01.hl7"), "Patient")
    patient = entry["resource"]

    assert entry["request"] == {"method": "PUT", "url": f"Patient?identifier={MRN}|0012345678"}
    assert [(i["system"], i["value"]) for i in patient["identifier"]] == [
        (MRN, "0012345678"),
        (RESIDENT_ID_SYSTEM, "450403195803120012"),
    ]
    assert patient["identifier"][1]["type"]["coding"][0]["code"] == "NI"
    assert patient["name"][0] == {"use": "official", "text": "陈建国", "family": "陈", "given": ["建国"]}
    assert patient["name"][1] == {"use": "official", "family": "Chen", "given": ["Jianguo"]}
    assert patient["gender"] == "male"
    assert patient["birthDate"] == "1958-03-12"
    assert patient["deceasedBoolean"] is False
    assert patient["address"][0]["text"] == "广西壮族自治区梧州市长洲区新兴二路8号3栋2单元501室"
    assert patient["address"][0]["district"] == "长洲区"
    assert patient["telecom"] == [
        {"system": "phone", "value": "13907740001", "use": "mobile"},
        {"system": "phone", "value": "0774-3825211", "use": "home"},
        {"system": "phone", "value": "0774-2020123", "use": "work"},
    ]
    assert patient["maritalStatus"] == {
        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", "code": "M"}],
        "text": "已婚",
    }


def test_patient_from_a_gb18030_registration_uses_gb_t_2261_codes() -> None:
    patient = entry_for(map_sample("adt_a04_gb18030.hl7"), "Patient")["resource"]

    assert patient["identifier"][0]["system"] == "https://hie.wuzhou.gov.cn/fhir/sid/mrn/450400-002"
    assert patient["name"][0]["text"] == "梁桂芳"
    assert patient["gender"] == "female"
    assert patient["address"][0]["district"] == "藤县"


@pytest.mark.parametrize(
    ("code", "gender"), [("F", "female"), ("1", "male"), ("9", "unknown"), ("O", "other"), ("U", "unknown")]
)
def test_administrative_sex(code: str, gender: str) -> None:
    bundle = map_sample("adt_a01.hl7", ("|19580312|M|", f"|19580312|{code}|"))

    assert entry_for(bundle, "Patient")["resource"]["gender"] == gender


def test_unknown_sex_code_is_rejected_at_pid_8() -> None:
    with pytest.raises(InvalidValueError) as caught:
        map_sample("adt_a01.hl7", ("|19580312|M|", "|19580312|男|"))

    assert caught.value.location == "PID-8"
    assert caught.value.code == "103"


def test_marital_status_outside_the_tables_keeps_its_text() -> None:
    bundle = map_sample("adt_a01.hl7", ("20^已婚^GB/T2261.2", "Married"))

    assert entry_for(bundle, "Patient")["resource"]["maritalStatus"] == {"text": "Married"}


def test_resident_id_is_the_key_when_there_is_no_mrn() -> None:
    bundle = map_sample("adt_a01.hl7", ("0012345678^^^450400-001^MR~", ""))

    assert (
        entry_for(bundle, "Patient")["request"]["url"] == f"Patient?identifier={RESIDENT_ID_SYSTEM}|450403195803120012"
    )


def test_identifier_of_unknown_namespace_is_kept_without_system() -> None:
    bundle = map_sample("adt_a01.hl7", ("^^^CHN^NI", "^^^CHN^NI~G12345678^^^CHN^PPN"))

    identifiers = entry_for(bundle, "Patient")["resource"]["identifier"]
    assert identifiers[-1] == {
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "PPN"}]},
        "value": "G12345678",
        "assigner": {"display": "CHN"},
    }


def test_no_usable_identifier_is_missing_pid_3() -> None:
    replace = ("0012345678^^^450400-001^MR~450403195803120012^^^CHN^NI", "G12345678^^^CHN^PPN")
    with pytest.raises(MissingRequiredError) as caught:
        map_sample("adt_a01.hl7", replace)

    assert caught.value.location == "PID-3"


def test_next_of_kin_is_a_related_person() -> None:
    entry = entry_for(map_sample("adt_a01.hl7"), "RelatedPerson")
    person = entry["resource"]

    assert person["identifier"] == [
        {"system": "https://hie.wuzhou.gov.cn/fhir/sid/hl7v2-record/450400-001/related-person", "value": "0012345678/1"}
    ]
    assert person["patient"]["display"] == "陈建国"
    assert person["name"][0]["text"] == "李秀英"
    assert [r["coding"][0]["code"] for r in person["relationship"]] == ["SPO", "EMC"]
    assert person["telecom"] == [{"system": "phone", "value": "13907740002", "use": "mobile"}]
    assert entry["request"]["method"] == "PUT"


def test_insurance_is_a_coverage() -> None:
    coverage = entry_for(map_sample("adt_a01.hl7"), "Coverage")["resource"]

    assert coverage["identifier"][0]["value"] == "0012345678/450400/310"
    assert coverage["identifier"][1]["value"] == "450400778899"
    assert coverage["status"] == "active"
    assert coverage["payor"] == [
        {"type": "Organization", "identifier": {"value": "450400"}, "display": "梧州市医疗保障局"}
    ]
    assert coverage["relationship"]["coding"][0]["code"] == "self"
    assert coverage["period"] == {"start": "2024-01-01", "end": "2024-12-31"}
    assert coverage["class"][0]["value"] == "310"
    assert coverage["class"][0]["name"] == "城镇职工基本医疗保险"
    assert coverage["order"] == 1


def test_insurance_without_insurer_is_missing_in1_3() -> None:
    with pytest.raises(MissingRequiredError) as caught:
        map_sample("adt_a01.hl7", ("|450400^梧州市医疗保障局|梧州市医疗保障局|", "|||"))

    assert caught.value.location == "IN1-3"


def test_patient_bundle_validates() -> None:
    assert_valid_bundle(map_sample("adt_a01.hl7"))
