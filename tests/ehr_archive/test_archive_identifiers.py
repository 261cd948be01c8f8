"""Regional identifier systems: GB 11643-1999 resident ID numbers, cards, MRNs and Patient identifier checks."""

from __future__ import annotations

from datetime import date

import pytest

from ehr_archive.identifiers import (
    CITIZEN_CARD_SYSTEM,
    NCMS_CARD_SYSTEM,
    RESIDENT_ID_SYSTEM,
    SID_BASE,
    SOCIAL_SECURITY_CARD_SYSTEM,
    IdentifierError,
    convert_legacy_resident_id,
    identifier_system,
    is_valid_resident_id,
    mrn_organization_id,
    mrn_system,
    normalize_identifier_value,
    parse_resident_id,
    resident_id_check_char,
    validate_identifier,
    validate_patient_identifiers,
)

TODAY = date(2025, 6, 30)
GB_EXAMPLE = "11010519491231002X"  # the worked example of GB 11643-1999
WUZHOU_MALE = "450403198501011236"  # 万秀区, 1985-01-01, sequence 123 (odd: male)


def with_check(first17: str) -> str:
    return first17 + resident_id_check_char(first17)


def test_check_char_follows_iso_7064_mod_11_2() -> None:
    # weights 7 9 10 5 8 4 2 1 6 3 7 9 10 5 8 4 2 over 11010519491231002 sum to 167; 167 mod 11 = 2 → 'X'
    assert resident_id_check_char("11010519491231002") == "X"
    assert resident_id_check_char("45040319850101123") == "6"


def test_valid_number_is_parsed_into_birth_date_sex_and_region() -> None:
    parsed = parse_resident_id(GB_EXAMPLE, today=TODAY)
    assert (parsed.birth_date, parsed.sex, parsed.province, parsed.region) == (
        date(1949, 12, 31),
        "female",
        "北京市",
        None,
    )
    wuzhou = parse_resident_id(WUZHOU_MALE, today=TODAY)
    assert (wuzhou.sex, wuzhou.region, wuzhou.region_code, wuzhou.sequence) == ("male", "万秀区", "450403", "123")
    assert not wuzhou.legacy


def test_historical_wuzhou_codes_are_known_regions() -> None:
    assert parse_resident_id(with_check("45242319600305002"), today=TODAY).region == "藤县"
    assert parse_resident_id(with_check("45040419700101001"), today=TODAY).region == "蝶山区"


@pytest.mark.parametrize(
    ("value", "rule", "words"),
    [
        ("110105194912310021", "check-char", "ISO 7064 MOD 11-2 gives X"),
        (with_check("45040319850230123"), "birth-date", "not a calendar date"),
        (with_check("45040318991231123"), "birth-date", "before 1900"),
        (with_check("45040320300101123"), "birth-date", "in the future"),
        (with_check("99040319850101123"), "region", "province code"),
        (with_check("45049919850101123"), "region", "not a Wuzhou county code"),
        (with_check("81000119850101123"), "region", "810000"),
        ("4504031985010112", "length", "18 characters, not 16"),
        ("45040319850101A236", "charset", "17 digits"),
        ("   ", "empty", "empty"),
    ],
)
def test_each_broken_rule_is_named(value: str, rule: str, words: str) -> None:
    with pytest.raises(IdentifierError) as caught:
        parse_resident_id(value, today=TODAY)
    assert caught.value.rule == rule
    assert words in str(caught.value)


def test_lower_case_x_and_separators_are_accepted_and_canonicalised() -> None:
    assert parse_resident_id("110105 19491231 002x", today=TODAY).number == GB_EXAMPLE
    assert normalize_identifier_value(RESIDENT_ID_SYSTEM, "11010519491231002x") == GB_EXAMPLE


def test_legacy_15_digit_number_converts_to_18_digits() -> None:
    assert convert_legacy_resident_id("450403850101123") == WUZHOU_MALE
    parsed = parse_resident_id("450403850101123", today=TODAY)
    assert parsed.legacy and parsed.number == WUZHOU_MALE and parsed.sex == "male"
    assert normalize_identifier_value(RESIDENT_ID_SYSTEM, "450403850101123") == WUZHOU_MALE
    with pytest.raises(IdentifierError, match="send 18 digits"):
        parse_resident_id("450403850101123", today=TODAY, allow_legacy=False)
    with pytest.raises(IdentifierError):
        convert_legacy_resident_id("45040385010112")


def test_sex_comes_from_the_seventeenth_digit() -> None:
    assert parse_resident_id(with_check("45042219900505011"), today=TODAY).sex == "male"
    assert parse_resident_id(with_check("45042219900505018"), today=TODAY).sex == "female"


def test_is_valid_requires_the_18_digit_form() -> None:
    assert is_valid_resident_id(WUZHOU_MALE, today=TODAY)
    assert not is_valid_resident_id("450403850101123", today=TODAY)
    assert not is_valid_resident_id("450403198501011237", today=TODAY)


def test_mrn_system_is_derived_from_the_organization_id() -> None:
    system = mrn_system("wz-org-001")
    assert system == "https://hie.wuzhou.gov.cn/fhir/sid/mrn/wz-org-001"
    assert mrn_organization_id(system) == "wz-org-001"
    assert identifier_system(system).type_code == "MR"
    assert mrn_organization_id(NCMS_CARD_SYSTEM) is None
    with pytest.raises(IdentifierError) as caught:
        mrn_system("bad id/with slash")
    assert caught.value.rule == "organization-id"


def test_every_regional_system_is_defined_once_with_a_type_code() -> None:
    codes = {identifier_system(s).type_code for s in (RESIDENT_ID_SYSTEM, NCMS_CARD_SYSTEM, CITIZEN_CARD_SYSTEM)}
    assert codes == {"NNCHN", "SN", "CZ"}
    assert identifier_system("http://example.org/other") is None


