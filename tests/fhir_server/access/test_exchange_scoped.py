"""A client acting for the exchange with narrower scopes than every scope, on both backends.

It acts for the exchange: no institution or consent filter applies to it and its writes are not limited by
ownership; its scopes still apply everywhere (interactions, search, includes, bundle entries, v2 constraints).
A client of no institution that is not the exchange's keeps the unaffiliated rules (test_unaffiliated.py).
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from ehr_archive.mpi.operations.common import require_steward
from fhir_server.access import Access, refuse_resident_app
from fhir_server.access.jobs import may_follow_job
from fhir_server.auth.clients import RegistryError, register_client
from fhir_server.auth.principal import SYSTEM, Principal
from fhir_server.errors import FhirError
from fhir_server.storage.engine import unit_of_work
from tests.fhir_server.access.conftest import SUBSCRIPTION, Exchange, Institution
from tests.fhir_server.access.test_access_api import BODY_WEIGHT, observation, patient
from tests.fhir_server.audit.conftest import AuditReader

HEART_RATE_ONLY = "system/Observation.rs?code=http://loinc.org|8867-4"
TASK = {"resourceType": "Task", "id": "task-a", "status": "requested", "intent": "order"}


def exchange_client(exchange: Exchange, scopes: str) -> Institution:
    """A client registered with ``--exchange`` and ``scopes``, with a token for all of them."""
    engine = exchange.app.state.context.engine  # type: ignore[attr-defined]
    with unit_of_work(engine) as conn:
        client, _ = register_client(conn, name="exchange operator", organization=None, scopes=scopes, exchange=True)
    token = exchange.app.state.authority.issue(client, list(client.scopes))  # type: ignore[attr-defined]
    return Institution(exchange.http, client.client_id, None, token)


class Scoped:
    """Institution A's records of residents r1 and r2, neither of whom shares anything by consent."""

    def __init__(self, exchange: Exchange) -> None:
        self.a = exchange.institution("Organization/hosp-a")
        self.b = exchange.institution("Organization/hosp-b")
        self.unaffiliated = exchange.institution(None, scopes="system/*.rs")
        self.reader = exchange_client(exchange, "system/*.rs")
        self.patients_only = exchange_client(exchange, "system/Patient.rs")
        self.writer = exchange_client(exchange, "system/*.cruds")
        self.observation_writer = exchange_client(exchange, "system/Observation.cruds system/Provenance.rs")
        self.heart_rate_only = exchange_client(exchange, HEART_RATE_ONLY)
        for res_id in ("r1", "r2"):
            self.a.put(patient(res_id))
        for res_id, subject in (("xo-1", "r1"), ("xo-2", "r1"), ("xo-3", "r2")):
            self.a.put(observation(res_id, subject))
        self.a.put(observation("xo-weight", "r1", BODY_WEIGHT))
        self.a.put({**observation("xo-3", "r2"), "status": "amended"})
        self.a.put(TASK)


@pytest.fixture(scope="module")
def world(exchange: Exchange) -> Scoped:
    return Scoped(exchange)


def matches(who: Institution, url: str) -> tuple[set[str], int | None]:
    response = who.get(url)
    assert response.status_code == 200, response.text
    bundle = response.json()
    found = {
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle.get("entry", [])
        if e.get("search", {}).get("mode", "match") == "match"
    }
    return found, bundle.get("total")


def assert_forbidden(response: Any, *words: str) -> None:
    assert response.status_code == 403, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
    for word in words:
        assert word in response.text


# -- reads: every resident's records, within the scopes ----------------------------------------------


def test_it_reads_another_institutions_records_no_one_shares(world: Scoped) -> None:
    for url in ("/fhir/Observation/xo-1", "/fhir/Patient/r2", "/fhir/Task/task-a"):
        if url != "/fhir/Task/task-a":  # about no resident: shared with every institution
            assert world.b.get(url).status_code == 404
        assert world.unaffiliated.get(url).status_code == 404
        read = world.reader.get(url)
        assert read.status_code == 200, read.text
        assert read.json()["id"] == url.rsplit("/", 1)[1]


def test_its_searches_find_every_residents_records_with_exact_totals(world: Scoped) -> None:
    found, total = matches(world.reader, "/fhir/Observation?_id=xo-1,xo-2,xo-3,xo-weight&_total=accurate")
    assert found == {"Observation/xo-1", "Observation/xo-2", "Observation/xo-3", "Observation/xo-weight"}
    assert total == 4
    found, total = matches(world.reader, "/fhir/Observation?subject=Patient/r1&_count=1&_total=accurate")
    assert len(found) == 1 and total == 3
    assert matches(world.unaffiliated, "/fhir/Observation?subject=Patient/r1&_total=accurate") == (set(), 0)


