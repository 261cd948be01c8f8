"""``Patient/$match`` (R4B patient-operation-match; IHE PDQm ITI-119): scored golden Patients for a Patient.

Candidates come from the blocking index and are scored against every record of each golden; a golden's score
is its best record's. ``search.score`` is the Fellegi–Sunter weight ``w`` as a probability at even prior odds,
``1 / (1 + 2^-w)`` (1 when a shared valid resident ID number decides), and the match-grade extension carries the
grade. ``onlyCertainMatches`` returns the certain match only when there is exactly one.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from ehr_archive.matching import MatchGrade, MatchResult
from ehr_archive.mpi import require_mpi
from ehr_archive.mpi.operations.common import as_exchange
from fhir_server.operations.base import Invocation, Operation
from fhir_server.operations.inputs import bad_input
from fhir_server.validation import validate_resource

MATCH_GRADE = "http://hl7.org/fhir/StructureDefinition/match-grade"
DEFAULT_COUNT = 10
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
    mpi = require_mpi(call.service)
    patient = dict(call.one("resource"))
    validate_resource(patient, "Patient")
    count = call.one("count", DEFAULT_COUNT)
    if count < 1:
        raise bad_input("count", "count must be at least 1.")
    results = mpi.match(conn, patient)
    entries: list[dict[str, Any]] = []
    if call.one("onlyCertainMatches", False):
        results = [(g, r) for g, r in results if r.grade is MatchGrade.CERTAIN]
        if len(results) > 1:
            entries.append(_outcome(f"{len(results)} golden Patients match with certainty; none is returned."))
            results = []
    results = results[: min(count, MAX_COUNT)]
    goldens = _goldens(call, conn, [golden_id for golden_id, _ in results])
    for golden_id, result in results:
        if golden_id not in goldens:
            continue
        entries.append(
            {
                "fullUrl": f"{call.base}/Patient/{golden_id}",
                "resource": goldens[golden_id],
                "search": {
                    "extension": [{"url": MATCH_GRADE, "valueCode": result.grade.value}],
                    "mode": "match",
                    "score": probability(result),
                },
            }
        )
    total = sum(1 for e in entries if e["search"]["mode"] == "match")
    return {"resourceType": "Bundle", "type": "searchset", "total": total, "entry": entries}


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
