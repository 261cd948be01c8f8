"""A resident's app reads its person's records across institutions (the master patient index's links), on both
backends: every record linked to the same golden as its own Patient, and nobody else's.
"""

from __future__ import annotations

from typing import Any

import pytest

from fhir_server.auth.clients import register_client
from fhir_server.storage.engine import unit_of_work
from tests.ehr_archive.conftest import patient as resident_record
from tests.ehr_archive.conftest import resident_id
from tests.fhir_server.access.conftest import Exchange, Institution
from tests.fhir_server.access.test_access_api import observation
from tests.fhir_server.access.test_consent_links import Linked, Person, golden_of, mpi_exchange  # noqa: F401


@pytest.fixture(scope="module")
def linked(mpi_exchange: Exchange) -> Linked:  # noqa: F811
    return Linked(mpi_exchange)


def resident_app(world: Linked, patient_id: str) -> Institution:
    """A resident's app registered for ``Patient/{patient_id}``, reading with ``patient/*.rs``."""
    engine = world.exchange.app.state.context.engine  # type: ignore[attr-defined]
    with unit_of_work(engine) as conn:
        client, _ = register_client(
            conn, name="resident app", organization=None, scopes="patient/*.rs", patient=f"Patient/{patient_id}"
        )
    token = world.exchange.app.state.authority.issue(client, list(client.scopes))  # type: ignore[attr-defined]
    return Institution(world.exchange.http, client.client_id, None, token)


def status(who: Institution, ref: str) -> int:
    return who.get(f"/fhir/{ref}").status_code


def task_for(*patients: str) -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": "Task", "status": "requested", "intent": "order"}
    body["for"] = {"reference": f"Patient/{patients[0]}"}
    if len(patients) > 1:
        body["owner"] = {"reference": f"Patient/{patients[1]}"}
    return body


def stranger(world: Linked, tag: str, sequence: int) -> dict[str, Any]:
    """Another resident, at institution C, with an Observation."""
    body = resident_record(
        "cl-c", f"C-{tag}", family="蒋", given="德华", born="1960-01-01", rid=resident_id("19600101", sequence)
    )
    other = world.create(world.c, body)
    world.c.put(observation(f"obs-c-{tag}", other["id"]))
    return other


def test_the_app_reads_its_persons_records_at_every_institution(linked: Linked) -> None:
    person = Person(linked, "app-reads", 201)
    app = resident_app(linked, person.a["id"])
    for ref in (
        f"Patient/{person.a['id']}",
        f"Patient/{person.b['id']}",
        f"Patient/{person.golden}",
        f"Observation/{person.obs_a}",
        f"Observation/{person.obs_b}",
    ):
        assert status(app, ref) == 200, ref
    found = app.get("/fhir/Observation").json()
    assert {e["resource"]["id"] for e in found.get("entry", [])} == {person.obs_a, person.obs_b}
    assert found["total"] == 2


def test_the_app_reads_nobody_elses_records(linked: Linked) -> None:
    person = Person(linked, "app-others", 202)
    other = stranger(linked, "app-others", 203)
    app = resident_app(linked, person.b["id"])
    assert golden_of(other) != person.golden
    assert status(app, f"Patient/{other['id']}") == 404
    assert status(app, "Observation/obs-c-app-others") == 404
    found = app.get("/fhir/Patient").json()
    ids = {e["resource"]["id"] for e in found.get("entry", [])}
    assert ids == {person.a["id"], person.b["id"], person.golden}


def test_resources_outside_the_compartment_about_the_person_only(linked: Linked) -> None:
    person = Person(linked, "app-tasks", 204)
    other = stranger(linked, "app-tasks", 205)
    linked.b.put({**task_for(person.b["id"]), "id": "task-person-b"})
    linked.b.put({**task_for(person.b["id"], other["id"]), "id": "task-with-stranger"})
    app = resident_app(linked, person.a["id"])
    assert status(app, "Task/task-person-b") == 200
    assert status(app, "Task/task-with-stranger") == 404


def test_a_link_undone_by_the_stewards_takes_the_record_away(linked: Linked) -> None:
    person = Person(linked, "app-relink", 206)
    other = stranger(linked, "app-relink", 207)
    app = resident_app(linked, person.a["id"])
    linked.mpi("mpi-link", other["id"], person.golden)
    assert status(app, "Observation/obs-c-app-relink") == 200
    linked.mpi("mpi-not-duplicate", other["id"], person.golden)
    assert status(app, "Observation/obs-c-app-relink") == 404
    assert status(app, f"Observation/{person.obs_b}") == 200


def test_the_app_reads_the_access_log_of_its_persons_records_only(linked: Linked) -> None:
    person = Person(linked, "app-log", 208)
    other = stranger(linked, "app-log", 209)
    app = resident_app(linked, person.b["id"])
    for patient_id in (person.a["id"], person.b["id"], person.golden):
        response = app.get(f"/fhir/Patient/{patient_id}/$access-log")
        assert response.status_code == 200, (patient_id, response.text)
        assert response.json()["type"] == "searchset"
    refused = app.get(f"/fhir/Patient/{other['id']}/$access-log")
    assert refused.status_code == 403
    assert "resident's own app" in refused.json()["issue"][0]["diagnostics"]