def test_it_reads_every_version_of_another_institutions_record(world: Scoped) -> None:
    history = world.reader.get("/fhir/Observation/xo-3/_history")
    assert history.status_code == 200, history.text
    assert history.json()["total"] == 2
    assert world.reader.get("/fhir/Observation/xo-3/_history/1").status_code == 200


def test_it_cannot_create(world: Scoped) -> None:
    created = world.reader.post("/fhir/Observation", observation("xo-new", "r1"))
    assert_forbidden(created, "Insufficient scope", "system/Observation.c")
    assert world.a.get("/fhir/Observation/xo-new").status_code == 404


def test_a_break_glass_header_changes_nothing_for_it(world: Scoped) -> None:
    read = world.reader.get("/fhir/Observation/xo-1", reason="nothing is filtered for the exchange")
    assert read.status_code == 200, read.text


# -- its scopes still apply ------------------------------------------------------------------------


def test_a_patient_scope_reads_any_patient_and_nothing_else(world: Scoped) -> None:
    assert world.patients_only.get("/fhir/Patient/r1").status_code == 200
    assert matches(world.patients_only, "/fhir/Patient?_id=r1,r2&_total=accurate") == (
        {"Patient/r1", "Patient/r2"},
        2,
    )
    assert_forbidden(world.patients_only.get("/fhir/Observation/xo-1"), "Insufficient scope", "Observation")
    assert_forbidden(world.patients_only.get("/fhir/Observation?subject=Patient/r1"), "Observation")
    assert_forbidden(world.patients_only.get("/fhir/?_type=Observation"), "Observation")
    assert_forbidden(world.patients_only.get("/fhir/Patient/r1/$everything"), "Insufficient scope")


def test_includes_add_only_types_its_scopes_read(world: Scoped) -> None:
    found, _ = matches(world.patients_only, "/fhir/Patient?_id=r1&_revinclude=Observation:subject")
    assert found == {"Patient/r1"}
    response = world.patients_only.get("/fhir/Patient?_id=r1&_revinclude=Observation:subject")
    assert not [e for e in response.json().get("entry", []) if e["search"]["mode"] == "include"]
    with_includes = world.reader.get("/fhir/Patient?_id=r1&_revinclude=Observation:subject").json()
    included = {e["resource"]["id"] for e in with_includes["entry"] if e["search"]["mode"] == "include"}
    assert included == {"xo-1", "xo-2", "xo-weight"}


def test_a_constrained_scope_narrows_its_reads_and_searches(world: Scoped) -> None:
    assert world.heart_rate_only.get("/fhir/Observation/xo-1").status_code == 200
    assert_forbidden(world.heart_rate_only.get("/fhir/Observation/xo-weight"), "outside the token's constrained scope")
    found, total = matches(world.heart_rate_only, "/fhir/Observation?subject=Patient/r1&_total=accurate")
    assert found == {"Observation/xo-1", "Observation/xo-2"} and total == 2


def test_bundle_entries_need_its_scopes(world: Scoped) -> None:
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"request": {"method": "GET", "url": "Observation/xo-1"}}],
    }
    response = world.reader.post("/fhir", batch)
    assert response.status_code == 200, response.text
    assert response.json()["entry"][0]["response"]["status"].startswith("200")
    transaction = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": observation("xo-tx", "r1"), "request": {"method": "PUT", "url": "Observation/xo-tx"}}],
    }
    assert_forbidden(world.reader.post("/fhir", transaction), "Insufficient scope")
    assert world.a.get("/fhir/Observation/xo-tx").status_code == 404


def test_the_access_log_needs_its_audit_event_scope(world: Scoped) -> None:
    assert world.reader.get("/fhir/Patient/r1/$access-log").status_code == 200
    assert_forbidden(world.patients_only.get("/fhir/Patient/r1/$access-log"), "AuditEvent")


# -- writes: not limited by ownership --------------------------------------------------------------


def test_it_updates_a_record_an_institution_owns(world: Scoped) -> None:
    assert world.writer.put({**observation("xo-2", "r1"), "status": "amended"})["status"] == "amended"
    amended = world.observation_writer.put({**observation("xo-2", "r1"), "status": "corrected"})
    assert amended["status"] == "corrected"
    assert amended["meta"]["source"].endswith(f"#{world.observation_writer.client_id}")  # it names its client
    assert_forbidden(world.observation_writer.post("/fhir/Patient", patient("r9")), "Insufficient scope")
    refused = world.b.http.put("/fhir/Observation/xo-2", json=observation("xo-2", "r1"), headers=world.b.headers())
    assert_forbidden(refused, "another institution's record")  # still A's: the owner never changes
    assert world.a.put({**observation("xo-2", "r1"), "status": "final"})["status"] == "final"


