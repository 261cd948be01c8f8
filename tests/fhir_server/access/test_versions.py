"""Vread and history judge each version on its own content, not on the current version's, on both backends.

Institution A holds Observations whose subject changed between versions: from a consenting resident (r1) to one
who shares nothing (r2), and back, and Patients whose gender changed (an older Patient version is judged as that
resident: its consent, or a linked record's, applies; its own labels still decide). Clinic D reads; emergency
services read by break-glass.
"""

from __future__ import annotations

import pytest

from fhir_server.auth.clients import register_client
from fhir_server.storage.engine import unit_of_work
from tests.fhir_server.access import test_consent_links
from tests.fhir_server.access.conftest import EMERGENCY, Exchange, Institution
from tests.fhir_server.access.test_access_api import PSY, _path, consent, observation, patient
from tests.fhir_server.access.test_consent_links import Linked, Person

mpi_exchange = test_consent_links.mpi_exchange
linked = test_consent_links.linked
"""Residents known to several institutions, linked by the master patient index (module fixtures)."""
REASON = "120 call 2026-0077: resident found unconscious"


class Versions:
    def __init__(self, exchange: Exchange) -> None:
        self.a = exchange.institution("Organization/hosp-a")
        self.d = exchange.institution("Organization/clinic-d")
        self.em = exchange.institution(EMERGENCY, scopes="system/*.rs")
        self.app = resident_app(exchange, "r1")
        for res_id in ("r1", "r2"):
            self.a.put(patient(res_id))
        self.a.put(consent("consent-r1", "r1"))
        # shared first, then moved to a resident who shares nothing
        self.a.put(observation("moved-away", "r1"))
        self.a.put(observation("moved-away", "r2"))
        # hidden first, then moved to the consenting resident
        self.a.put(observation("moved-in", "r2"))
        self.a.put(observation("moved-in", "r1"))
        # the subject stays; only the status changes (judged as the current version is)
        self.a.put(observation("amended", "r1"))
        self.a.put({**observation("amended", "r1"), "status": "amended"})
        # shared, then deleted: the history of a deleted resource is its owner's only
        self.a.put(observation("removed", "r1"))
        assert self.a.delete("/fhir/Observation/removed").status_code in (200, 204)


def resident_app(exchange: Exchange, patient_id: str) -> Institution:
    engine = exchange.app.state.context.engine  # type: ignore[attr-defined]
    with unit_of_work(engine) as conn:
        client, _ = register_client(
            conn, name="resident app", organization=None, scopes="patient/*.rs", patient=f"Patient/{patient_id}"
        )
    token = exchange.app.state.authority.issue(client, list(client.scopes))  # type: ignore[attr-defined]
    return Institution(exchange.http, client.client_id, None, token)


@pytest.fixture(scope="module")
def world(exchange: Exchange) -> Versions:
    return Versions(exchange)


def versions_of(who: Institution, res_id: str, **headers: str) -> list[str]:
    response = who.get(f"/fhir/Observation/{res_id}/_history", **headers)
    assert response.status_code == 200, response.text
    return [e["resource"]["meta"]["versionId"] for e in response.json().get("entry", []) if "resource" in e]


def test_an_older_version_about_a_consenting_resident_is_shared(world: Versions) -> None:
    assert world.d.get("/fhir/Observation/moved-away").status_code == 404
    older = world.d.get("/fhir/Observation/moved-away/_history/1")
    assert older.status_code == 200, older.text
    assert older.json()["subject"]["reference"] == "Patient/r1"


def test_an_older_version_about_a_resident_sharing_nothing_is_hidden(world: Versions) -> None:
    assert world.d.get("/fhir/Observation/moved-in").status_code == 200
    assert world.d.get("/fhir/Observation/moved-in/_history/2").status_code == 200
    hidden = world.d.get("/fhir/Observation/moved-in/_history/1")
    assert hidden.status_code == 404
    assert "moved-in is not known to this server" in hidden.text


