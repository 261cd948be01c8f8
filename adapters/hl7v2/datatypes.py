"""HL7 v2.5.1 data types (chapter 2A) as FHIR R4B data types: DTM, XPN, XCN, XAD, XTN, CWE, CX, NM."""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from adapters.hl7v2.errors import InvalidValueError
from adapters.hl7v2.message import Composite, Segment

__all__ = [
    "REGION_UTC_OFFSET",
    "address",
    "codeable_concept",
    "coding_system",
    "contact_point",
    "date_only",
    "date_time",
    "human_name",
    "instant",
    "name_display",
    "number",
    "practitioner_name",
    "table_coding",
]

# China Standard Time (no daylight saving): the offset of a DTM that carries a time of day but no offset.
REGION_UTC_OFFSET = "+08:00"

_DTM = re.compile(
    r"(?P<y>\d{4})(?:(?P<mo>\d{2})(?:(?P<d>\d{2})(?:(?P<h>\d{2})(?:(?P<mi>\d{2})"
    r"(?:(?P<s>\d{2})(?P<f>\.\d{1,6})?)?)?)?)?)?(?P<tz>[+-]\d{4})?"
)
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_HL7_TABLE = re.compile(r"HL7(\d{4})")

# HL7 table 0396 coding system names as FHIR code system URIs (FHIR R4B terminologies page, HL7 THO).
_CODING_SYSTEMS = {
    "LN": "http://loinc.org",
    "LOINC": "http://loinc.org",
    "SCT": "http://snomed.info/sct",
    "SNM": "http://snomed.info/sct",
    "SNOMED": "http://snomed.info/sct",
    "I10": "http://hl7.org/fhir/sid/icd-10",
    "ICD10": "http://hl7.org/fhir/sid/icd-10",
    "I10C": "http://hl7.org/fhir/sid/icd-10-cm",
    "ICD10CM": "http://hl7.org/fhir/sid/icd-10-cm",
    "I9": "http://hl7.org/fhir/sid/icd-9-cm",
    "I9C": "http://hl7.org/fhir/sid/icd-9-cm",
    "I9CDX": "http://hl7.org/fhir/sid/icd-9-cm",
    "UCUM": "http://unitsofmeasure.org",
    "C4": "http://www.ama-assn.org/go/cpt",
    "CPT": "http://www.ama-assn.org/go/cpt",
    "NDC": "http://hl7.org/fhir/sid/ndc",
    "RXNORM": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "CVX": "http://hl7.org/fhir/sid/cvx",
    "ISO3166_1": "urn:iso:std:iso:3166",
    "ISO639": "urn:ietf:bcp:47",
}

# Table 0200 name type -> name-use.
_NAME_USE = {"L": "official", "D": "usual", "A": "usual", "M": "maiden", "N": "nickname", "S": "anonymous"}
# Table 0190 address type -> (Address.use, Address.type).
_ADDRESS_USE = {
    "H": ("home", None),
    "P": ("home", None),
    "L": ("home", None),
    "RH": ("home", None),
    "B": ("work", None),
    "O": ("work", None),
    "C": ("temp", None),
    "V": ("temp", None),
    "BA": ("old", None),
    "M": (None, "postal"),
    "SH": (None, "postal"),
}
# Table 0202 equipment type -> ContactPoint.system; table 0201 use code -> ContactPoint.use.
_EQUIPMENT = {
    "PH": "phone",
    "CP": "phone",
    "FX": "fax",
    "BP": "pager",
    "INTERNET": "email",
    "X.400": "email",
    "MD": "other",
    "TDD": "other",
    "TTY": "other",
}
_TELECOM_USE = {"PRN": "home", "ORN": "home", "VHN": "temp", "WPN": "work"}


def coding_system(name: str) -> str | None:
    """The FHIR system URI of a table 0396 coding system name (`HL7nnnn` -> v2 table), or None if local."""
    key = name.strip().upper().replace("-", "").replace(" ", "")
    table = _HL7_TABLE.fullmatch(key)
    if table:
        return f"http://terminology.hl7.org/CodeSystem/v2-{table.group(1)}"
    return _CODING_SYSTEMS.get(key)


