"""Every identifier system of the Wuzhou region, defined once, with validators (GB 11643-1999, ISO 7064).

Identifiers always travel as `system` + `value`; this module is the only place a system URI is spelled.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any, Literal

__all__ = [
    "CITIZEN_CARD_SYSTEM",
    "IDENTIFIER_SYSTEMS",
    "MRN_SYSTEM_PREFIX",
    "NCMS_CARD_SYSTEM",
    "PROVINCES",
    "RESIDENT_ID_SYSTEM",
    "SID_BASE",
    "SOCIAL_SECURITY_CARD_SYSTEM",
    "WUZHOU_REGIONS",
    "IdentifierError",
    "IdentifierIssue",
    "IdentifierReport",
    "IdentifierSystem",
    "ResidentId",
    "convert_legacy_resident_id",
    "identifier_system",
    "is_valid_resident_id",
    "mrn_organization_id",
    "mrn_system",
    "normalize_identifier_value",
    "parse_resident_id",
    "resident_id_check_char",
    "validate_identifier",
    "validate_patient_identifiers",
]

Sex = Literal["male", "female"]

# Resident identity card number (公民身份号码), OID assigned in the national health information standards.
RESIDENT_ID_SYSTEM = "urn:oid:2.16.156.10011.1.3"
# Systems owned by the exchange itself live under one naming base; nothing else may be minted there.
SID_BASE = "https://hie.wuzhou.gov.cn/fhir/sid/"
NCMS_CARD_SYSTEM = SID_BASE + "ncms-card"
SOCIAL_SECURITY_CARD_SYSTEM = SID_BASE + "social-security-card"
CITIZEN_CARD_SYSTEM = SID_BASE + "citizen-card"
MRN_SYSTEM_PREFIX = SID_BASE + "mrn/"

_CHINA = timezone(timedelta(hours=8))
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_MRN_VALUE = re.compile(r"[0-9A-Za-z\-_.]{1,40}")
_CARD_VALUE = re.compile(r"[0-9]{10,20}")
_SOCIAL_CARD_VALUE = re.compile(r"[0-9A-Z]{9}")
_SEPARATORS = re.compile(r"[\s\-]+")

# GB/T 2260 province-level codes; 81/82/83 are the residence permits of Hong Kong, Macao and Taiwan residents.
PROVINCES: dict[str, str] = {
    "11": "北京市", "12": "天津市", "13": "河北省", "14": "山西省", "15": "内蒙古自治区",
    "21": "辽宁省", "22": "吉林省", "23": "黑龙江省",
    "31": "上海市", "32": "江苏省", "33": "浙江省", "34": "安徽省", "35": "福建省", "36": "江西省", "37": "山东省",
    "41": "河南省", "42": "湖北省", "43": "湖南省", "44": "广东省", "45": "广西壮族自治区", "46": "海南省",
    "50": "重庆市", "51": "四川省", "52": "贵州省", "53": "云南省", "54": "西藏自治区",
    "61": "陕西省", "62": "甘肃省", "63": "青海省", "64": "宁夏回族自治区", "65": "新疆维吾尔自治区",
    "71": "台湾省", "81": "香港特别行政区", "82": "澳门特别行政区", "83": "台湾地区居民居住证",
}  # fmt: skip

# GB/T 2260 codes of Wuzhou, current and historical: an ID number keeps the code of its first registration.
WUZHOU_REGIONS: dict[str, str] = {
    "450400": "梧州市",
    "450401": "梧州市市辖区",
    "450403": "万秀区",
    "450404": "蝶山区",  # merged into 万秀区/长洲区 in 2013
    "450405": "长洲区",
    "450406": "龙圩区",
    "450411": "梧州市市郊区",  # before 2003
    "450421": "苍梧县",
    "450422": "藤县",
    "450423": "蒙山县",
    "450481": "岑溪市",
    "452400": "梧州地区",  # prefecture before 1997
    "452421": "岑溪县",
    "452423": "藤县",
    "452425": "蒙山县",
}

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK_CHARS = "10X98765432"


class IdentifierError(ValueError):
    """An identifier value that breaks a named rule of its system."""

    def __init__(self, rule: str, message: str, value: str = "") -> None:
        super().__init__(message)
        self.rule = rule
        self.value = value


@dataclass(frozen=True)
class IdentifierSystem:
    """One identifier system of the region: its URI, names and HL7 v2 table 0203 type code."""

    key: str
    uri: str
    display: str
    display_zh: str
    type_code: str


IDENTIFIER_SYSTEMS: dict[str, IdentifierSystem] = {
    s.uri: s
    for s in (
        IdentifierSystem("resident-id", RESIDENT_ID_SYSTEM, "Resident identity card number", "居民身份证号码", "NNCHN"),
        IdentifierSystem(
            "ncms-card", NCMS_CARD_SYSTEM, "NCMS / urban-rural resident medical insurance card", "城乡居民医保卡", "SN"
        ),
        IdentifierSystem(
            "social-security-card",
            SOCIAL_SECURITY_CARD_SYSTEM,
            "Employee medical insurance / social security card",
            "社会保障卡",
            "SS",
        ),
        IdentifierSystem("citizen-card", CITIZEN_CARD_SYSTEM, "Wuzhou citizen card", "梧州市民卡", "CZ"),
    )
}
_MRN = IdentifierSystem("mrn", MRN_SYSTEM_PREFIX, "Medical record number", "病案号", "MR")


@dataclass(frozen=True)
class ResidentId:
    """A parsed resident identity number (GB 11643-1999 §5)."""

    number: str
    region_code: str
    province: str
    region: str | None
    birth_date: date
    sex: Sex
    sequence: str
    legacy: bool = False


def mrn_system(organization_id: str) -> str:
    """The medical-record-number system of the institution whose Organization has this logical id."""
    if not _FHIR_ID.fullmatch(organization_id or ""):
        raise IdentifierError("organization-id", f"not a FHIR Organization id: {organization_id!r}", organization_id)
    return MRN_SYSTEM_PREFIX + organization_id


def mrn_organization_id(system: str) -> str | None:
    """The Organization id behind an MRN system URI, or None when the URI is not an MRN system."""
    if not system.startswith(MRN_SYSTEM_PREFIX):
        return None
    organization_id = system[len(MRN_SYSTEM_PREFIX) :]
    return organization_id if _FHIR_ID.fullmatch(organization_id) else None


def identifier_system(system: str | None) -> IdentifierSystem | None:
    """The regional definition of a system URI (MRN systems included), or None for a foreign system."""
    if not system:
        return None
    if system.startswith(MRN_SYSTEM_PREFIX):
        return _MRN
    return IDENTIFIER_SYSTEMS.get(system)


def resident_id_check_char(first17: str) -> str:
    """The ISO 7064 MOD 11-2 check character for the first 17 digits of an ID number."""
    if len(first17) != 17 or not first17.isascii() or not first17.isdigit():
        raise IdentifierError("charset", "the check character is computed over exactly 17 digits", first17)
    total = sum(int(digit) * weight for digit, weight in zip(first17, _WEIGHTS, strict=True))
    return _CHECK_CHARS[total % 11]


def convert_legacy_resident_id(value: str) -> str:
    """Convert a 15-digit first-generation number to 18 digits: insert '19' and add the check char (GB 11643 §A)."""
    value = value.strip()
    if len(value) != 15 or not value.isascii() or not value.isdigit():
        raise IdentifierError("length", "a legacy resident ID number has exactly 15 digits", value)
    first17 = value[:6] + "19" + value[6:]
    return first17 + resident_id_check_char(first17)


def parse_resident_id(value: str, *, today: date | None = None, allow_legacy: bool = True) -> ResidentId:
    """Parse and check a resident ID number (GB 11643-1999): check char, birth date, region code, sex."""
    raw = _SEPARATORS.sub("", value or "").upper()
    if not raw:
        raise IdentifierError("empty", "the resident ID number is empty", value)
    legacy = len(raw) == 15
    if legacy:
        if not allow_legacy:
            raise IdentifierError("length", "a 15-digit legacy number is not accepted here; send 18 digits", value)
        if not raw.isascii() or not raw.isdigit():
            raise IdentifierError("charset", "a legacy resident ID number has only digits", value)
        raw = raw[:6] + "19" + raw[6:]
        raw += resident_id_check_char(raw)
    elif len(raw) != 18:
        raise IdentifierError("length", f"a resident ID number has 18 characters, not {len(raw)}", value)
    body, check = raw[:17], raw[17]
    if not body.isascii() or not body.isdigit() or check not in "0123456789X":
        raise IdentifierError("charset", "a resident ID number is 17 digits and a check digit or X", value)
    expected = resident_id_check_char(body)
    if check != expected:
        raise IdentifierError("check-char", f"check character is {check}, ISO 7064 MOD 11-2 gives {expected}", value)
    birth = _birth_date(raw[6:14], value, today)
    region_code = raw[:6]
    province = _region(region_code, value)
    return ResidentId(
        number=raw,
        region_code=region_code,
        province=province,
        region=WUZHOU_REGIONS.get(region_code),
        birth_date=birth,
        sex="male" if int(raw[16]) % 2 else "female",
        sequence=raw[14:17],
        legacy=legacy,
    )


def is_valid_resident_id(value: str, *, today: date | None = None) -> bool:
    """True when `value` is a valid 18-digit resident ID number (GB 11643-1999)."""
    try:
        parse_resident_id(value, today=today, allow_legacy=False)
    except IdentifierError:
        return False
    return True


def normalize_identifier_value(system: str, value: str) -> str:
    """The canonical spelling of a value: separators removed, upper case; legacy ID numbers become 18 digits."""
    spec = identifier_system(system)
    if spec is None or spec.key == "mrn":
        return (value or "").strip()
    compact = _SEPARATORS.sub("", value or "").upper()
    if spec.key == "resident-id" and len(compact) == 15 and compact.isdigit():
        return convert_legacy_resident_id(compact)
    return compact


def validate_identifier(system: str, value: str, *, today: date | None = None) -> str:
    """Check a value against the rules of its regional system; return its canonical spelling or raise."""
    spec = identifier_system(system)
    if spec is None:
        raise IdentifierError("unknown-system", f"{system!r} is not an identifier system of the region", value)
    if spec.key == "resident-id":
        return parse_resident_id(value, today=today).number
    if spec.key == "mrn" and mrn_organization_id(system) is None:
        raise IdentifierError("organization-id", f"MRN system {system!r} does not end in an Organization id", value)
    canonical = normalize_identifier_value(system, value)
    if not canonical:
        raise IdentifierError("empty", f"the {spec.display.lower()} is empty", value)
    pattern, rule_text = {
        "ncms-card": (_CARD_VALUE, "10 to 20 digits"),
        "citizen-card": (_CARD_VALUE, "10 to 20 digits"),
        "social-security-card": (_SOCIAL_CARD_VALUE, "9 letters or digits (the printed card number)"),
        "mrn": (_MRN_VALUE, "1 to 40 letters, digits, '-', '_' or '.'"),
    }[spec.key]
    if not pattern.fullmatch(canonical):
        raise IdentifierError("format", f"a {spec.display.lower()} is {rule_text}", value)
    return canonical


def _birth_date(digits: str, value: str, today: date | None) -> date:
    try:
        born = date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
    except ValueError:
        raise IdentifierError("birth-date", f"embedded birth date {digits} is not a calendar date", value) from None
    if born.year < 1900:
        raise IdentifierError("birth-date", f"embedded birth date {born.isoformat()} is before 1900", value)
    if born > (today or datetime.now(_CHINA).date()):
        raise IdentifierError("birth-date", f"embedded birth date {born.isoformat()} is in the future", value)
    return born


def _region(code: str, value: str) -> str:
    province = PROVINCES.get(code[:2])
    if province is None:
        raise IdentifierError("region", f"region code {code} does not start with a GB/T 2260 province code", value)
    if code[:2] in ("81", "82", "83") and code[2:] != "0000":
        raise IdentifierError("region", f"residence-permit region code must be {code[:2]}0000, not {code}", value)
    if code.startswith("4504") and code not in WUZHOU_REGIONS:
        raise IdentifierError("region", f"region code {code} is not a Wuzhou county code (GB/T 2260)", value)
    return province


@dataclass(frozen=True)
class IdentifierIssue:
    """One finding on a Patient identifier, shaped like an OperationOutcome.issue (FHIR R4B §2.37)."""

    severity: Literal["error", "warning"]
    code: str
    rule: str
    diagnostics: str
    expression: tuple[str, ...]

    def to_fhir(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "code": self.code,
            "diagnostics": self.diagnostics,
            "expression": list(self.expression),
        }


@dataclass(frozen=True)
class IdentifierReport:
    """The errors (reject) and warnings (accept, tell) found on a Patient's identifiers."""

    errors: tuple[IdentifierIssue, ...] = ()
    warnings: tuple[IdentifierIssue, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.errors


def validate_patient_identifiers(patient: Mapping[str, Any], *, today: date | None = None) -> IdentifierReport:
    """Validate every Patient.identifier of a regional system; warn where an ID number contradicts the Patient."""
    errors: list[IdentifierIssue] = []
    warnings: list[IdentifierIssue] = []
    resident_ids: dict[str, int] = {}
    for index, identifier in enumerate(patient.get("identifier") or []):
        if not isinstance(identifier, Mapping):
            continue
        path = f"Patient.identifier[{index}]"
        system, value = identifier.get("system"), identifier.get("value")
        spec = identifier_system(system)
        if spec is None:
            if isinstance(system, str) and system.startswith(SID_BASE):
                errors.append(
                    _issue("error", "invalid", "unknown-system", f"{system} is not defined", f"{path}.system")
                )
            continue
        if not isinstance(value, str) or not value.strip():
            errors.append(_issue("error", "required", "empty", f"{spec.display} has no value", f"{path}.value"))
            continue
        try:
            canonical = validate_identifier(system, value, today=today)
        except IdentifierError as error:
            where = f"{path}.system" if error.rule == "organization-id" else f"{path}.value"
            errors.append(_issue("error", "value", error.rule, f"{spec.display}: {error}", where))
            continue
        if spec.key != "resident-id":
            continue
        parsed = parse_resident_id(canonical, today=today)
        if len(_SEPARATORS.sub("", value)) == 15:
            text = f"legacy 15-digit number; its 18-digit form is {canonical}"
            warnings.append(_issue("warning", "value", "legacy", text, f"{path}.value"))
        elif value != canonical:
            text = f"write the number as {canonical}"
            warnings.append(_issue("warning", "value", "not-canonical", text, f"{path}.value"))
        warnings.extend(_contradictions(patient, parsed, path))
        if identifier.get("use") != "old":
            resident_ids.setdefault(canonical, index)
    if len(resident_ids) > 1:
        paths = tuple(f"Patient.identifier[{i}].value" for i in resident_ids.values())
        warnings.append(
            _issue("warning", "business-rule", "conflicting-ids", "more than one current resident ID number", *paths)
        )
    return IdentifierReport(tuple(errors), tuple(warnings))


def _contradictions(patient: Mapping[str, Any], parsed: ResidentId, path: str) -> list[IdentifierIssue]:
    found: list[IdentifierIssue] = []
    birth_date, gender, born = patient.get("birthDate"), patient.get("gender"), parsed.birth_date.isoformat()
    if isinstance(birth_date, str) and birth_date and not born.startswith(birth_date):
        text = f"ID number gives birth date {born}, Patient.birthDate is {birth_date}"
        found.append(
            _issue("warning", "business-rule", "birth-date-mismatch", text, f"{path}.value", "Patient.birthDate")
        )
    if gender in ("male", "female") and gender != parsed.sex:
        text = f"ID number gives sex {parsed.sex}, Patient.gender is {gender}"
        found.append(_issue("warning", "business-rule", "sex-mismatch", text, f"{path}.value", "Patient.gender"))
    return found


def _issue(severity: Literal["error", "warning"], code: str, rule: str, text: str, *where: str) -> IdentifierIssue:
    return IdentifierIssue(severity, code, rule, text, tuple(where))