@pytest.mark.parametrize(
    ("system", "value", "canonical"),
    [
        (NCMS_CARD_SYSTEM, "4504220012 345678", "4504220012345678"),
        (CITIZEN_CARD_SYSTEM, "4504-0000-1234-5678", "4504000012345678"),
        (SOCIAL_SECURITY_CARD_SYSTEM, "a12345678", "A12345678"),
        (mrn_system("wz-org-002"), "ZY-000123", "ZY-000123"),
    ],
)
def test_card_and_mrn_values_are_checked_and_canonicalised(system: str, value: str, canonical: str) -> None:
    assert validate_identifier(system, value) == canonical


@pytest.mark.parametrize(
    ("system", "value", "rule"),
    [
        (NCMS_CARD_SYSTEM, "12345", "format"),
        (SOCIAL_SECURITY_CARD_SYSTEM, "A1234567", "format"),
        (mrn_system("wz-org-002"), "has space", "format"),
        (SID_BASE + "mrn/", "123", "organization-id"),
        (SID_BASE + "no-such-card", "123", "unknown-system"),
        (CITIZEN_CARD_SYSTEM, " ", "empty"),
    ],
)
def test_bad_card_and_mrn_values_are_rejected(system: str, value: str, rule: str) -> None:
    with pytest.raises(IdentifierError) as caught:
        validate_identifier(system, value)
    assert caught.value.rule == rule


def patient(*identifiers: dict, **fields: object) -> dict:
    return {"resourceType": "Patient", "identifier": list(identifiers), **fields}


def test_patient_with_sound_identifiers_has_no_findings() -> None:
    report = validate_patient_identifiers(
        patient(
            {"system": mrn_system("wz-org-001"), "value": "00012345"},
            {"system": RESIDENT_ID_SYSTEM, "value": WUZHOU_MALE},
            {"system": "http://example.org/foreign", "value": "anything goes"},
            birthDate="1985-01-01",
            gender="male",
        ),
        today=TODAY,
    )
    assert report.ok and report.errors == () and report.warnings == ()


def test_patient_identifier_errors_point_at_the_offending_element() -> None:
    report = validate_patient_identifiers(
        patient(
            {"system": mrn_system("wz-org-001"), "value": "00012345"},
            {"system": RESIDENT_ID_SYSTEM, "value": "450403198501011237"},
            {"system": SID_BASE + "unknown", "value": "1"},
            {"system": NCMS_CARD_SYSTEM},
            {"system": SID_BASE + "mrn/bad id", "value": "1"},
        ),
        today=TODAY,
    )
    assert not report.ok
    found = {(issue.rule, issue.expression) for issue in report.errors}
    assert found == {
        ("check-char", ("Patient.identifier[1].value",)),
        ("unknown-system", ("Patient.identifier[2].system",)),
        ("empty", ("Patient.identifier[3].value",)),
        ("organization-id", ("Patient.identifier[4].system",)),
    }
    first = report.errors[0].to_fhir()
    assert first["severity"] == "error" and first["code"] == "value"
    assert "Resident identity card number" in first["diagnostics"]


def test_birth_date_and_sex_contradicting_the_id_number_are_warnings() -> None:
    report = validate_patient_identifiers(
        patient({"system": RESIDENT_ID_SYSTEM, "value": WUZHOU_MALE}, birthDate="1985-10-01", gender="female"),
        today=TODAY,
    )
    assert report.ok
    assert {(w.rule, w.expression) for w in report.warnings} == {
        ("birth-date-mismatch", ("Patient.identifier[0].value", "Patient.birthDate")),
        ("sex-mismatch", ("Patient.identifier[0].value", "Patient.gender")),
    }
    assert all(w.to_fhir()["severity"] == "warning" for w in report.warnings)


def test_partial_birth_date_is_compared_at_its_precision() -> None:
    same_year = patient({"system": RESIDENT_ID_SYSTEM, "value": WUZHOU_MALE}, birthDate="1985")
    other_month = patient({"system": RESIDENT_ID_SYSTEM, "value": WUZHOU_MALE}, birthDate="1985-02")
    assert validate_patient_identifiers(same_year, today=TODAY).warnings == ()
    assert [w.rule for w in validate_patient_identifiers(other_month, today=TODAY).warnings] == ["birth-date-mismatch"]


def test_legacy_and_non_canonical_numbers_are_accepted_with_a_warning() -> None:
    report = validate_patient_identifiers(
        patient(
            {"system": RESIDENT_ID_SYSTEM, "value": "450403850101123"},
            {"system": RESIDENT_ID_SYSTEM, "value": "450403198501011236 "},
        ),
        today=TODAY,
    )
    assert report.ok
    assert [w.rule for w in report.warnings] == ["legacy", "not-canonical"]
    assert WUZHOU_MALE in report.warnings[0].diagnostics


def test_two_current_resident_ids_conflict_but_an_old_one_does_not() -> None:
    other = with_check("45042219900505011")
    conflicting = patient(
        {"system": RESIDENT_ID_SYSTEM, "value": WUZHOU_MALE}, {"system": RESIDENT_ID_SYSTEM, "value": other}
    )
    report = validate_patient_identifiers(conflicting, today=TODAY)
    assert [w.rule for w in report.warnings] == ["conflicting-ids"]
    assert report.warnings[0].expression == ("Patient.identifier[0].value", "Patient.identifier[1].value")
    retired = patient(
        {"system": RESIDENT_ID_SYSTEM, "value": WUZHOU_MALE},
        {"system": RESIDENT_ID_SYSTEM, "value": other, "use": "old"},
    )
    assert validate_patient_identifiers(retired, today=TODAY).warnings == ()
