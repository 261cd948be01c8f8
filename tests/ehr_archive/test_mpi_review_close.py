"""Review Tasks a later write settles are closed automatically, with a note, a new version and a Provenance."""

from __future__ import annotations

from typing import Any

from ehr_archive.mpi import MPI_SYSTEM
from tests.ehr_archive.conftest import patient, resident_id, unique_org
from tests.ehr_archive.test_mpi_linking import create, golden_id, review_tasks


def update(client, body: dict[str, Any]) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    response = client.put(f"/fhir/Patient/{body['id']}", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def task_history(client, task_id: str) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    response = client.get(f"/fhir/Task/{task_id}/_history")
    assert response.status_code == 200, response.text
    return [entry["resource"] for entry in response.json()["entry"]]


def provenance_of(client, reference: str) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    response = client.get(f"/fhir/Provenance?target={reference}")
    assert response.status_code == 200, response.text
    return [entry["resource"] for entry in response.json().get("entry", [])]


def test_a_later_certain_link_completes_the_review_of_that_golden(mpi_client) -> None:
    rid = resident_id("19550418", 171)
    known = create(mpi_client, patient(unique_org(), "RC-1", family="莫", given="振邦", born="1955-04-18", rid=rid))
    unsure = create(mpi_client, patient(unique_org(), "RC-2", family="莫", given="振邦", born="1955-04-18"))
    [task] = review_tasks(mpi_client, unsure["id"])
    assert task["status"] == "requested"

    unsure["identifier"].append({"system": "urn:oid:2.16.156.10011.1.3", "value": rid})
    linked = update(mpi_client, unsure)

    assert golden_id(linked) == golden_id(known)
    [closed] = review_tasks(mpi_client, unsure["id"])
    assert closed["id"] == task["id"]
    assert closed["status"] == "completed"
    assert closed["businessStatus"] == {"text": "linked"}
    assert {o["type"]["coding"][0]["code"]: o for o in closed["output"]}["decision"]["valueCode"] == "linked"
    assert "Closed automatically" in closed["note"][0]["text"]
    assert f"Patient/{golden_id(known)}" in closed["note"][0]["text"]
    history = task_history(mpi_client, task["id"])
    assert [v["status"] for v in history] == ["completed", "requested"]
    [provenance] = provenance_of(mpi_client, f"Task/{task['id']}/_history/2")
    assert provenance["activity"]["coding"][0] == {
        "system": MPI_SYSTEM,
        "code": "close-review",
        "display": "Close review Tasks a later write settled",
    }


def test_a_review_whose_candidate_no_longer_scores_is_cancelled(mpi_client) -> None:
    create(
        mpi_client,
        patient(unique_org(), "RX-1", family="覃", given="海燕", born="1972-02-14", gender="female", district="藤县"),
    )
    unsure = create(
        mpi_client,
        patient(unique_org(), "RX-2", family="覃", given="海燕", born="1972-02-14", gender="female", district="藤县"),
    )
    [task] = review_tasks(mpi_client, unsure["id"])
    rid = resident_id("19830607", 181, male=True)
    other = create(mpi_client, patient(unique_org(), "RX-3", family="黎", given="国强", born="1983-06-07", rid=rid))

    corrected = patient(unique_org(), "RX-2", family="黎", given="国强", born="1983-06-07", rid=rid)
    corrected["id"] = unsure["id"]
    corrected["identifier"][0] = unsure["identifier"][0]  # the same institution's MRN: a data-entry correction
    linked = update(mpi_client, corrected)

    assert golden_id(linked) == golden_id(other)
    [cancelled] = review_tasks(mpi_client, unsure["id"])
    assert cancelled["id"] == task["id"]
    assert cancelled["status"] == "cancelled"
    assert cancelled["statusReason"] == {"text": "superseded"}
    assert "no longer scores" in cancelled["note"][0]["text"]
    assert [v["status"] for v in task_history(mpi_client, task["id"])] == ["cancelled", "requested"]


def test_a_review_still_in_question_stays_open(mpi_client) -> None:
    rid = resident_id("19610923", 191)
    create(mpi_client, patient(unique_org(), "RO-1", family="梁", given="振华", born="1961-09-23", rid=rid))
    unsure = create(mpi_client, patient(unique_org(), "RO-2", family="梁", given="振华", born="1961-09-23"))
    [task] = review_tasks(mpi_client, unsure["id"])

    unsure["telecom"] = [{"system": "phone", "value": "13907749999"}]  # a write that settles nothing
    update(mpi_client, unsure)

    [still] = review_tasks(mpi_client, unsure["id"])
    assert (still["id"], still["status"]) == (task["id"], "requested")
