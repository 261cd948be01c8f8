"""A resident's consent covers every record the master patient index links to them, on both backends.

Institutions A and B each hold a record of one resident (same ID number: one golden); C holds a record of
another. D reads. Consent on any record (or on the golden) shares all of the person's records; a denial on any
of them applies to all; links changed later by the identity stewards change what is shared at the next request.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fhir_server.api.app import create_app
from fhir_server.auth.clients import register_client
from fhir_server.storage.engine import unit_of_work
from tests.ehr_archive.conftest import patient as resident_record
from tests.ehr_archive.conftest import resident_id
from tests.fhir_server.access.conftest import Exchange, Institution
from tests.fhir_server.access.test_access_api import consent, deny_actor, observation


@pytest.fixture(scope="module")
def mpi_exchange(backend) -> Iterator[Exchange]:  # type: ignore[no-untyped-def]
    settings = backend.settings.model_copy(update={"mpi_enabled": True, "mpi_golden_rebuild": "inline"})
    with TestClient(create_app(settings, backend.engine), base_url="http://testserver") as http:
        yield Exchange(http)


class Person:
    """One resident known to A and B (linked by the MPI), with an Observation at each."""

    def __init__(self, world: Linked, tag: str, sequence: int) -> None:
        rid = resident_id("19520520", sequence)
        self.a = world.create(world.a, resident_record("cl-a", f"A-{tag}", born="1952-05-20", rid=rid))
        self.b = world.create(world.b, resident_record("cl-b", f"B-{tag}", born="1952-05-20", rid=rid))
        self.golden = golden_of(self.a)
        assert golden_of(self.b) == self.golden
        self.obs_a = f"obs-a-{tag}"
        self.obs_b = f"obs-b-{tag}"
        world.a.put(observation(self.obs_a, self.a["id"]))
        world.b.put(observation(self.obs_b, self.b["id"]))


class Linked:
    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange
        self.a = exchange.institution("Organization/cl-a")
        self.b = exchange.institution("Organization/cl-b")
        self.c = exchange.institution("Organization/cl-c")
        self.d = exchange.institution("Organization/cl-d")
        engine = exchange.app.state.context.engine  # type: ignore[attr-defined]
        with unit_of_work(engine) as conn:
            steward, _ = register_client(
                conn, name="identity steward", organization=None, scopes="system/*.*", exchange=True
            )
        token = exchange.app.state.authority.issue(steward, list(steward.scopes))  # type: ignore[attr-defined]
        self.steward = Institution(exchange.http, steward.client_id, None, token)

    def create(self, who: Institution, body: dict[str, Any]) -> dict[str, Any]:
        response = who.post("/fhir/Patient", body)
        assert response.status_code == 201, response.text
        return response.json()

    def mpi(self, code: str, source: str, golden: str) -> None:
        parameters = [
            {"name": "source-patient", "valueReference": {"reference": f"Patient/{source}"}},
            {"name": "golden-patient", "valueReference": {"reference": f"Patient/{golden}"}},
        ]
        response = self.steward.post(f"/fhir/Patient/${code}", {"resourceType": "Parameters", "parameter": parameters})
        assert response.status_code == 200, response.text


def golden_of(record: dict[str, Any]) -> str:
    refers = [link["other"]["reference"] for link in record.get("link", []) if link["type"] == "refer"]
    assert len(refers) == 1, record.get("link")
    return refers[0].removeprefix("Patient/")


@pytest.fixture(scope="module")
def linked(mpi_exchange: Exchange) -> Linked:
    return Linked(mpi_exchange)


def readable(who: Institution, ref: str) -> bool:
    status = who.get(f"/fhir/{ref}").status_code
    assert status in (200, 404), status
    return status == 200


def test_without_consent_nothing_of_the_person_is_shared(linked: Linked) -> None:
    person = Person(linked, "none", 101)
    for ref in (f"Observation/{person.obs_a}", f"Observation/{person.obs_b}", f"Patient/{person.b['id']}"):
        assert not readable(linked.d, ref)
    assert readable(linked.b, f"Observation/{person.obs_b}")  # the owner still reads its own


def test_consent_on_one_record_covers_the_linked_records(linked: Linked) -> None:
    person = Person(linked, "one", 102)
    linked.a.put(consent("cl-consent-one", person.a["id"]))
    for ref in (
        f"Observation/{person.obs_a}",
        f"Observation/{person.obs_b}",
        f"Patient/{person.b['id']}",
        f"Patient/{person.golden}",
    ):
        assert readable(linked.d, ref), ref
    found = linked.d.get("/fhir/Observation", params={"subject": f"Patient/{person.b['id']}"}).json()
    assert [e["resource"]["id"] for e in found.get("entry", [])] == [person.obs_b]


def test_consent_on_the_golden_covers_every_record(linked: Linked) -> None:
    person = Person(linked, "golden", 103)
    assert not readable(linked.d, f"Observation/{person.obs_b}")
    linked.a.put(consent("cl-consent-golden", person.golden))
    assert readable(linked.d, f"Observation/{person.obs_a}")
    assert readable(linked.d, f"Observation/{person.obs_b}")


def test_a_denial_on_one_record_applies_to_every_record(linked: Linked) -> None:
    person = Person(linked, "deny", 104)
    linked.a.put(consent("cl-consent-deny-permit", person.a["id"]))
    linked.b.put(consent("cl-consent-deny-d", person.b["id"], deny_actor("Organization/cl-d")))
    for ref in (f"Observation/{person.obs_a}", f"Observation/{person.obs_b}", f"Patient/{person.a['id']}"):
        assert not readable(linked.d, ref), ref
        assert readable(linked.c, ref), ref  # the denial names D only


def test_withdrawing_the_consent_on_a_linked_record_stops_the_sharing(linked: Linked) -> None:
    person = Person(linked, "withdraw", 105)
    linked.a.put(consent("cl-consent-withdraw", person.a["id"]))
    assert readable(linked.d, f"Observation/{person.obs_b}")
    linked.a.put(consent("cl-consent-withdraw", person.a["id"], status="inactive"))
    assert not readable(linked.d, f"Observation/{person.obs_b}")


def test_links_changed_later_change_what_is_shared(linked: Linked) -> None:
    person = Person(linked, "relink", 106)
    linked.a.put(consent("cl-consent-relink", person.a["id"]))
    other = linked.create(
        linked.c,
        resident_record(
            "cl-c", "C-relink", family="蒋", given="德华", born="1960-01-01", rid=resident_id("19600101", 107)
        ),
    )
    linked.c.put(observation("obs-c-relink", other["id"]))
    assert golden_of(other) != person.golden
    assert not readable(linked.d, "Observation/obs-c-relink")

    linked.mpi("mpi-link", other["id"], person.golden)  # the stewards decide it is the same resident
    assert readable(linked.d, "Observation/obs-c-relink")

    linked.mpi("mpi-not-duplicate", other["id"], person.golden)  # and change their minds
    assert not readable(linked.d, "Observation/obs-c-relink")
    assert readable(linked.d, f"Observation/{person.obs_b}")
