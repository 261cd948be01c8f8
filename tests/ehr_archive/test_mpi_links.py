"""The MPI tables on both backends: candidates by blocking key, oversized blocks skipped, records replaced."""

from __future__ import annotations

from ehr_archive.mpi import links
from fhir_server.storage import unit_of_work


def test_candidates_come_by_key_and_an_oversized_block_is_skipped(engine) -> None:
    shared_phone = "tel:07743825211"
    rows = [(f"clinic-{n}", f"g-clinic-{n}", "auto", {"gender": "male"}, [shared_phone]) for n in range(501)]
    rows.append(("lone", "g-lone", "auto", {"gender": "female"}, ["rid:450403195803120039", shared_phone]))
    with unit_of_work(engine) as conn:
        links.load_records(conn, rows)

    with unit_of_work(engine, write=False) as conn:
        by_number = links.candidates(conn, ["rid:450403195803120039", "sur:chen:1958:0312"])
        by_phone = links.candidates(conn, [shared_phone])
        itself = links.candidates(conn, ["rid:450403195803120039"], exclude="lone")

    assert [(r.source_id, r.golden_id, r.demographics) for r in by_number] == [("lone", "g-lone", {"gender": "female"})]
    assert by_phone == [], "a key shared by more than 500 records is a clinic's phone, not a lead"
    assert itself == []


def test_a_saved_record_replaces_its_keys_and_an_inactive_one_has_none(engine) -> None:
    with unit_of_work(engine) as conn:
        links.save_record(conn, "r1", golden_id="g1", link_kind="new", demographics={}, keys=["py:lihua:450403"])
        links.save_record(conn, "r1", golden_id="g1", link_kind="new", demographics={}, keys=["py:lihua:450405"])
        links.save_record(
            conn, "r2", golden_id="g1", link_kind="merged", demographics={}, keys=["py:x:1"], active=False
        )

    with unit_of_work(engine, write=False) as conn:
        assert links.candidates(conn, ["py:lihua:450403"]) == []
        assert [r.source_id for r in links.candidates(conn, ["py:lihua:450405"])] == ["r1"]
        assert links.candidates(conn, ["py:x:1"]) == []
        assert [r.source_id for r in links.members(conn, "g1")] == ["r1", "r2"]


def test_a_new_record_reserves_its_golden_and_queues_it_in_one_write(engine) -> None:
    with unit_of_work(engine) as conn:
        links.save_record(
            conn,
            "n1",
            golden_id="gn1",
            link_kind="new",
            demographics={"gender": "female"},
            keys=["py:wei:450403"],
            new=True,
            new_golden=True,
            queue=["gn1"],
        )

    with unit_of_work(engine, write=False) as conn:
        golden, record = links.golden_or_record(conn, "n1")
        assert not golden and record is not None
        assert (record.golden_id, record.link_kind, record.active) == ("gn1", "new", True)
        assert links.golden_or_record(conn, "gn1") == (True, None)
        assert links.golden_or_record(conn, "unknown") == (False, None)
        assert links.golden_active(conn, "gn1") is True
        assert links.is_queued(conn, "gn1") and links.queue_length(conn) == 1
        assert [r.source_id for r in links.candidates(conn, ["py:wei:450403"])] == ["n1"]


def test_the_state_of_a_golden_is_its_row_its_version_and_its_records_in_one_read(engine) -> None:
    with unit_of_work(engine) as conn:
        assert links.golden_state(conn, "gs-unknown") == links.GoldenState(None, None, [])
        links.save_record(
            conn, "gs-r2", golden_id="gs1", link_kind="new", demographics={"gender": "male"}, keys=[], new_golden=True
        )
        links.save_record(conn, "gs-r1", golden_id="gs1", link_kind="auto", demographics={}, keys=[], active=False)
        state = links.golden_state(conn, "gs1")
        assert (state.active, state.current) == (True, None)  # reserved, not written yet
        assert state.members == links.members(conn, "gs1")
        assert [r.source_id for r in state.members] == ["gs-r1", "gs-r2"]
