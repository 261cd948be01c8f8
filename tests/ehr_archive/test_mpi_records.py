"""Pure MPI rules: survivorship of golden Patients, the link conventions, review Tasks."""

from __future__ import annotations

import orjson

from ehr_archive.identifiers import CITIZEN_CARD_SYSTEM, RESIDENT_ID_SYSTEM, mrn_system
from ehr_archive.matching import person_record_from_patient, score_pair
from ehr_archive.mpi.records import (
    Member,
    build_golden,
    demographics,
    golden_of,
    is_golden,
    to_validate,
    with_golden_link,
)
from ehr_archive.mpi.review import completed_task, review_task, task_candidate
from tests.ehr_archive.conftest import patient, resident_id
from tests.ehr_archive.mpi_dataset import generate_dataset


def test_survivorship_takes_the_majority_id_number_and_the_latest_name_and_address() -> None:
    rid, typo_rid = resident_id("19580312", 1), resident_id("19580321", 2)
    old = patient("org-a", "A", given="建国", rid=rid, phone="13907740001")
    old["identifier"].append({"system": CITIZEN_CARD_SYSTEM, "value": "1234 5678 90"})
    newer = patient("org-b", "B", given="建囯", born="1958-03-21", rid=typo_rid, phone="13907740002", district="藤县")
    newest = patient("org-c", "C", given="建国", rid=rid, district=None)
    members = [
        Member("a", demographics(old), 1),
        Member("b", demographics(newer), 2),
        Member("c", demographics(newest), 3),
    ]

    golden = build_golden("g", members)

    assert is_golden(golden) and golden["active"] is True
    assert golden["identifier"] == [
        {"use": "official", "system": RESIDENT_ID_SYSTEM, "value": rid},
        {"system": CITIZEN_CARD_SYSTEM, "value": "1234567890"},
    ]
    assert golden["name"] == newest["name"]
    assert golden["address"] == newer["address"], "the latest record that has an address"
    assert [t["value"] for t in golden["telecom"]] == ["13907740002", "13907740001"]
    assert (golden["birthDate"], golden["gender"]) == ("1958-03-12", "male"), "from the ID number"
    assert [link["other"]["reference"] for link in golden["link"]] == ["Patient/a", "Patient/b", "Patient/c"]
    assert {link["type"] for link in golden["link"]} == {"seealso"}
    assert all(i["system"] != mrn_system("org-a") for i in golden["identifier"])


def test_a_golden_without_active_records_or_merged_away_is_inactive() -> None:
    record = demographics(patient("org-a", "A"))

    emptied = build_golden("g", [Member("a", record, 1, active=False)])
    merged = build_golden("g", [Member("a", record, 1)], replaced_by="h", replaces=["k"])

    assert emptied["active"] is False and "name" not in emptied
    assert merged["active"] is False
    assert {"other": {"reference": "Patient/h"}, "type": "replaced-by"} in merged["link"]
    assert {"other": {"reference": "Patient/k"}, "type": "replaces"} in merged["link"]


def test_a_record_refers_to_exactly_one_golden_and_keeps_its_other_links() -> None:
    record = patient("org-a", "A")
    record["link"] = [
        {"other": {"reference": "Patient/old-golden"}, "type": "refer"},
        {"other": {"reference": "Patient/twin"}, "type": "seealso"},
    ]

    with_golden_link(record, "new-golden", {"old-golden"})

    assert record["link"] == [
        {"other": {"reference": "Patient/twin"}, "type": "seealso"},
        {"other": {"reference": "Patient/new-golden"}, "type": "refer"},
    ]
    assert golden_of(record) == "new-golden"
    assert not is_golden(record)


def test_a_review_task_carries_the_candidate_score_grade_and_evidence() -> None:
    a = person_record_from_patient(patient("org-a", "A", rid=resident_id("19630908", 3)), "a")
    b = person_record_from_patient(patient("org-b", "B"), "b")
    result = score_pair(a, b)

    task = review_task("b", "gb", "ga", result, "2026-01-01T00:00:00Z")
    done = completed_task(task, "linked", "ga", "2026-01-02T00:00:00Z")

    assert (task["status"], task["intent"]) == ("requested", "proposal")
    assert task_candidate(task) == "ga"
    codes = [i["type"]["coding"][0]["code"] for i in task["input"]]
    assert codes[:3] == ["candidate", "score", "grade"]
    assert {c for c in codes if c.startswith("evidence-")} == {f"evidence-{e.field}" for e in result.evidence}
    assert done["status"] == "completed" and task["status"] == "requested"
    assert done["output"][0]["valueCode"] == "linked"


def test_a_record_folds_as_its_stored_identity_elements() -> None:
    """The matcher keeps the fold of a record it files as that of its stored demographics: they must agree."""
    dataset = generate_dataset(residents=400, seed=11)
    for record in dataset.records:
        stored = orjson.loads(orjson.dumps(demographics(record.patient)))
        assert person_record_from_patient(stored, "r") == person_record_from_patient(record.patient, "r"), record.errors


def test_a_rebuilt_golden_is_validated_whole_when_new_else_in_the_elements_that_changed() -> None:
    first = Member("r1", demographics(patient("org-a", "A-1", family="李", given="华", phone="13977400003")), 1)
    second = Member("r2", demographics(patient("org-b", "B-1", family="李", given="华")), 2)
    third = Member("r3", demographics(patient("org-c", "C-1", family="李", given="华", phone="13977400004")), 3)
    stored = build_golden("g1", [first])
    rebuilt = build_golden("g1", [first, third])

    assert to_validate({}, stored) == stored
    assert to_validate(stored, rebuilt) == {
        "resourceType": "Patient",
        "id": "g1",
        "meta": rebuilt["meta"],
        "telecom": rebuilt["telecom"],
    }
    assert to_validate(stored, build_golden("g1", [first, second])) is None  # only its seealso links changed
    assert to_validate(stored, build_golden("g1", [])) is None  # inactive, no links: elements it lost need no check
