"""``Patient/$everything`` reads the record's keys once per request; both backends.

The record built by the operation's own tests (``tests/fhir_server/operations/test_everything.py``): the keys
found from the record's own reference rows equal those of the archive-wide statement, and a page carries the
total in its cursor.
"""

from __future__ import annotations

import base64

import pytest
from sqlalchemy import event, select

from fhir_server.operations.everything import REFERENCED_TYPES, record, record_keys
from fhir_server.search.values import search_date
from fhir_server.storage.tables import resources
from tests.fhir_server.operations.test_everything import Record, _build, _everything_of_p, _keys, _pages


@pytest.fixture(scope="module")
def built(client) -> Record:
    return _build(client)


@pytest.mark.parametrize(("start", "end"), [(None, None), ("2023-01-01", None), (None, "2021-12-31")])
def test_record_keys_are_those_of_the_whole_record_statement(built, backend, start, end):
    low = search_date(start)[0] if start else None
    high = search_date(end)[1] if end else None
    members = record(built.id("p"), low, high)
    everything = select(resources.c.res_pk).where(
        resources.c.res_pk.in_(select(members.c.res_pk)), resources.c.deleted.is_(False)
    )
    with backend.engine.connect() as conn:
        expected = sorted(conn.execute(everything).scalars())
        assert record_keys(conn, built.id("p"), low, high) == expected
    assert len(expected) > 20


def test_a_later_pages_keys_are_the_tail_of_the_record(built, backend):
    """From any page start: the keys after it, the referenced resources still found from the whole record."""
    with backend.engine.connect() as conn:
        every = record_keys(conn, built.id("p"), None, None)
        kinds = conn.execute(select(resources.c.res_pk, resources.c.res_type).where(resources.c.res_pk.in_(every)))
        referenced = [pk for pk, res_type in kinds if res_type in REFERENCED_TYPES]
        for start in every:
            assert record_keys(conn, built.id("p"), None, None, start) == [k for k in every if k > start]
    assert referenced and referenced[-1] > every[0]


def test_a_resource_referenced_only_before_a_page_start_is_still_in_its_tail(client, backend):
    """A Practitioner stored after the Observation that refers to it (added by an update) and after the
    page start: found from the whole record, not from the members after the start."""
    headers = {"Content-Type": "application/fhir+json"}

    def create(resource: dict) -> dict:
        answer = client.post(f"/fhir/{resource['resourceType']}", json=resource, headers=headers)
        assert answer.status_code == 201, answer.text
        return answer.json()

    patient = create({"resourceType": "Patient"})
    subject = {"reference": f"Patient/{patient['id']}"}
    first = create({"resourceType": "Observation", "status": "final", "code": {"text": "a"}, "subject": subject})
    late = create({"resourceType": "Practitioner", "name": [{"family": "后来"}]})
    first["performer"] = [{"reference": f"Practitioner/{late['id']}"}]
    assert client.put(f"/fhir/Observation/{first['id']}", json=first, headers=headers).status_code == 200
    create({"resourceType": "Observation", "status": "final", "code": {"text": "b"}, "subject": subject})
    with backend.engine.connect() as conn:
        every = record_keys(conn, patient["id"], None, None)
        start, late_pk = (
            conn.execute(
                select(resources.c.res_pk).where(resources.c.res_type == res_type, resources.c.res_id == res_id)
            ).scalar_one()
            for res_type, res_id in (("Observation", first["id"]), ("Practitioner", late["id"]))
        )
        assert late_pk in every and late_pk > start
        assert record_keys(conn, patient["id"], None, None, start) == [k for k in every if k > start]


def test_every_page_carries_the_first_pages_total(client, built):
    url = f"/fhir/Patient/{built.id('p')}/$everything?_count=100"
    pages = _pages(client, url)
    assert [page["total"] for page in pages] == [239, 239, 239]
    assert set(_keys(pages)) == _everything_of_p(built)


def test_a_cursor_without_total_still_pages_exactly(client, backend, built):
    """A cursor holding only the position (as issued before the total was carried) gets the total recounted."""
    first = client.get(f"/fhir/Patient/{built.id('p')}/$everything?_count=100").json()
    last = first["entry"][-1]["resource"]
    with backend.engine.connect() as conn:
        last_pk = conn.execute(
            select(resources.c.res_pk).where(
                resources.c.res_type == last["resourceType"], resources.c.res_id == last["id"]
            )
        ).scalar_one()
    cursor = base64.urlsafe_b64encode(f"everything.{last_pk}".encode()).decode().rstrip("=")
    rest = _pages(client, f"/fhir/Patient/{built.id('p')}/$everything?_count=100&_cursor={cursor}")
    assert {page["total"] for page in rest} == {239}
    assert len(_keys([first, *rest])) == len(set(_keys([first, *rest]))) == 239


def test_sqlite_reads_the_record_not_the_archive(built, backend):
    """The reference rows ``record_keys`` reads are found from the patient's id or from the record's keys:
    no statement walks an index by target type alone (every reference to an organization in the archive)."""
    if backend.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's query plan")
    statements: list[tuple[str, tuple]] = []

    def seen(_conn, _cursor, statement, parameters, _context, _many) -> None:  # type: ignore[no-untyped-def]
        if "idx_reference" in statement:
            statements.append((statement, parameters))

    event.listen(backend.engine, "before_cursor_execute", seen)
    try:
        with backend.engine.connect() as conn:
            assert record_keys(conn, built.id("p"), None, None)
    finally:
        event.remove(backend.engine, "before_cursor_execute", seen)
    with backend.engine.connect() as conn:
        plans = [
            [row[3] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)]
            for statement, parameters in statements
        ]
    assert len(plans) == 2
    assert not [step for plan in plans for step in plan if "SCAN idx_" in step or "(target_type=?)" in step], plans