def test_the_current_version_is_judged_as_a_read(world: Versions) -> None:
    assert world.d.get("/fhir/Observation/moved-away/_history/2").status_code == 404
    assert world.d.get("/fhir/Observation/amended/_history/1").status_code == 200
    assert world.d.get("/fhir/Observation/amended/_history/2").status_code == 200


def test_a_missing_version_of_a_hidden_resource_answers_like_a_missing_resource(world: Versions) -> None:
    hidden = world.d.get("/fhir/Observation/moved-away/_history/9")
    assert hidden.status_code == 404
    assert "moved-away is not known to this server" in hidden.text
    assert "has no version 9" in world.d.get("/fhir/Observation/moved-in/_history/9").text


def test_instance_history_lists_only_the_versions_the_caller_may_read(world: Versions) -> None:
    assert versions_of(world.d, "moved-away") == ["1"]
    assert versions_of(world.d, "moved-in") == ["2"]
    assert versions_of(world.d, "amended") == ["2", "1"]
    shared = world.d.get("/fhir/Observation/moved-away/_history").json()
    assert "total" not in shared  # the hidden versions are not counted either


def test_the_owner_and_break_glass_read_every_version(world: Versions) -> None:
    assert versions_of(world.a, "moved-away") == ["2", "1"]
    assert world.a.get("/fhir/Observation/moved-away/_history").json()["total"] == 2
    assert world.a.get("/fhir/Observation/moved-in/_history/1").status_code == 200
    assert versions_of(world.em, "moved-in", reason=REASON) == ["2", "1"]
    assert world.em.get("/fhir/Observation/moved-away/_history/2", reason=REASON).status_code == 200


def test_a_deleted_resource_keeps_its_history_for_its_owner(world: Versions) -> None:
    assert world.d.get("/fhir/Observation/removed/_history/1").status_code == 404
    assert world.d.get("/fhir/Observation/removed/_history").status_code == 404
    assert world.a.get("/fhir/Observation/removed/_history/1").status_code == 200


@pytest.mark.parametrize("count", [1, 2, 50])
def test_type_history_pages_hold_each_readable_version_once(world: Versions, count: int) -> None:
    url = f"/fhir/Observation/_history?_count={count}"
    seen: list[str] = []
    while url:
        bundle = world.d.get(url).json()
        entries = bundle.get("entry", [])
        assert len(entries) <= count
        seen += [e["fullUrl"].split("/fhir/", 1)[1] + "@" + e["resource"]["meta"]["versionId"] for e in entries]
        url = next((_path(link["url"]) for link in bundle["link"] if link["relation"] == "next"), "")
        if url:
            assert len(entries) == count  # a page that links on is full
    assert sorted(seen) == sorted(
        ["Observation/moved-away@1", "Observation/moved-in@2", "Observation/amended@1", "Observation/amended@2"]
    )


def test_a_residents_app_reads_the_versions_about_its_resident(world: Versions) -> None:
    assert world.app.get("/fhir/Observation/moved-away").status_code == 404
    assert world.app.get("/fhir/Observation/moved-away/_history/1").status_code == 200
    assert world.app.get("/fhir/Observation/moved-in/_history/1").status_code == 404
    assert versions_of(world.app, "moved-in") == ["2"]


def patient_versions(who: Institution, res_id: str) -> list[str]:
    response = who.get(f"/fhir/Patient/{res_id}/_history")
    if response.status_code == 404:
        return []
    assert response.status_code == 200, response.text
    return [e["resource"]["meta"]["versionId"] for e in response.json().get("entry", []) if "resource" in e]


def changed_gender(world: Versions, res_id: str, **older: object) -> None:
    """A Patient of institution A whose gender (a token) changed: version 1 female (with ``older``), 2 male."""
    world.a.put({**patient(res_id), **older})
    world.a.put({**patient(res_id), "gender": "male"})


