"""Goldens rebuilt after commit (both backends): the link stays in the writer's unit of work, the golden follows."""

from __future__ import annotations

from typing import Any

import pytest

from ehr_archive.mpi import install_mpi, links, merge
from ehr_archive.mpi.records import build_golden, same_content
from ehr_archive.mpi.service import MasterPatientIndex
from fhir_server.errors import FhirError
from fhir_server.service import FhirService
from fhir_server.storage import unit_of_work
from tests.ehr_archive.conftest import patient, resident_id, unique_org


def _refer(record: dict[str, Any]) -> str:
    [golden] = [link["other"]["reference"] for link in record["link"] if link["type"] == "refer"]
    return golden.removeprefix("Patient/")


def _golden(engine, golden_id: str) -> dict[str, Any] | None:  # type: ignore[no-untyped-def]
    with unit_of_work(engine, write=False) as conn:
        try:
            return FhirService().repository.read(conn, "Patient", golden_id).resource()
        except FhirError:
            return None


def _seealso(golden: dict[str, Any]) -> set[str]:
    return {link["other"]["reference"] for link in golden["link"] if link["type"] == "seealso"}


def _create(engine, service: FhirService, body: dict[str, Any]) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    with unit_of_work(engine) as conn:
        return service.create(conn, body).version.resource()


def test_queued_goldens_wait_for_the_rebuild_and_then_hold_every_record(engine) -> None:
    service = FhirService()
    mpi = install_mpi(service, rebuild="queued")
    rid = resident_id("19661224", 301)
    first = _create(engine, service, patient(unique_org(), "Q-1", family="梁", given="伟", born="1966-12-24", rid=rid))
    golden_id = _refer(first)

    assert _golden(engine, golden_id) is None  # the link is committed with the record, the golden comes after
    with unit_of_work(engine, write=False) as conn:
        assert links.golden_active(conn, golden_id) is True  # its id is reserved: nobody else may write it
        assert links.is_queued(conn, golden_id)

    second = _create(
        engine,
        service,
        patient(unique_org(), "Q-2", family="梁", given="伟", born="1966-12-24", rid=rid, phone="13977400001"),
    )
    assert _refer(second) == golden_id  # matching reads the MPI tables, not the golden

    assert mpi.rebuild_pending(engine) == 1
    golden = _golden(engine, golden_id)
    assert golden is not None
    assert _seealso(golden) == {f"Patient/{first['id']}", f"Patient/{second['id']}"}
    assert golden["telecom"] == [{"system": "phone", "value": "13977400001"}]
    with unit_of_work(engine, write=False) as conn:
        assert not links.is_queued(conn, golden_id)
    assert mpi.rebuild_pending(engine) == 0


def test_a_rebuild_forgets_only_the_queue_rows_it_saw(engine) -> None:
    with unit_of_work(engine) as conn:
        links.queue_golden(conn, "g-seen")
        assert list(links.take_queued(conn, limit=100)) == ["g-seen"]
        links.queue_golden(conn, "g-seen")  # a record of it written while the rebuild ran
        assert links.is_queued(conn, "g-seen")
        assert list(links.take_queued(conn, limit=100)) == ["g-seen"]
        assert not links.is_queued(conn, "g-seen")


def test_after_commit_rebuilds_before_the_writer_gets_control_back(engine) -> None:
    service = FhirService()
    install_mpi(service, rebuild="after-commit")
    record = _create(engine, service, patient(unique_org(), "AC-1", family="韦", given="小红", gender="female"))

    golden = _golden(engine, _refer(record))
    assert golden is not None and _seealso(golden) == {f"Patient/{record['id']}"}
    with unit_of_work(engine, write=False) as conn:
        assert not links.is_queued(conn, _refer(record))


