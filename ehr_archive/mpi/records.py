"""Golden (master) Patients and the links between them and institutions' records: pure rules, no database.

Conventions (R4B Patient.link, patient.html#links): a source record points at its golden with ``refer`` ("not the
main source of information; consult the other"); the golden lists every source with ``seealso``. A merged-away
record or golden carries ``replaced-by`` and is inactive; the survivor carries ``replaces``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ehr_archive.identifiers import RESIDENT_ID_SYSTEM, IdentifierError, identifier_system, validate_identifier

MPI_SYSTEM = "https://hie.wuzhou.gov.cn/fhir/CodeSystem/mpi"
"""Our CodeSystem for the MPI: the golden-record tag, the review Task code, Provenance activities."""
GOLDEN_CODE = "golden-record"
GOLDEN_TAG = {"system": MPI_SYSTEM, "code": GOLDEN_CODE, "display": "Golden (master) Patient maintained by the MPI"}
IDENTITY_ELEMENTS = ("identifier", "name", "telecom", "gender", "birthDate", "address")
"""What a source record contributes to matching and to its golden."""


@dataclass(frozen=True)
class Member:
    """A source record linked to a golden: its identity elements and when they were last written."""

    source_id: str
    demographics: Mapping[str, Any]
    updated_at: int
    active: bool = True


def is_golden(resource: Mapping[str, Any]) -> bool:
    tags = (resource.get("meta") or {}).get("tag") or []
    return any(isinstance(t, Mapping) and t.get("system") == MPI_SYSTEM and t.get("code") == GOLDEN_CODE for t in tags)


def demographics(patient: Mapping[str, Any]) -> dict[str, Any]:
    """The identity elements of a Patient, as stored for matching and survivorship."""
    return {key: patient[key] for key in IDENTITY_ELEMENTS if patient.get(key) not in (None, [], "")}


def patient_reference(res_id: str) -> str:
    return f"Patient/{res_id}"


def with_golden_link(patient: dict[str, Any], golden_id: str, golden_ids: set[str]) -> dict[str, Any]:
    """The source record with exactly one ``refer`` link, to its golden; other links (merges, own) are kept."""
    links = [
        link
        for link in patient.get("link") or []
        if not (link.get("type") == "refer" and _target(link) in golden_ids | {golden_id})
    ]
    links.append({"other": {"reference": patient_reference(golden_id)}, "type": "refer"})
    patient["link"] = links
    return patient


def golden_of(patient: Mapping[str, Any]) -> str | None:
    """The golden a source record refers to (its first ``refer`` link), if any."""
    for link in patient.get("link") or []:
        if link.get("type") == "refer" and _target(link):
            return _target(link)
    return None


def _target(link: Mapping[str, Any]) -> str | None:
    reference = (link.get("other") or {}).get("reference") or ""
    return reference.split("/", 1)[1] if reference.startswith("Patient/") else None


def build_golden(
    golden_id: str, members: Sequence[Member], *, replaced_by: str | None = None, replaces: Sequence[str] = ()
) -> dict[str, Any]:
    """Survivorship: the golden Patient of its linked records.

    * resident ID number: the valid current one most records carry (ties: the most recently written), and it
      decides gender and birthDate; the region's cards: all, deduplicated. Institutions' MRNs stay on their own
      records (so a conditional write on an MRN matches one record, never the golden); PIXm gives them.
    * name, address: those of the most recently written record that has any; telecom: all, most recent first.
    * gender, birthDate (without an ID number): the most recently written record's.
    * ``seealso`` to every linked record; inactive when no active record is left or it was merged (``replaced_by``).
    """
    live = sorted((m for m in members if m.active), key=lambda m: m.updated_at, reverse=True)
    golden: dict[str, Any] = {
        "resourceType": "Patient",
        "id": golden_id,
        "meta": {"tag": [GOLDEN_TAG]},
        "active": bool(live) and replaced_by is None,
    }
    resident_ids: Counter[str] = Counter()
    first_seen: dict[str, int] = {}
    others: dict[tuple[str, str], dict[str, Any]] = {}
    checked: dict[tuple[str, str], str | None] = {}  # the records of a resident mostly carry the same numbers
    for rank, member in enumerate(live):
        for identifier in member.demographics.get("identifier") or []:
            system, value = identifier.get("system"), identifier.get("value")
            spec = identifier_system(system) if isinstance(system, str) else None
            if spec is None or spec.key == "mrn" or not isinstance(value, str):
                continue
            if (system, value) not in checked:
                checked[system, value] = _canonical(system, value)
            canonical = checked[system, value]
            if canonical is None:
                continue
            if system == RESIDENT_ID_SYSTEM:
                if identifier.get("use") != "old":
                    resident_ids[canonical] += 1
                    first_seen.setdefault(canonical, rank)
                continue
            entry = {key: identifier[key] for key in ("use", "type", "system") if key in identifier}
            entry["value"] = canonical
            others.setdefault((system, canonical), entry)
    identifiers = []
    resident_id = None
    if resident_ids:
        resident_id = min(resident_ids, key=lambda n: (-resident_ids[n], first_seen[n]))
        identifiers.append({"use": "official", "system": RESIDENT_ID_SYSTEM, "value": resident_id})
    identifiers.extend(others[key] for key in sorted(others))
    if identifiers:
        golden["identifier"] = identifiers
    for element in ("name", "address"):
        chosen = next((m.demographics[element] for m in live if m.demographics.get(element)), None)
        if chosen:
            golden[element] = chosen
    telecom, seen = [], set()
    for member in live:
        for point in member.demographics.get("telecom") or []:
            key = (point.get("system"), point.get("value"))
            if key not in seen:
                seen.add(key)
                telecom.append(point)
    if telecom:
        golden["telecom"] = telecom
    for element in ("gender", "birthDate"):
        chosen = next((m.demographics[element] for m in live if m.demographics.get(element)), None)
        if chosen:
            golden[element] = chosen
    if resident_id is not None:
        golden["gender"] = "male" if int(resident_id[16]) % 2 else "female"
        golden["birthDate"] = f"{resident_id[6:10]}-{resident_id[10:12]}-{resident_id[12:14]}"
    links = [{"other": {"reference": patient_reference(m.source_id)}, "type": "seealso"} for m in members]
    links.sort(key=lambda link: link["other"]["reference"])
    links.extend({"other": {"reference": patient_reference(r)}, "type": "replaces"} for r in replaces)
    if replaced_by is not None:
        links.append({"other": {"reference": patient_reference(replaced_by)}, "type": "replaced-by"})
    if links:
        golden["link"] = links
    return golden


def _canonical(system: str, value: str) -> str | None:
    """The canonical spelling of a valid regional identifier; None for an invalid one."""
    try:
        return validate_identifier(system, value)
    except IdentifierError:
        return None


def to_validate(stored: Mapping[str, Any], golden: dict[str, Any]) -> dict[str, Any] | None:
    """What of a rebuilt golden needs validating: all of it without a stored version; else its resourceType, id,
    meta and the top-level elements that differ from the stored version, which was validated when written (R4B
    validation of a Patient and the regional identifier rules judge each top-level element on its own), but for
    ``link`` and ``active``, which survivorship makes of record ids and fixed codes; None when nothing else changed."""
    if not stored:
        return golden
    changed = {key for key, value in golden.items() if key not in _SKIPPED and stored.get(key) != value}
    if not changed:
        return None
    return {key: value for key, value in golden.items() if key in _ALWAYS or key in changed}


_ALWAYS = frozenset({"resourceType", "id", "meta"})
_SKIPPED = _ALWAYS | {"link", "active"}


def same_content(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Equal apart from id and meta (versionId, lastUpdated): no new version needed."""
    strip = {"id", "meta"}
    return {k: v for k, v in a.items() if k not in strip} == {k: v for k, v in b.items() if k not in strip}
