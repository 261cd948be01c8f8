"""A read by id fetches the resource and decides the caller's access in one statement, on both backends."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, event, select

from fhir_server.access import Access, acting_as, check_readable
from fhir_server.access.codes import RESOURCE_TYPES_SYSTEM
from fhir_server.auth.principal import Principal
from fhir_server.errors import FhirError, http_status
from fhir_server.service import FhirService
from fhir_server.storage.engine import unit_of_work
from fhir_server.storage.tables import resources
from tests.fhir_server.access.conftest import Exchange, Institution
from tests.fhir_server.access.test_filters import consent as sharing_consent

OWNER, B, C = "Organization/owner", "Organization/b", "Organization/c"
ROLE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]}
_TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")


def actor(org: str) -> dict[str, Any]:
    return {"role": ROLE, "reference": {"reference": org}}


def consent(patient: str, provision: dict[str, Any] | None = None, *, status: str = "active") -> dict[str, Any]:
    """The regional sharing Consent of the filter tests, with an id to update it by and a status."""
    return {**sharing_consent(patient, provision), "id": f"consent-{patient}", "status": status}


def observation(res_id: str, patient: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": res_id,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{patient}"},
    }


SHARING: dict[str, dict[str, Any] | None] = {
    "shared": None,
    "only-b": {"type": "permit", "actor": [actor(B)]},
    "not-b": {"type": "permit", "provision": [{"type": "deny", "actor": [actor(B)]}]},
    "treatment": {"type": "permit", "purpose": [{"code": "TREAT"}]},
    "expired": {"type": "permit", "period": {"start": "2020-01-01", "end": "2021-12-31"}},
    "no-observations": {
        "type": "permit",
        "provision": [{"type": "deny", "class": [{"system": RESOURCE_TYPES_SYSTEM, "code": "Observation"}]}],
    },
    "withheld": "no consent",  # type: ignore[dict-item]
}
"""One resident per way of sharing (the key is the resident's id); ``withheld`` has no Consent."""

READERS = [
    Access(org=OWNER),
    Access(org=B),
    Access(org=C),
    Access(org=C, purpose="TREAT"),
    Access(org=None),
    Access(org=None, patient="only-b"),
    Access(org=B, patient="not-b"),
    Access(org=C, break_glass=True),
    Access(org=None, restricted=False),
]


@pytest.fixture(scope="module")
def records(engine: Engine) -> list[tuple[str, str]]:
    """(type, id) of every stored resource: each resident, one reading of theirs, a deleted Basic, a directory entry."""
    service = FhirService()
    stored = []
    with acting_as(Principal(client_id="his", organization=OWNER)), unit_of_work(engine) as conn:
        for patient, provision in SHARING.items():
            service.update(conn, "Patient", patient, {"resourceType": "Patient", "id": patient})
            service.update(conn, "Observation", f"{patient}-obs", observation(f"{patient}-obs", patient))
            stored += [("Patient", patient), ("Observation", f"{patient}-obs")]
            if provision != "no consent":
                service.update(conn, "Consent", f"consent-{patient}", consent(patient, provision))
        service.update(conn, "Basic", "gone", {"resourceType": "Basic", "id": "gone", "code": {"text": "note"}})
        service.delete(conn, "Basic", "gone")
        service.update(conn, "Organization", "ward", {"resourceType": "Organization", "id": "ward", "name": "Ward 3"})
        stored += [("Basic", "gone"), ("Organization", "ward")]
    return stored


@contextmanager
def counted(conn: Connection) -> Iterator[list[str]]:
    """The statements ``conn`` runs in the block, transaction control left out."""
    statements: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not statement.lstrip().upper().startswith(_TRANSACTION_CONTROL):
            statements.append(statement)

    event.listen(conn, "before_cursor_execute", note)
    try:
        yield statements
    finally:
        event.remove(conn, "before_cursor_execute", note)


def outcome(conn: Connection, access: Access, res_type: str, res_id: str) -> int:
    try:
        FhirService().read(conn, res_type, res_id, access=access)
    except FhirError as error:
        return http_status(error)
    return 200


@pytest.mark.parametrize("res_type, res_id", [("Patient", "shared"), ("Observation", "shared-obs")])
def test_a_read_of_a_record_shared_by_consent_is_one_statement(
    engine: Engine, records: list, res_type: str, res_id: str
) -> None:
    with engine.connect() as conn, counted(conn) as statements:
        assert FhirService().read(conn, res_type, res_id, access=Access(org=B)).res_id == res_id
    assert len(statements) == 1, statements


@pytest.mark.parametrize(
    "access, res_id, status",
    [
        (Access(org=OWNER), "withheld-obs", 200),  # the owner's own
        (Access(org=B), "withheld-obs", 404),  # hidden
        (Access(org=B), "nobody-obs", 404),  # missing
        (Access(org=None, restricted=False), "withheld-obs", 200),  # the exchange
    ],
)
def test_every_read_by_id_is_one_statement(
    engine: Engine, records: list, access: Access, res_id: str, status: int
) -> None:
    with engine.connect() as conn, counted(conn) as statements:
        assert outcome(conn, access, "Observation", res_id) == status
    assert len(statements) == 1, statements


def test_the_read_statement_stays_short_enough_for_the_drivers_cache(engine: Engine, records: list) -> None:
    """psycopg converts the placeholders of a statement longer than 4,096 bytes again on every execution (shorter
    ones once): the read of another owner's record, with or without a purpose of use, stays within that."""
    if engine.dialect.name != "postgresql":
        pytest.skip("a limit of the PostgreSQL driver")
    for access, (res_type, res_id) in itertools.product(
        (Access(org=B), Access(org=C, purpose="TREAT")), (("Patient", "shared"), ("Observation", "shared-obs"))
    ):
        with engine.connect() as conn, counted(conn) as statements:
            assert outcome(conn, access, res_type, res_id) == 200
        assert [len(statement.encode()) <= 4096 for statement in statements] == [True], (res_type, access)


@pytest.mark.parametrize("access", READERS, ids=lambda a: f"{a.org}-{a.patient}-{a.purpose}-{a.break_glass}")
def test_the_read_decides_as_the_search_condition(engine: Engine, records: list, access: Access) -> None:
    """Owner, consent (actor, purpose, period, class), resident app, break-glass and the exchange: a read answers
    200 exactly when a search condition would list the resource; a deleted one is 410 to whoever may read it."""
    answers = set()
    with engine.connect() as conn:
        for res_type, res_id in records:
            restriction = access.restriction
            query = select(resources.c.deleted).where(resources.c.res_type == res_type, resources.c.res_id == res_id)
            if restriction is not None:
                query = query.where(restriction(resources, res_type))
            listed = conn.execute(query).first()
            deleted_and_owned = res_id == "gone" and (access.org == OWNER or restriction is None)
            expected = 410 if deleted_and_owned else 200 if listed is not None else 404
            assert outcome(conn, access, res_type, res_id) == expected, (res_type, res_id)
            answers.add(expected)
    if access.org == B and access.patient is None:
        assert answers == {200, 404}  # both decisions are exercised


def test_the_check_of_a_history_is_one_statement_too(engine: Engine, records: list) -> None:
    with engine.connect() as conn, counted(conn) as statements, pytest.raises(FhirError):
        check_readable(conn, Access(org=C), "Observation", "treatment-obs")  # the purpose TREAT is not stated
    assert len(statements) == 1
    with engine.connect() as conn, counted(conn) as statements:
        check_readable(conn, Access(org=C), "Observation", "shared-obs")
        check_readable(conn, Access(org=C), "Observation", "nobody-obs")  # missing: the caller's 404 follows
    assert len(statements) == 2


def test_the_check_of_a_history_hides_what_the_caller_may_not_read(engine: Engine, records: list) -> None:
    with engine.connect() as conn:
        with pytest.raises(FhirError) as hidden:
            check_readable(conn, Access(org=B), "Observation", "not-b-obs")
        check_readable(conn, Access(org=C), "Observation", "not-b-obs")  # C is not denied: no error
        check_readable(conn, Access(org=B, break_glass=True), "Observation", "not-b-obs")
    assert http_status(hidden.value) == 404
    assert "Observation/not-b-obs is not known to this server." in str(hidden.value)


# -- through the REST API ----------------------------------------------------------------------------


class Clinics:
    def __init__(self, exchange: Exchange) -> None:
        self.a = exchange.institution("Organization/read-a")
        self.b = exchange.institution("Organization/read-b")
        self.a.put({"resourceType": "Patient", "id": "read-r1"})
        self.a.put({"resourceType": "Patient", "id": "read-r2"})
        self.a.put(observation("read-obs-r1", "read-r1"))
        self.a.put(observation("read-obs-r2", "read-r2"))
        self.a.put(consent("read-r1"))


@pytest.fixture(scope="module")
def clinics(exchange: Exchange) -> Clinics:
    return Clinics(exchange)


def _as_missing(response: Any, res_id: str, stand_in: str) -> tuple[int, str, Any]:
    """Status, media type and body of a 404 with the id replaced, to compare one 404 with another."""
    text = response.text.replace(res_id, stand_in)
    return response.status_code, response.headers["content-type"], text


@pytest.mark.parametrize("path", ["/fhir/Observation/{id}", "/fhir/Observation/{id}/_history"])
def test_a_hidden_record_and_a_missing_one_give_identical_404s(clinics: Clinics, path: str) -> None:
    hidden = clinics.b.get(path.format(id="read-obs-r2"))
    missing = clinics.b.get(path.format(id="read-obs-none"))
    assert hidden.status_code == 404
    assert _as_missing(hidden, "read-obs-r2", "X") == _as_missing(missing, "read-obs-none", "X")
    assert "Observation/read-obs-r2 is not known to this server." in hidden.text
    assert clinics.a.get(path.format(id="read-obs-r2")).status_code == 200  # the owner reads it


def test_a_withdrawn_consent_hides_the_record_on_the_next_read(clinics: Clinics) -> None:
    reader: Institution = clinics.b
    assert reader.get("/fhir/Observation/read-obs-r1").status_code == 200
    assert reader.get("/fhir/Patient/read-r1").status_code == 200
    clinics.a.put(consent("read-r1", status="inactive"))
    assert reader.get("/fhir/Observation/read-obs-r1").status_code == 404
    assert reader.get("/fhir/Patient/read-r1").status_code == 404
    clinics.a.put(consent("read-r1"))  # given again
    assert reader.get("/fhir/Observation/read-obs-r1").status_code == 200
    assert clinics.a.delete("/fhir/Consent/consent-read-r1").status_code == 200
    assert reader.get("/fhir/Observation/read-obs-r1").status_code == 404


def test_every_reader_of_a_shared_record_gets_the_same_body(clinics: Clinics) -> None:
    clinics.a.put(consent("read-r2"))
    owner, other = (who.get("/fhir/Observation/read-obs-r2") for who in (clinics.a, clinics.b))
    assert owner.status_code == other.status_code == 200
    assert owner.json() == other.json()
    assert owner.headers["etag"] == other.headers["etag"]