def table_coding(table: str, code: str, display: str = "") -> dict[str, Any]:
    """A Coding in an HL7-defined v2 table (THO `v2-nnnn` code systems)."""
    coding = {"system": f"http://terminology.hl7.org/CodeSystem/v2-{table}", "code": code}
    if display:
        coding["display"] = display
    return coding


def codeable_concept(cwe: Composite) -> dict[str, Any] | None:
    """CE/CWE/CNE (§2.A.6, §2.A.13, §2.A.8): identifier, text and system, the alternate triplet, CWE-9 original text."""
    codings = []
    for code_at, text_at, system_at, version_at in ((1, 2, 3, 7), (4, 5, 6, 8)):
        code = cwe.get(code_at).strip()
        if not code:
            continue
        coding: dict[str, Any] = {}
        system = coding_system(cwe.get(system_at))
        if system:
            coding["system"] = system
        if cwe.get(version_at).strip():
            coding["version"] = cwe.get(version_at).strip()
        coding["code"] = code
        if cwe.get(text_at).strip():
            coding["display"] = cwe.get(text_at).strip()
        codings.append(coding)
    text = cwe.get(9).strip() or cwe.get(2).strip() or cwe.get(5).strip()
    concept: dict[str, Any] = {}
    if codings:
        concept["coding"] = codings
    if text:
        concept["text"] = text
    return concept or None


def human_name(xpn: Composite) -> dict[str, Any] | None:
    """XPN (§2.A.88): family, given and middle names, prefix, suffix and degree, table 0200 name type.

    A Chinese name also gets `text`, family name first and without spaces (张伟).
    """
    family = xpn.get(1).strip()
    given = [part for part in (xpn.get(2).strip(), *xpn.get(3).split()) if part]
    name: dict[str, Any] = {}
    use = _NAME_USE.get(xpn.get(7).strip().upper())
    if use:
        name["use"] = use
    if _CJK.search(family + "".join(given)):
        name["text"] = family + "".join(given)
    if family:
        name["family"] = family
    if given:
        name["given"] = given
    if xpn.get(5).strip():
        name["prefix"] = [xpn.get(5).strip()]
    suffix = [part for part in (xpn.get(4).strip(), xpn.get(6).strip()) if part]
    if suffix:
        name["suffix"] = suffix
    return name if family or given else None


def name_display(name: dict[str, Any] | None) -> str:
    """How a HumanName reads in a Reference display: its Chinese `text`, else given names then family name."""
    if not name:
        return ""
    return name.get("text") or " ".join([*name.get("given", []), name.get("family", "")]).strip()


def practitioner_name(xcn: Composite) -> dict[str, Any] | None:
    """The name inside an XCN (§2.A.86): components 2-7 and the component-10 name type."""
    positions = (2, 3, 4, 5, 6, 7, 10)
    return human_name(Composite(tuple((xcn.get(i),) for i in positions)))


def address(xad: Composite) -> dict[str, Any] | None:
    """XAD (§2.A.85): street lines, city, county/district (XAD-9), province, postcode, country, table 0190.

    A Chinese address also gets `text` in Chinese order: province, city, district, street.
    """
    street = " ".join(part.strip() for part in xad.subcomponents(1) if part.strip())
    lines = [part for part in (street, xad.get(2).strip()) if part]
    fields = {
        "city": xad.get(3).strip(),
        "district": xad.get(9).strip() or xad.get(8).strip(),
        "state": xad.get(4).strip(),
        "postalCode": xad.get(5).strip(),
        "country": xad.get(6).strip(),
    }
    if not lines and not any(fields.values()):
        return None
    result: dict[str, Any] = {}
    use, address_type = _ADDRESS_USE.get(xad.get(7).strip().upper(), (None, None))
    if use:
        result["use"] = use
    if address_type:
        result["type"] = address_type
    joined = fields["state"] + fields["city"] + fields["district"] + "".join(lines)
    if _CJK.search(joined):
        result["text"] = joined
    if lines:
        result["line"] = lines
    result.update({key: value for key, value in fields.items() if value})
    return result


