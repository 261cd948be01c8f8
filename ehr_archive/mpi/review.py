"""The review queue and the trail of MPI decisions as FHIR resources: pure builders of Task and Provenance.

A review Task (R4B Task) asks a person whether a record and a golden Patient are the same resident: status
``requested``, ``focus`` the record, ``for`` its golden, and inputs naming the candidate golden with the score,
grade, deciding rule and each field's evidence. ``$mpi-link`` and ``$mpi-not-duplicate`` complete it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ehr_archive.matching import MatchResult
from ehr_archive.mpi.records import MPI_SYSTEM, patient_reference

REVIEW_CODE = "potential-duplicate"
CANDIDATE = "candidate"
ACTIVITIES = {
    "link": "Link a record to a golden Patient",
    "not-duplicate": "Record that a record is not the resident of a golden Patient",
    "merge": "Merge two Patients",
    "unmerge": "Undo a merge of two Patients",
    "close-review": "Close review Tasks a later write settled",
}


def _concept(code: str, display: str | None = None) -> dict[str, Any]:
    coding = {"system": MPI_SYSTEM, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding]}


def review_task(
    source_id: str, golden_id: str, candidate_id: str, result: MatchResult, authored: str
) -> dict[str, Any]:
    """A Task asking whether record ``source_id`` (now in golden ``golden_id``) is the resident of ``candidate_id``."""
    inputs: list[dict[str, Any]] = [
        {
            "type": _concept(CANDIDATE, "Candidate golden Patient"),
            "valueReference": {"reference": patient_reference(candidate_id)},
        },
        {"type": _concept("score", "Match weight (bits)"), "valueDecimal": round(result.score, 2)},
        {"type": _concept("grade", "Match grade"), "valueCode": result.grade.value},
    ]
    if result.rule:
        inputs.append({"type": _concept("rule", "Deciding rule"), "valueCode": result.rule})
    inputs.extend(
        {"type": _concept(f"evidence-{e.field}", f"Evidence: {e.field}"), "valueString": f"{e.level} ({e.weight:+.2f})"}
        for e in result.evidence
    )
    return {
        "resourceType": "Task",
        "status": "requested",
        "intent": "proposal",
        "priority": "routine",
        "code": _concept(REVIEW_CODE, "Review a potential duplicate Patient"),
        "description": (
            f"Record Patient/{source_id} may be the resident of golden Patient/{candidate_id} "
            f"({result.grade.value}, {result.score:.2f} bits): link it with Patient/$mpi-link or "
            "decide it is not with Patient/$mpi-not-duplicate."
        ),
        "focus": {"reference": patient_reference(source_id)},
        "for": {"reference": patient_reference(golden_id)},
        "authoredOn": authored,
        "input": inputs,
    }


def task_candidate(task: Mapping[str, Any]) -> str | None:
    """The candidate golden id a review Task names."""
    for item in task.get("input") or []:
        codings = (item.get("type") or {}).get("coding") or []
        if any(c.get("system") == MPI_SYSTEM and c.get("code") == CANDIDATE for c in codings):
            reference = (item.get("valueReference") or {}).get("reference", "")
            return reference.removeprefix("Patient/")
    return None


def completed_task(
    task: dict[str, Any], decision: str, golden_id: str, when: str, *, note: str | None = None
) -> dict[str, Any]:
    """The Task after a decision (``linked`` or ``not-duplicate``) that put the record in golden ``golden_id``;
    ``note`` says why when no reviewer decided (a later write settled it)."""
    done = dict(task)
    done["status"] = "completed"
    done["businessStatus"] = {"text": decision}
    done["lastModified"] = when
    done["output"] = [
        {"type": _concept("decision", "Decision"), "valueCode": decision},
        {
            "type": _concept("golden", "Golden Patient of the record"),
            "valueReference": {"reference": patient_reference(golden_id)},
        },
    ]
    if note:
        _add_note(done, note, when)
    return done


def cancelled_task(task: dict[str, Any], golden_id: str, when: str, *, note: str) -> dict[str, Any]:
    """The Task when its question no longer stands (the record was linked elsewhere with certainty)."""
    done = dict(task)
    done["status"] = "cancelled"
    done["statusReason"] = {"text": "superseded"}
    done["businessStatus"] = {"text": "superseded"}
    done["lastModified"] = when
    done["output"] = [
        {
            "type": _concept("golden", "Golden Patient of the record"),
            "valueReference": {"reference": patient_reference(golden_id)},
        }
    ]
    _add_note(done, note, when)
    return done


def _add_note(task: dict[str, Any], text: str, when: str) -> None:
    task["note"] = [*(task.get("note") or []), {"time": when, "text": text}]


def provenance(
    activity: str, targets: Sequence[str], prior: Sequence[str], recorded: str, reason: str
) -> dict[str, Any]:
    """A Provenance (R4B) of one MPI change: the new versions as targets, the versions before as revised entities."""
    return {
        "resourceType": "Provenance",
        "target": [{"reference": reference} for reference in targets],
        "recorded": recorded,
        "activity": _concept(activity, ACTIVITIES[activity]),
        "reason": [{"text": reason}],
        "agent": [
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                            "code": "performer",
                        }
                    ]
                },
                "who": {"display": "Wuzhou HIE master patient index"},
            }
        ],
        "entity": [{"role": "revision", "what": {"reference": reference}} for reference in prior],
    }
