"""How searches follow the stored SearchParameters: probed at most every CHECK_INTERVAL, at once after a write
of this process; other workers' writes are found by the next probe."""

from __future__ import annotations

import pytest

from fhir_server.repository import Repository
from fhir_server.search import custom
from fhir_server.search.parameters import LOCAL_BASE, Registry
from fhir_server.storage.engine import unit_of_work


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def string_parameter(code: str) -> dict:
    """An active string SearchParameter of Patient on the city of the address."""
    return {
        "resourceType": "SearchParameter",
        "url": f"{LOCAL_BASE}SearchParameter/Patient-{code}",
        "name": code.replace("-", ""),
        "status": "active",
        "description": "test parameter",
        "code": code,
        "base": ["Patient"],
        "type": "string",
        "expression": "Patient.address.city",
    }


def test_searches_probe_after_the_interval_or_a_write_of_this_process(engine, monkeypatch: pytest.MonkeyPatch):
    clock = Clock()
    monkeypatch.setattr(custom, "time", clock)
    registry = Registry()
    with unit_of_work(engine) as conn:
        custom.sync_for_search(conn, registry)
    with unit_of_work(engine) as conn:  # another worker posts a SearchParameter
        Repository(registry).create(conn, string_parameter("sync-city"), res_id="sync-city", method="POST")
    with unit_of_work(engine) as conn:
        assert not custom.sync_for_search(conn, registry)  # within the interval: the last probe holds
        assert "sync-city" not in registry.for_type("Patient")
        clock.now += custom.CHECK_INTERVAL
        assert custom.sync_for_search(conn, registry)
        assert "sync-city" in registry.for_type("Patient")
        assert not custom.sync_for_search(conn, registry)

    with unit_of_work(engine) as conn:
        Repository(registry).create(conn, string_parameter("sync-town"), res_id="sync-town", method="POST")
    custom.changing(registry, "Patient")  # other types leave the probe as it was
    with unit_of_work(engine) as conn:
        assert not custom.sync_for_search(conn, registry)
    custom.changing(registry, "SearchParameter")  # this process writes one: the next search probes
    with unit_of_work(engine) as conn:
        assert custom.sync_for_search(conn, registry)
        assert "sync-town" in registry.for_type("Patient")


def test_a_deleted_parameter_is_refused_by_the_next_search(client):
    response = client.post("/fhir/SearchParameter", json=string_parameter("sync-gone"))
    assert response.status_code == 201
    assert client.get("/fhir/Patient", params={"sync-gone": "x"}).status_code == 200
    assert client.delete(f"/fhir/SearchParameter/{response.json()['id']}").status_code in (200, 204)
    assert client.get("/fhir/Patient", params={"sync-gone": "x"}).status_code == 400
