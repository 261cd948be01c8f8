"""The matcher's folded candidates: a filed record is kept as its stored demographics fold, never folded twice."""

from __future__ import annotations

from unittest import mock

import orjson

from ehr_archive.matching import person_record_from_patient
from ehr_archive.mpi import service
from ehr_archive.mpi.records import demographics
from tests.ehr_archive.conftest import patient, resident_id, unique_org


def stored(body: dict) -> str:  # type: ignore[type-arg]
    return orjson.dumps(demographics(body)).decode()


def test_folded_records_are_kept_by_content_and_the_least_recently_used_dropped() -> None:
    folded = service._FoldedRecords(2)
    a, b, c = (patient("org-a", n, rid=resident_id("19580312", i)) for i, n in enumerate(("A", "B", "C"), 1))
    first = folded.get("a", stored(a))
    assert first == person_record_from_patient(a, "a")
    folded.get("b", stored(b))
    assert folded.get("a", stored(a)) is first, "a hit returns the kept record"
    folded.put("c", stored(c), person_record_from_patient(c, "c"))
    assert folded.get("a", stored(a)) is first
    assert folded.get("b", stored(b)) == person_record_from_patient(b, "b"), "b was dropped and is folded again"
    changed = {**a, "gender": "female"}
    assert folded.get("a", stored(changed)).sex == "female", "changed demographics are another key"


def test_a_filed_record_is_not_folded_again_as_the_next_records_candidate(mpi_client) -> None:
    rid = resident_id("19610704", 31)
    first = mpi_client.post("/fhir/Patient", json=patient(unique_org(), "F-1", born="1961-07-04", rid=rid))
    assert first.status_code == 201, first.text
    folds = []
    real = service.person_record_from_patient

    def counted(body, record_id=None):  # type: ignore[no-untyped-def]
        folds.append(record_id)
        return real(body, record_id)

    with mock.patch.object(service, "person_record_from_patient", counted):
        second = mpi_client.post("/fhir/Patient", json=patient(unique_org(), "F-2", born="1961-07-04", rid=rid))

    assert second.status_code == 201, second.text
    assert folds == [second.json()["id"]], "only the new record is folded; its candidate comes from the fold kept"
    assert second.json()["link"] == first.json()["link"], "and it joined the first record's golden"
