"""A Patient folded into the fields record linkage compares (Fellegi–Sunter 1969 §2: comparison space)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from ehr_archive.identifiers import (
    RESIDENT_ID_SYSTEM,
    WUZHOU_REGIONS,
    IdentifierError,
    identifier_system,
    normalize_identifier_value,
    parse_resident_id,
)
from ehr_archive.matching.chinese import ChineseName, parse_chinese_name, to_simplified

__all__ = [
    "CARD_KEYS",
    "PersonRecord",
    "normalize_phone",
    "parse_address",
    "person_record_from_patient",
]

CARD_KEYS = ("ncms-card", "social-security-card", "citizen-card")
WUZHOU_AREA_CODE = "0774"

# Current county-level names of Wuzhou (and 蝶山区, still written on old addresses) → GB/T 2260 code.
_DISTRICT_BY_NAME = {
    WUZHOU_REGIONS[code]: code
    for code in ("450403", "450404", "450405", "450406", "450421", "450422", "450423", "450481")
}
_DISTRICT_NAMES = sorted(_DISTRICT_BY_NAME, key=len, reverse=True)
_HAN = r"[\u4e00-\u9fff]"
_TOWNSHIP = re.compile(rf"({_HAN}{{1,6}}?(?:街道|镇|乡))")
_VILLAGE = re.compile(rf"({_HAN}{{1,6}}?(?:社区|村委会|居委会|村))")
_PREFIXES = ("广西壮族自治区", "广西", "梧州市", "梧州")
_NON_DIGIT = re.compile(r"\D")


@dataclass(frozen=True, slots=True)
class PersonRecord:
    """The normalized demographics of one Patient record, as compared and blocked by the MPI."""

    record_id: str
    name: ChineseName | None = None
    birth_date: date | None = None
    sex: str | None = None
    phones: frozenset[str] = frozenset()
    district: str = ""
    township: str = ""
    village: str = ""
    resident_id: str | None = None
    resident_id_raw: str | None = None
    resident_id_birth_date: date | None = None
    resident_id_sex: str | None = None
    cards: frozenset[tuple[str, str]] = frozenset()

    @property
    def card_map(self) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for key, value in self.cards:
            found.setdefault(key, set()).add(value)
        return found


def normalize_phone(value: str) -> str | None:
    """Digits of a Chinese phone number: 11-digit mobile without +86, or a landline with its area code."""
    digits = _NON_DIGIT.sub("", value or "")
    for prefix in ("0086", "86"):
        if digits.startswith(prefix) and len(digits) - len(prefix) in (11, 10, 12):
            digits = digits[len(prefix) :]
            break
    if len(digits) == 11 and digits.startswith("1"):
        return digits
    if len(digits) in (7, 8):
        return WUZHOU_AREA_CODE + digits
    if digits.startswith("0") and 10 <= len(digits) <= 12:
        return digits
    return None


def parse_address(address: Mapping[str, Any]) -> tuple[str, str, str]:
    """District code (GB/T 2260, when in Wuzhou), township (镇/乡/街道) and village (村/社区) of an Address."""
    lines = [x for x in address.get("line") or [] if isinstance(x, str)]
    text = to_simplified("".join(lines) or address.get("text") or "")
    district_text = to_simplified(address.get("district") or "")
    for prefix in _PREFIXES:
        text = text.removeprefix(prefix)
    district = _DISTRICT_BY_NAME.get(district_text, district_text)
    for name in _DISTRICT_NAMES:
        if text.startswith(name):
            district = district or _DISTRICT_BY_NAME[name]
            text = text[len(name) :]
            break
    township = village = ""
    found = _TOWNSHIP.match(text)
    if found:
        township = found.group(1)
        text = text[found.end() :]
    found = _VILLAGE.match(text)
    if found:
        village = found.group(1).removesuffix("委会") if found.group(1).endswith("村委会") else found.group(1)
    return district, township, village


def person_record_from_patient(patient: Mapping[str, Any], record_id: str | None = None) -> PersonRecord:
    """Fold a FHIR R4B Patient (JSON) into a PersonRecord; a valid ID number fills a missing birth date or sex."""
    birth_date = _birth_date(patient.get("birthDate"))
    sex = patient.get("gender") if patient.get("gender") in ("male", "female") else None
    resident_id = resident_id_raw = None
    id_birth = id_sex = None
    cards: set[tuple[str, str]] = set()
    for identifier in patient.get("identifier") or []:
        if not isinstance(identifier, Mapping) or not isinstance(identifier.get("value"), str):
            continue
        system, value = identifier.get("system"), identifier["value"]
        spec = identifier_system(system)
        if spec is None or not value.strip():
            continue
        canonical = normalize_identifier_value(system, value)
        if system == RESIDENT_ID_SYSTEM:
            try:
                parsed = parse_resident_id(canonical)
            except IdentifierError:
                resident_id_raw = resident_id_raw or canonical
                continue
            if resident_id is None or identifier.get("use") != "old":
                resident_id, id_birth, id_sex = parsed.number, parsed.birth_date, parsed.sex
        elif spec.key in CARD_KEYS:
            cards.add((spec.key, canonical))
    district = township = village = ""
    address = _home_address(patient.get("address") or [])
    if address is not None:
        district, township, village = parse_address(address)
    return PersonRecord(
        record_id=record_id if record_id is not None else str(patient.get("id") or ""),
        name=_name(patient.get("name") or []),
        birth_date=birth_date or id_birth,
        sex=sex or id_sex,
        phones=frozenset(_phones(patient.get("telecom") or [])),
        district=district,
        township=township,
        village=village,
        resident_id=resident_id,
        resident_id_raw=None if resident_id else resident_id_raw,
        resident_id_birth_date=id_birth,
        resident_id_sex=id_sex,
        cards=frozenset(cards),
    )


def _birth_date(value: Any) -> date | None:
    if not isinstance(value, str) or len(value) != 10:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def _name(names: list[Any]) -> ChineseName | None:
    usable = [n for n in names if isinstance(n, Mapping) and n.get("use") not in ("old", "maiden", "nickname")]
    parsed = []
    for name in usable:
        given = name.get("given") or []
        folded = parse_chinese_name(
            family=name.get("family") or "",
            given="".join(g for g in given if isinstance(g, str)),
            text=name.get("text") or "",
        )
        if folded is not None:
            parsed.append(folded)
    chinese = [n for n in parsed if n.surname]
    return (chinese or parsed or [None])[0]


def _phones(telecom: list[Any]) -> list[str]:
    found = []
    for point in telecom:
        if isinstance(point, Mapping) and point.get("system") in ("phone", "sms") and point.get("use") != "old":
            phone = normalize_phone(str(point.get("value") or ""))
            if phone:
                found.append(phone)
    return found


def _home_address(addresses: list[Any]) -> Mapping[str, Any] | None:
    usable = [a for a in addresses if isinstance(a, Mapping) and a.get("use") not in ("old", "billing")]
    home = [a for a in usable if a.get("use") == "home"]
    return (home or usable or [None])[0]