def test_an_older_patient_version_is_judged_as_that_resident(world: Versions) -> None:
    changed_gender(world, "gender-shared")
    world.a.put(consent("consent-gender-shared", "gender-shared"))
    assert world.d.get("/fhir/Patient/gender-shared").status_code == 200
    older = world.d.get("/fhir/Patient/gender-shared/_history/1")
    assert older.status_code == 200, older.text
    assert older.json()["gender"] == "female"
    assert patient_versions(world.d, "gender-shared") == ["2", "1"]
    listed = world.d.get("/fhir/Patient/_history?_count=50").json()
    seen = {e["fullUrl"].split("/fhir/", 1)[1] + "@" + e["resource"]["meta"]["versionId"] for e in listed["entry"]}
    assert {"Patient/gender-shared@1", "Patient/gender-shared@2"} <= seen


def test_an_older_patient_version_of_a_resident_sharing_nothing_is_hidden(world: Versions) -> None:
    changed_gender(world, "gender-private")
    for version in ("", "/_history/1", "/_history/2"):
        hidden = world.d.get(f"/fhir/Patient/gender-private{version}")
        assert hidden.status_code == 404
        assert "gender-private is not known to this server" in hidden.text
    assert patient_versions(world.d, "gender-private") == []
    assert patient_versions(world.a, "gender-private") == ["2", "1"]


def test_an_older_patient_version_is_hidden_once_consent_is_withdrawn(world: Versions) -> None:
    changed_gender(world, "gender-withdrawn")
    world.a.put(consent("consent-gender-withdrawn", "gender-withdrawn"))
    assert world.d.get("/fhir/Patient/gender-withdrawn/_history/1").status_code == 200
    world.a.put(consent("consent-gender-withdrawn", "gender-withdrawn", status="inactive"))
    assert world.d.get("/fhir/Patient/gender-withdrawn").status_code == 404
    assert world.d.get("/fhir/Patient/gender-withdrawn/_history/1").status_code == 404
    assert patient_versions(world.d, "gender-withdrawn") == []


def test_an_older_patient_version_keeps_its_own_security_labels(world: Versions) -> None:
    changed_gender(world, "gender-labelled", meta={"security": [PSY]})
    denied = {"type": "permit", "provision": [{"type": "deny", "securityLabel": [PSY]}]}
    world.a.put(consent("consent-gender-labelled", "gender-labelled", denied))
    assert world.d.get("/fhir/Patient/gender-labelled").status_code == 200
    assert world.d.get("/fhir/Patient/gender-labelled/_history/2").status_code == 200
    assert world.d.get("/fhir/Patient/gender-labelled/_history/1").status_code == 404
    assert patient_versions(world.d, "gender-labelled") == ["2"]
    assert world.a.get("/fhir/Patient/gender-labelled/_history/1").status_code == 200


def test_a_residents_app_reads_the_older_versions_of_its_own_patient(exchange: Exchange, world: Versions) -> None:
    changed_gender(world, "gender-own")
    app = resident_app(exchange, "gender-own")
    assert app.get("/fhir/Patient/gender-own/_history/1").status_code == 200
    assert patient_versions(app, "gender-own") == ["2", "1"]
    assert world.app.get("/fhir/Patient/gender-own/_history/1").status_code == 404


def test_an_older_patient_version_is_shared_by_consent_on_a_linked_record(linked: Linked) -> None:
    person = Person(linked, "versions", 120)
    older = person.b["gender"]
    changed = linked.b.put({**person.b, "gender": "female" if older == "male" else "male"})
    assert changed["meta"]["versionId"] == "2"
    records = f"/fhir/Patient/{person.b['id']}"
    assert linked.d.get(f"{records}/_history/1").status_code == 404
    linked.a.put(consent("cl-consent-versions", person.a["id"]))
    assert linked.d.get(records).status_code == 200
    shared = linked.d.get(f"{records}/_history/1")
    assert shared.status_code == 200, shared.text
    assert shared.json()["gender"] == older
