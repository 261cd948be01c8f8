"""``Patient/$match`` (R4B patient-operation-match; IHE PDQm ITI-119): scored golden Patients for a Patient.

Candidates come from the blocking index and are scored against every record of each golden; a golden's score
is its best record's. ``search.score`` is the Fellegi–Sunter weight ``w`` as a probability at even prior odds,
``1 / (1 + 2^-w)`` (1 when a shared valid resident ID number decides), and the match-grade extension carries the
grade. ``onlyCertainMatches`` returns the certain match only when there is exactly one.

Institutions see only what they hold or what the resident's consent shares with them (docs/MPI.md, "Who sees
what"); the exchange's stewards, its adapters and a justified break-glass read see every golden.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from ehr_archive.matching import MatchGrade, MatchResult, person_record_from_patient, score_pair
from ehr_archive.mpi import links, require_mpi
from ehr_archive.mpi.operations.common import as_exchange, readable_patients, sees_everything
from ehr_archive.mpi.records import build_golden
from ehr_archive.mpi.service import MasterPatientIndex, rank
from fhir_server.access import refuse_resident_app
from fhir_server.operations.base import Invocation, Operation
from fhir_server.operations.inputs import bad_input
from fhir_server.validation import validate_resource

MATCH_GRADE = "http://hl7.org/fhir/StructureDefinition/match-grade"
SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
    "display": "subsetted",
}
"""meta.tag of a golden shown as the caller's own records make it (R4B search.html#summary uses the same tag)."""
DEFAULT_COUNT = 10
Found = tuple[str, MatchResult, list[links.Record] | None]
"""A golden id, its match result, and the caller's own records of it when only those may be shown."""
MAX_COUNT = 100

DECLARATION: dict[str, Any] = {
    "id": "Patient-match",
    "name": "Match",
    "title": "Find golden Patients that may be the same resident",
    "code": "match",
    "resource": ["Patient"],
    "system": False,
    "type": True,
    "instance": False,
    "affectsState": False,
    "base": "http://hl7.org/fhir/OperationDefinition/Patient-match",
    "description": (
        "Master patient index matching (IHE PDQm ITI-119): golden Patients scored with Fellegi–Sunter weights "
        "over resident ID number, cards, name (characters, pinyin, homophones), birth date, sex, phone and address."
    ),
    "parameter": [
        {"name": "resource", "use": "in", "min": 1, "max": "1", "type": "Patient", "documentation": "The query."},
        {
            "name": "onlyCertainMatches",
            "use": "in",
            "min": 0,
            "max": "1",
            "type": "boolean",
            "documentation": "Only a certain match, and only when there is exactly one.",
        },
        {
            "name": "count",
            "use": "in",
            "min": 0,
            "max": "1",
            "type": "integer",
            "documentation": f"At most this many matches (default {DEFAULT_COUNT}, at most {MAX_COUNT}).",
        },
        {"name": "return", "use": "out", "min": 1, "max": "1", "type": "Bundle", "documentation": "searchset"},
    ],
}


def probability(result: MatchResult) -> float:
    if result.rule == "same-resident-id":
        return 1.0
    return round(1.0 / (1.0 + 2.0 ** (-result.score)), 4)


def match(call: Invocation, conn: Connection) -> dict[str, Any]:
    refuse_resident_app(call.principal, "$match")
    mpi = require_mpi(call.service)
    patient = dict(call.one("resource"))
    validate_resource(patient, "Patient")
    count = call.one("count", DEFAULT_COUNT)
    if count < 1:
        raise bad_input("count", "count must be at least 1.")
    found: list[Found] = [(golden_id, result, None) for golden_id, result in mpi.match(conn, patient)]
    if not sees_everything(call):
        found = _disclosed(call, conn, mpi, patient, found)
    entries: list[dict[str, Any]] = []
    if call.one("onlyCertainMatches", False):
        found = [item for item in found if item[1].grade is MatchGrade.CERTAIN]
        if len(found) > 1:
            entries.append(_outcome(f"{len(found)} golden Patients match with certainty; none is returned."))
            found = []
    found = found[: min(count, MAX_COUNT)]
    goldens = _goldens(call, conn, [golden_id for golden_id, _, subset in found if subset is None])
    for golden_id, result, subset in found:
        resource = goldens.get(golden_id) if subset is None else _subsetted(golden_id, subset)
        if resource is None:
            continue
        entries.append(
            {
                "fullUrl": f"{call.base}/Patient/{golden_id}",
                "resource": resource,
                "search": {
                    "extension": [{"url": MATCH_GRADE, "valueCode": result.grade.value}],
                    "mode": "match",
                    "score": probability(result),
                },
            }
        )
    total = sum(1 for e in entries if e["search"]["mode"] == "match")
    return {"resourceType": "Bundle", "type": "searchset", "total": total, "entry": entries}


def _disclosed(
    call: Invocation,
    conn: Connection,
    mpi: MasterPatientIndex,
    patient: dict[str, Any],
    found: list[Found],
) -> list[Found]:
    """What an institution may learn (docs/MPI.md, "Who sees what").

    A golden the resident's consent lets the caller read is returned whole. A golden of a resident the caller
    holds a record of is returned as the caller's own records make it (survivorship over them alone, tagged
    ``SUBSETTED``), scored against those records only. Any other golden is not returned, nor counted.
    """
    ids = [golden_id for golden_id, _, _ in found]
    readable = readable_patients(call, conn, ids)
    org = call.access.org
    owned = links.owned_members(conn, [g for g in ids if g not in readable], org) if org else {}
    query = person_record_from_patient(patient, "")
    kept: list[Found] = []
    for golden_id, result, _ in found:
        if golden_id in readable:
            kept.append((golden_id, result, None))
            continue
        mine = owned.get(golden_id)
        if not mine:
            continue
        best = max(
            (
                score_pair(
                    query,
                    person_record_from_patient(m.demographics, m.source_id),
                    model=mpi.model,
                    thresholds=mpi.thresholds,
                )
                for m in mine
            ),
            key=rank,
        )
        if best.grade is not MatchGrade.CERTAINLY_NOT:
            kept.append((golden_id, best, mine))
    kept.sort(key=lambda item: rank(item[1]), reverse=True)
    return kept


def _subsetted(golden_id: str, records: list[links.Record]) -> dict[str, Any]:
    """The golden as the caller's own records make it: nothing another institution wrote."""
    golden = build_golden(golden_id, [record.member() for record in records])
    golden["meta"] = {"tag": [*golden["meta"]["tag"], SUBSETTED]}
    return golden


def _goldens(call: Invocation, conn: Connection, ids: list[str]) -> dict[str, dict[str, Any]]:
    """The current goldens of ``ids`` in one search (``_id``), not a read each."""
    if not ids:
        return {}
    with as_exchange():
        found = call.service.matches(conn, "Patient", [("_id", ",".join(ids))], limit=len(ids))
    return {v.res_id: v.resource() for v in call.service.repository.load_many(conn, found)}


def _outcome(text: str) -> dict[str, Any]:
    return {
        "resource": {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "information", "code": "multiple-matches", "diagnostics": text}],
        },
        "search": {"mode": "outcome"},
    }


OPERATION = Operation(DECLARATION, match)
