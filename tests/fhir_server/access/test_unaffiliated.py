"""A client of no institution and no resident reads only what is shared with everyone, on both backends.

Directories, products, terminology and definitions (``SHARED_WITH_RESIDENTS``), whoever wrote them; nothing of
the types that can hold a resident's data (Task, Device, Bundle …), even about no resident; its scopes still apply.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.fhir_server.access.conftest import SUBSCRIPTION, Exchange, Institution

SHARED = {
    "Organization": {"resourceType": "Organization", "id": "org-open", "name": "梧州市红十字会医院"},
    "Practitioner": {"resourceType": "Practitioner", "id": "prac-open", "name": [{"family": "黄"}]},
    "ValueSet": {"resourceType": "ValueSet", "id": "vs-open", "status": "active", "url": "urn:test:open"},
}
CLOSED = {
    "Task": {"resourceType": "Task", "id": "task-closed", "status": "requested", "intent": "order"},
    "Device": {"resourceType": "Device", "id": "device-closed", "status": "active"},
    "Observation": {
        "resourceType": "Observation",
        "id": "obs-closed",
        "status": "final",
        "code": {"text": "血糖"},
    },
}


class Unaffiliated:
    def __init__(self, exchange: Exchange) -> None:
        self.a = exchange.institution("Organization/hosp-a")
        self.none = exchange.institution(None, scopes="system/*.rs")
        self.tasks_only = exchange.institution(None, scopes="system/Task.rs system/Organization.rs")
        for body in (*SHARED.values(), *CLOSED.values()):
            self.a.put(body)


@pytest.fixture(scope="module")
def world(exchange: Exchange) -> Unaffiliated:
    return Unaffiliated(exchange)


def found(who: Institution, url: str) -> set[str]:
    response = who.get(url)
    assert response.status_code == 200, response.text
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in response.json().get("entry", [])}


@pytest.mark.parametrize("res_type", sorted(SHARED))
def test_it_reads_what_is_shared_with_everyone(world: Unaffiliated, res_type: str) -> None:
    res_id = SHARED[res_type]["id"]
    assert world.none.get(f"/fhir/{res_type}/{res_id}").status_code == 200
    assert found(world.none, f"/fhir/{res_type}?_id={res_id}") == {f"{res_type}/{res_id}"}


@pytest.mark.parametrize("res_type", sorted(CLOSED))
def test_it_reads_nothing_else_even_about_no_resident(world: Unaffiliated, res_type: str) -> None:
    res_id = CLOSED[res_type]["id"]
    assert world.a.get(f"/fhir/{res_type}/{res_id}").status_code == 200  # it exists
    hidden = world.none.get(f"/fhir/{res_type}/{res_id}")
    assert hidden.status_code == 404
    assert f"{res_id} is not known to this server" in hidden.text
    assert found(world.none, f"/fhir/{res_type}?_id={res_id}") == set()
    assert world.none.get(f"/fhir/{res_type}/{res_id}/_history").status_code == 404


def test_system_search_lists_only_the_shared_types(world: Unaffiliated) -> None:
    every: dict[str, Any] = {**SHARED, **CLOSED}
    ids = ",".join(body["id"] for body in every.values())
    listed = found(world.none, f"/fhir/?_type={','.join(sorted(every))}&_id={ids}")
    assert listed == {f"{t}/{body['id']}" for t, body in SHARED.items()}


def test_its_scopes_still_apply(world: Unaffiliated) -> None:
    assert world.tasks_only.get("/fhir/Organization/org-open").status_code == 200
    assert world.tasks_only.get("/fhir/ValueSet/vs-open").status_code == 403
    assert world.tasks_only.get("/fhir/Task/task-closed").status_code == 404


def test_an_institutions_client_creates_a_subscription(world: Unaffiliated) -> None:
    created = world.a.post("/fhir/Subscription", SUBSCRIPTION)
    assert created.status_code == 201, created.text
    updated = world.a.put({**created.json(), "reason": "follow-up, weekly"})
    assert updated["reason"] == "follow-up, weekly"


def test_it_may_not_create_or_update_a_subscription(exchange: Exchange, world: Unaffiliated) -> None:
    writer = exchange.institution(None, scopes="system/Subscription.cruds")
    for response in (
        writer.post("/fhir/Subscription", SUBSCRIPTION),
        writer.http.put(
            "/fhir/Subscription/sub-none", json={**SUBSCRIPTION, "id": "sub-none"}, headers=writer.headers()
        ),
    ):
        assert response.status_code == 403, response.text
        outcome = response.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert "cannot be written by a client of no institution" in response.text
        assert "Use a client registered to an institution" in response.text
    assert world.a.get("/fhir/Subscription/sub-none").status_code == 404