def test_its_writes_have_a_provenance_naming_it(world: Scoped) -> None:
    created = world.observation_writer.post("/fhir/Observation", observation("xo-by-exchange", "r2"))
    assert created.status_code == 201, created.text
    res_id = created.json()["id"]
    found, _ = matches(world.observation_writer, f"/fhir/Provenance?target=Observation/{res_id}")
    assert len(found) == 1
    provenance = world.observation_writer.get(f"/fhir/{found.pop()}").json()
    performers = [agent["who"]["identifier"]["value"] for agent in provenance["agent"] if "identifier" in agent["who"]]
    assert performers == [world.observation_writer.client_id]
    assert world.a.get(f"/fhir/Observation/{res_id}").status_code == 404  # the exchange's: no consent shares it


def test_it_writes_a_subscription_of_a_type_its_scopes_read(exchange: Exchange, world: Scoped) -> None:
    created = world.writer.post("/fhir/Subscription", SUBSCRIPTION)
    assert created.status_code == 201, created.text
    narrow = exchange_client(exchange, "system/Patient.rs system/Subscription.cruds")
    refused = narrow.post("/fhir/Subscription", SUBSCRIPTION)
    assert_forbidden(refused, "would notify every write of Observation", "system/Observation.rs")
    allowed = narrow.post("/fhir/Subscription", {**SUBSCRIPTION, "criteria": "Patient?gender=female"})
    assert allowed.status_code == 201, allowed.text
    labs = exchange_client(exchange, "system/Observation.rs?category=laboratory system/Subscription.cruds")
    assert_forbidden(labs.post("/fhir/Subscription", SUBSCRIPTION), "add category=laboratory to its criteria")
    within = labs.post("/fhir/Subscription", {**SUBSCRIPTION, "criteria": "Observation?category=laboratory"})
    assert within.status_code == 201, within.text


def test_its_requests_are_audited_with_its_client(world: Scoped) -> None:
    audit = AuditReader(world.reader.http.app)
    mark = audit.mark()
    assert world.reader.get("/fhir/Observation/xo-1").status_code == 200
    event = audit.one_since(mark)
    assert event["agent"][0]["who"]["identifier"]["value"] == world.reader.client_id
    mark = audit.mark()
    assert world.patients_only.get("/fhir/Observation/xo-1").status_code == 403
    assert audit.one_since(mark)["agent"][0]["who"]["identifier"]["value"] == world.patients_only.client_id


# -- the rules themselves --------------------------------------------------------------------------


SCOPED = Principal(client_id="operator", organization=None, scopes=frozenset({"system/*.rs"}), exchange=True)
UNAFFILIATED = Principal(client_id="loader", organization=None, scopes=frozenset({"system/*.rs"}))


def test_its_access_is_unfiltered_and_saved_as_the_exchanges_for_its_client() -> None:
    access = Access.of(SCOPED)
    assert access.restriction is None
    saved = access.to_json()
    assert saved is not None and json.loads(saved) == {"exchange": True, "client": "operator"}
    restored = Access.from_json(saved)
    assert restored.restriction is None and restored.client == "operator"
    assert Access.of(UNAFFILIATED).restriction is not None


def test_it_follows_its_own_export_jobs_only() -> None:
    saved = Access.of(SCOPED).to_json()
    assert may_follow_job(SCOPED, saved)
    assert may_follow_job(SYSTEM, saved)
    assert not may_follow_job(SCOPED, None)  # the exchange's own jobs: for clients with every scope
    other = Access.of(Principal(client_id="his-1", organization="Organization/a")).to_json()
    assert not may_follow_job(SCOPED, other)


def test_unrestricted_means_the_exchange() -> None:
    with pytest.raises(ValueError, match="acts for the exchange"):
        Principal(client_id="x", organization=None, unrestricted=True)
    refuse_resident_app(SCOPED, "$match")  # no resident's app
    with pytest.raises(FhirError):
        refuse_resident_app(Principal(client_id="app", organization=None, patient="Patient/r1"), "$match")


def test_the_mpi_steward_operations_are_open_to_it() -> None:
    require_steward(SimpleNamespace(principal=SCOPED, path="/fhir/Patient/$merge"))  # type: ignore[arg-type]
    for other in (UNAFFILIATED, Principal(client_id="his", organization="Organization/a")):
        with pytest.raises(FhirError, match="identity stewards"):
            require_steward(SimpleNamespace(principal=other, path="/fhir/Patient/$merge"))  # type: ignore[arg-type]


def test_the_registry_keeps_exchange_clients_apart_from_institutions(exchange: Exchange) -> None:
    engine = exchange.app.state.context.engine  # type: ignore[attr-defined]
    with unit_of_work(engine) as conn, pytest.raises(RegistryError, match="belongs to no institution"):
        register_client(conn, name="x", organization="Organization/hosp-a", scopes="system/*.rs", exchange=True)
    with unit_of_work(engine) as conn:
        client, _ = register_client(conn, name="x", organization=None, scopes="system/Patient.rs", exchange=True)
    assert client.exchange and client.scopes == ("system/Patient.rs",)
