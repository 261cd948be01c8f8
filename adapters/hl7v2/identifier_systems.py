"""Identifier systems for HL7 v2 feeds (CX, EI, HD: v2.5.1 §2.A.14, §2.A.25, §2.A.33), spelled in one place.

The region's own systems come from its identifier module; this module adds the HL7 feed namespaces.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from adapters.hl7v2.message import Composite
from ehr_archive.identifiers import (
    CITIZEN_CARD_SYSTEM,
    MRN_SYSTEM_PREFIX,
    NCMS_CARD_SYSTEM,
    RESIDENT_ID_SYSTEM,
    SID_BASE,
    SOCIAL_SECURITY_CARD_SYSTEM,
)

__all__ = [
    "CITIZEN_CARD_SYSTEM",
    "DEFAULT_TYPE_SYSTEMS",
    "FACILITY_SYSTEM",
    "MRN_SYSTEM_PREFIX",
    "NCMS_CARD_SYSTEM",
    "RESIDENT_ID_SYSTEM",
    "SID_BASE",
    "SOCIAL_SECURITY_CARD_SYSTEM",
    "IdentifierSystems",
]

FACILITY_SYSTEM = SID_BASE + "organization"

# Keys of records copied from a sending facility's feed: one namespace per facility (and per filler application).
_VISIT_PREFIX = SID_BASE + "visit/"
_PRACTITIONER_PREFIX = SID_BASE + "practitioner/"
_LOCATION_PREFIX = SID_BASE + "location/"
_RECORD_PREFIX = SID_BASE + "hl7v2-record/"
_MESSAGE_PREFIX = SID_BASE + "hl7v2-message/"
_ENTITY_PREFIXES = {
    "placer-order": SID_BASE + "placer-order/",
    "filler-order": SID_BASE + "filler-order/",
    "placer-appointment": SID_BASE + "placer-appointment/",
    "filler-appointment": SID_BASE + "filler-appointment/",
}

# HL7 table 0203 identifier type codes the region gives a system of its own ("CN"/"RI" as local HIS send them).
DEFAULT_TYPE_SYSTEMS: Mapping[str, str] = MappingProxyType(
    {
        "NNCHN": RESIDENT_ID_SYSTEM,
        "NI": RESIDENT_ID_SYSTEM,
        "RI": RESIDENT_ID_SYSTEM,
        "CN": RESIDENT_ID_SYSTEM,
        "SS": SOCIAL_SECURITY_CARD_SYSTEM,
        "SN": NCMS_CARD_SYSTEM,
        "CZ": CITIZEN_CARD_SYSTEM,
    }
)
# Table 0203 types that are the sending institution's own patient number.
MRN_TYPES = frozenset({"", "MR", "MRN", "PI", "PT"})
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_NOT_ID_CHARS = re.compile(r"[^A-Za-z0-9\-.]+")
_OID = re.compile(r"[0-2](\.(0|[1-9][0-9]*))+")


@dataclass(frozen=True)
class IdentifierSystems:
    """How a feed's identifiers become systems: CX-4 authorities and CX-5 type codes to systems, MSH-4 to the
    Organization id of MRN and record-key systems; the caller adds what it knows about its senders."""

    authority_systems: Mapping[str, str] = field(default_factory=dict)
    type_systems: Mapping[str, str] = field(default_factory=lambda: DEFAULT_TYPE_SYSTEMS)
    facility_ids: Mapping[str, str] = field(default_factory=dict)

    def facility_id(self, facility: Composite) -> str | None:
        """An Organization id for a sending facility (HD); None when nothing usable is given."""
        namespace, universal_id = facility.get(1).strip(), facility.get(2).strip()
        for key in (namespace, universal_id):
            if key and key in self.facility_ids:
                return self.facility_ids[key]
        slug = _NOT_ID_CHARS.sub("-", namespace).strip("-")[:64]
        if slug:
            return slug
        return universal_id if _FHIR_ID.fullmatch(universal_id) else None

    def patient_system(self, cx: Composite, facility_id: str) -> str | None:
        """The system of a patient identifier (CX); None when the sender's namespace is unknown."""
        authority = cx.sub(4)
        for key in (authority.get(1).strip(), authority.get(2).strip()):
            if key and key in self.authority_systems:
                return self.authority_systems[key]
        type_code = cx.get(5).strip().upper()
        if type_code in self.type_systems:
            return self.type_systems[type_code]
        oid = _oid(authority)
        if oid:
            return oid
        if type_code in MRN_TYPES:
            return self.mrn_system(facility_id)
        return None

    def mrn_system(self, facility_id: str) -> str:
        """The medical-record-number system of one institution."""
        return MRN_SYSTEM_PREFIX + facility_id

    def visit_system(self, facility_id: str) -> str:
        """Visit numbers (PV1-19, PV1-50) of one institution."""
        return _VISIT_PREFIX + facility_id

    def practitioner_system(self, xcn: Composite, facility_id: str) -> str:
        """Staff numbers (XCN-1), by XCN-9 assigning authority OID or else the institution."""
        return _oid(xcn.sub(9)) or _PRACTITIONER_PREFIX + facility_id

    def location_system(self, facility_id: str) -> str:
        """Points of care, rooms and beds (PL) of one institution."""
        return _LOCATION_PREFIX + facility_id

    def entity_system(self, kind: str, ei: Composite, facility_id: str) -> str:
        """Order and appointment numbers (EI): the EI-3 OID when given, else per institution and EI-2 namespace.

        `kind` is one of placer-order, filler-order, placer-appointment, filler-appointment.
        """
        oid = _oid(Composite(((ei.get(2),), (ei.get(3),), (ei.get(4),))))
        if oid:
            return oid
        namespace = _NOT_ID_CHARS.sub("-", ei.get(2).strip()).strip("-")
        base = _ENTITY_PREFIXES[kind] + facility_id
        return f"{base}/{namespace}" if namespace else base

    def record_system(self, facility_id: str, kind: str) -> str:
        """Keys of records without a number of their own (NK1, AL1, DG1, IN1 rows), per institution and kind."""
        return f"{_RECORD_PREFIX}{facility_id}/{kind}"

    def message_system(self, facility_id: str) -> str:
        """Message control IDs (MSH-10) of one institution, naming a message as a Provenance entity."""
        return _MESSAGE_PREFIX + facility_id


def _oid(hd: Composite) -> str | None:
    universal_id, universal_type = hd.get(2).strip(), hd.get(3).strip().upper()
    if universal_type == "ISO" and _OID.fullmatch(universal_id):
        return "urn:oid:" + universal_id
    return None