def test_a_rolled_back_write_queues_nothing(engine) -> None:
    service = FhirService()
    mpi = install_mpi(service, rebuild="queued")
    with pytest.raises(RuntimeError), unit_of_work(engine) as conn:
        created = service.create(conn, patient(unique_org(), "RB-1", family="蒙", given="立")).version.resource()
        raise RuntimeError("the request failed after the write")
    with unit_of_work(engine, write=False) as conn:
        assert not links.is_queued(conn, _refer(created))
        assert links.golden_active(conn, _refer(created)) is None
    assert mpi.rebuild_pending(engine) >= 0  # nothing of it to rebuild


def test_background_rebuild_catches_up_after_the_commit(engine) -> None:
    service = FhirService()
    mpi = install_mpi(service, rebuild="background")
    try:
        rid = resident_id("19800105", 311)
        records = [
            _create(
                engine, service, patient(unique_org(), f"BG-{n}", family="黎", given="明", born="1980-01-05", rid=rid)
            )
            for n in range(3)
        ]
        assert mpi.wait_idle(30)
        golden = _golden(engine, _refer(records[0]))
        assert golden is not None
        assert _seealso(golden) == {f"Patient/{r['id']}" for r in records}
    finally:
        mpi.stop()


def test_background_rebuild_takes_the_goldens_of_a_burst_in_one_drain(engine, monkeypatch) -> None:
    from ehr_archive.mpi.service import _Rebuilder

    monkeypatch.setattr(_Rebuilder, "SPACING", 3.0)  # far longer than the burst below takes
    service = FhirService()
    mpi = install_mpi(service, rebuild="background")
    drains: list[int] = []
    drain = mpi.rebuild_pending
    monkeypatch.setattr(mpi, "rebuild_pending", lambda engine, **kw: drains.append(drain(engine, **kw)))
    try:
        first = _create(engine, service, patient(unique_org(), "BU-0", family="甘", given="文", born="1961-02-03"))
        assert mpi.wait_idle(30)
        assert drains == [1] and _golden(engine, _refer(first)) is not None
        given = ("武", "斌", "红", "莉")
        burst = [
            _create(engine, service, patient(unique_org(), f"BU-{n}", family="甘", given=name, born=f"197{n}-02-03"))
            for n, name in enumerate(given, start=1)
        ]
        assert mpi.wait_idle(30)
        assert drains == [1, 4]  # one unit of work for the four goldens
        assert all(_golden(engine, _refer(record)) is not None for record in burst)
    finally:
        mpi.stop()


def test_inline_rebuild_writes_the_golden_in_the_writers_unit_of_work(engine) -> None:
    service = FhirService()
    install_mpi(service, rebuild="inline")
    with unit_of_work(engine) as conn:
        record = service.create(conn, patient(unique_org(), "IN-1", family="区", given="志强")).version.resource()
        assert service.repository.read(conn, "Patient", _refer(record)).resource()["active"] is True
        assert not links.is_queued(conn, _refer(record))