def contact_point(xtn: Composite, default_use: str | None = None) -> dict[str, Any] | None:
    """XTN (§2.A.89): number or e-mail, table 0201 use and table 0202 equipment (CP is a mobile phone)."""
    equipment = xtn.get(3).strip().upper()
    use_code = xtn.get(2).strip().upper()
    email = xtn.get(4).strip() or (xtn.get(1).strip() if "@" in xtn.get(1) else "")
    system = _EQUIPMENT.get(equipment) or ("email" if email and (use_code == "NET" or not equipment) else "phone")
    number_text = xtn.get(1).strip() or xtn.get(12).strip() or _composed_number(xtn)
    value = email if system == "email" else number_text
    if not value:
        return None
    point: dict[str, Any] = {"system": system, "value": value}
    use = "mobile" if equipment == "CP" else _TELECOM_USE.get(use_code, default_use if not use_code else None)
    if use:
        point["use"] = use
    return point


def _composed_number(xtn: Composite) -> str:
    country, area, local, extension = (xtn.get(i).strip() for i in (5, 6, 7, 8))
    number = " ".join(part for part in (f"+{country}" if country else "", area, local) if part)
    if number and extension:
        number += f" ext. {extension}"
    return number


def number(text: str) -> int | float | None:
    """An NM value (§2.A.47) as a JSON number, or None when the text is not a number."""
    text = text.strip()
    if not _NUMBER.fullmatch(text):
        return None
    if "." in text:
        return float(text)
    return int(text)


def date_time(segment: Segment, field: int, component: int = 1) -> str | None:
    """A DTM/TS value (§2.A.22) as a FHIR dateTime, precision kept; a time without offset gets +08:00."""
    return _convert(segment, field, component, "dateTime")


def date_only(segment: Segment, field: int, component: int = 1) -> str | None:
    """The calendar date of a DT/DTM value, as a FHIR date (birth dates, effective dates)."""
    return _convert(segment, field, component, "date")


def instant(segment: Segment, field: int, component: int = 1) -> str | None:
    """A DTM value as a FHIR instant: missing time parts become zero, a missing offset +08:00."""
    return _convert(segment, field, component, "instant")


def _convert(segment: Segment, field: int, component: int, kind: str) -> str | None:
    text = segment.value(field, component)
    if not text:
        return None
    match = _DTM.fullmatch(text)
    try:
        if match is None:
            raise ValueError(text)
        return _format(match, kind)
    except ValueError:
        raise segment.error(
            InvalidValueError,
            f"{text!r} is not a date/time (YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ])",
            field,
            component=component if component > 1 else None,
        ) from None


def _format(match: re.Match[str], kind: str) -> str:
    year, month, day = match["y"], match["mo"], match["d"]
    date(int(year), int(month or 1), int(day or 1))
    offset = REGION_UTC_OFFSET
    if match["tz"]:
        sign, hours, minutes = match["tz"][0], int(match["tz"][1:3]), int(match["tz"][3:5])
        if minutes > 59 or hours > 14 or (hours == 14 and minutes):
            raise ValueError("offset out of range")
        offset = f"{sign}{hours:02d}:{minutes:02d}"
    if kind == "date" or (kind == "dateTime" and match["h"] is None):
        return "-".join(part for part in (year, month, day) if part)
    hour, minute, second = match["h"] or "00", match["mi"] or "00", match["s"] or "00"
    if int(hour) > 23 or int(minute) > 59 or int(second) > 59:
        raise ValueError("time out of range")
    return f"{year}-{month or '01'}-{day or '01'}T{hour}:{minute}:{second}{match['f'] or ''}{offset}"
