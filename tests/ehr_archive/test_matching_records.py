"""A Patient folded into a PersonRecord: identifiers, phones, Chinese addresses, names."""

from __future__ import annotations

from datetime import date

from ehr_archive.identifiers import (
    CITIZEN_CARD_SYSTEM,
    NCMS_CARD_SYSTEM,
    RESIDENT_ID_SYSTEM,
    mrn_system,
)
from ehr_archive.matching import person_record_from_patient
from ehr_archive.matching.records import normalize_phone, parse_address

WUZHOU_MALE = "450403198501011236"


def test_patient_fields_are_folded() -> None:
    record = person_record_from_patient(
        {
            "resourceType": "Patient",
            "id": "p1",
            "identifier": [
                {"system": mrn_system("wz-org-001"), "value": "000123"},
                {"system": RESIDENT_ID_SYSTEM, "value": WUZHOU_MALE},
                {"system": NCMS_CARD_SYSTEM, "value": "4504030012345678"},
                {"system": CITIZEN_CARD_SYSTEM, "value": "4504 0000 1234 5678"},
            ],
            "name": [{"use": "official", "text": "陳偉"}],
            "gender": "male",
            "birthDate": "1985-01-01",
            "telecom": [{"system": "phone", "value": "+86 138-0774-1234"}, {"system": "email", "value": "a@b.c"}],
            "address": [{"use": "home", "district": "万秀区", "line": ["城东镇", "新安村委会", "12号"]}],
        }
    )
    assert record.record_id == "p1"
    assert record.name.text == "陈伟"
    assert (record.birth_date, record.sex) == (date(1985, 1, 1), "male")
    assert record.resident_id == WUZHOU_MALE and record.resident_id_raw is None
    assert record.cards == {("ncms-card", "4504030012345678"), ("citizen-card", "4504000012345678")}
    assert record.phones == {"13807741234"}
    assert (record.district, record.township, record.village) == ("450403", "城东镇", "新安村")


def test_valid_id_number_fills_missing_birth_date_and_sex() -> None:
    record = person_record_from_patient({"identifier": [{"system": RESIDENT_ID_SYSTEM, "value": "450403850101123"}]})
    assert record.resident_id == WUZHOU_MALE
    assert (record.birth_date, record.sex) == (date(1985, 1, 1), "male")


def test_invalid_id_number_is_kept_raw_for_typo_comparison() -> None:
    record = person_record_from_patient(
        {"identifier": [{"system": RESIDENT_ID_SYSTEM, "value": "450403198501011237"}], "birthDate": "1985-01"}
    )
    assert record.resident_id is None and record.resident_id_raw == "450403198501011237"
    assert record.birth_date is None


def test_old_names_and_addresses_are_not_compared() -> None:
    record = person_record_from_patient(
        {
            "name": [{"use": "old", "text": "李四"}, {"text": "李思"}],
            "address": [{"use": "old", "text": "藤县藤州镇"}, {"text": "岑溪市岑城镇"}],
        }
    )
    assert record.name.text == "李思"
    assert (record.district, record.township) == ("450481", "岑城镇")


def test_chinese_name_wins_over_a_pinyin_name() -> None:
    record = person_record_from_patient({"name": [{"family": "Li", "given": ["Si"]}, {"text": "李思"}]})
    assert record.name.text == "李思"


def test_phone_numbers_are_normalised() -> None:
    assert normalize_phone("0086 13912345678") == "13912345678"
    assert normalize_phone("0774-3812345") == "07743812345"
    assert normalize_phone("3812345") == "07743812345"
    assert normalize_phone("020-12345678") == "02012345678"
    assert normalize_phone("12345") is None


def test_address_text_is_split_into_district_township_and_village() -> None:
    assert parse_address({"text": "广西壮族自治区梧州市龙圩区大坡镇石桥村3号"}) == ("450406", "大坡镇", "石桥村")
    assert parse_address({"text": "梧州市萬秀區城東街道新興社區"}) == ("450403", "城东街道", "新兴社区")
    assert parse_address({"district": "蒙山县", "line": ["长坪瑶族乡", "上坪村"]}) == ("450423", "长坪瑶族乡", "上坪村")
    assert parse_address({"district": "青秀区", "line": ["南湖街道"]}) == ("青秀区", "南湖街道", "")
    assert parse_address({}) == ("", "", "")