def _rebuilt_as_in_full(mpi: MasterPatientIndex, engine, golden_id: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """The stored golden, checked against the full path: read by the repository under lock, built from
    ``links.members``, validated whole."""
    service = mpi.service
    with unit_of_work(engine) as conn:
        current = service.repository.current(conn, "Patient", golden_id, lock=True)
        assert current is not None
        assert links.golden_state(conn, golden_id) == links.GoldenState(
            links.golden_active(conn, golden_id), current, links.members(conn, golden_id)
        )
        stored = current.resource()
        replaced_by = [link["other"]["reference"][8:] for link in stored["link"] if link["type"] == "replaced-by"]
        replaces = [link["other"]["reference"][8:] for link in stored["link"] if link["type"] == "replaces"]
        members = [r.member() for r in links.members(conn, golden_id)]
        expected = build_golden(golden_id, members, replaced_by=next(iter(replaced_by), None), replaces=replaces)
        assert same_content(stored, expected)
        assert links.golden_active(conn, golden_id) is expected["active"]
        service.validate(stored, "Patient")
    return stored


def test_goldens_rebuilt_with_several_records_merged_unlinked_and_unmerged_equal_the_full_build(engine) -> None:
    service = FhirService()
    mpi = install_mpi(service, rebuild="queued")
    rid = resident_id("19590714", 321)
    phones = ("13977400011", "13977400012", "13977400013")
    kin = [
        _create(
            engine,
            service,
            patient(unique_org(), f"EQ-{n}", family="覃", given="海", born="1959-07-14", rid=rid, phone=phone),
        )
        for n, phone in enumerate(phones)
    ]
    other = _create(
        engine,
        service,
        patient(unique_org(), "EQ-9", family="莫", given="兰", born="1984-11-02", gender="female", district="蝶山区"),
    )
    first, second = _refer(kin[0]), _refer(other)
    assert {_refer(k) for k in kin} == {first}
    assert mpi.rebuild_pending(engine) >= 2
    golden = _rebuilt_as_in_full(mpi, engine, first)
    assert [t["value"] for t in golden["telecom"]] == list(reversed(phones))
    _rebuilt_as_in_full(mpi, engine, second)

    with unit_of_work(engine) as conn:
        merge.merge(mpi, conn, second, first, None)
    assert _seealso(_rebuilt_as_in_full(mpi, engine, first)) == {f"Patient/{r['id']}" for r in (*kin, other)}
    assert _rebuilt_as_in_full(mpi, engine, second)["active"] is False

    with unit_of_work(engine) as conn:
        parameters = mpi.not_duplicate(conn, kin[2]["id"], first)
    moved_to = parameters["parameter"][0]["valueReference"]["reference"].removeprefix("Patient/")
    assert f"Patient/{kin[2]['id']}" not in _seealso(_rebuilt_as_in_full(mpi, engine, first))
    assert _seealso(_rebuilt_as_in_full(mpi, engine, moved_to)) == {f"Patient/{kin[2]['id']}"}

    with unit_of_work(engine) as conn:
        merge.unmerge(mpi, conn, second)
    assert _seealso(_rebuilt_as_in_full(mpi, engine, second)) == {f"Patient/{other['id']}"}
    assert f"Patient/{other['id']}" not in _seealso(_rebuilt_as_in_full(mpi, engine, first))
    assert mpi.rebuild_pending(engine) >= 0
    for golden_id in (first, second, moved_to):
        _rebuilt_as_in_full(mpi, engine, golden_id)


def test_a_golden_whose_change_breaks_validation_is_left_out_and_the_rest_of_its_batch_rebuilt(engine) -> None:
    service = FhirService()
    mpi = install_mpi(service, rebuild="queued")
    broken_record = _create(engine, service, patient(unique_org(), "BV-1", family="覃", given="丽", born="1990-04-01"))
    broken = _refer(broken_record)
    assert mpi.rebuild_pending(engine) >= 1
    with unit_of_work(engine) as conn:
        before = service.repository.read(conn, "Patient", broken).version
        # a record filed without the service's validation, whose telecom system is not a ContactPoint system
        bad = {"telecom": [{"system": "beeper", "value": "1234"}]}
        links.save_record(
            conn,
            "bv-unvalidated",
            golden_id=broken,
            link_kind="auto",
            demographics=bad,
            keys=[],
            new=True,
            queue=[broken],
        )
    fine = _create(engine, service, patient(unique_org(), "BV-2", family="覃", given="强", born="1991-05-02"))

    assert mpi.rebuild_pending(engine) == 2
    with unit_of_work(engine, write=False) as conn:
        assert service.repository.read(conn, "Patient", broken).version == before  # left out
        assert not links.is_queued(conn, broken)
    assert _seealso(_rebuilt_as_in_full(mpi, engine, _refer(fine))) == {f"Patient/{fine['id']}"}
    with pytest.raises(FhirError), unit_of_work(engine) as conn:
        mpi.refresh_golden(conn, broken)
