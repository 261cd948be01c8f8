"""A vread under a v2 constrained scope is judged on the version it answers, not on the current one."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select

from fhir_server.storage.engine import unit_of_work
from fhir_server.storage.tables import resources, token_index
from tests.fhir_server.auth.conftest import scoped
from tests.fhir_server.auth.test_scopes_enforced import ORG, observation

VITALS_ONLY = "system/Observation.rs?category=vital-signs"


def _write_two_versions(anonymous, backend, first: str, second: str) -> str:  # type: ignore[no-untyped-def]
    """An Observation whose version 1 has category ``first`` and version 2 ``second``; its id."""
    writer = scoped(backend, "system/*.*", ORG)
    marker = uuid.uuid4().hex
    body: dict[str, Any] = observation("Patient/unknown-resident", first, marker)
    created = anonymous.post("/fhir/Observation", json=body, headers=writer)
    assert created.status_code == 201, created.text
    res_id = created.json()["id"]
    body = observation("Patient/unknown-resident", second, marker) | {"id": res_id}
    updated = anonymous.put(f"/fhir/Observation/{res_id}", json=body, headers=writer)
    assert updated.status_code == 200, updated.text
    return res_id


def test_old_version_outside_the_constraint_is_refused(anonymous, backend) -> None:  # type: ignore[no-untyped-def]
    res_id = _write_two_versions(anonymous, backend, "laboratory", "vital-signs")
    h = scoped(backend, VITALS_ONLY, ORG)
    assert anonymous.get(f"/fhir/Observation/{res_id}", headers=h).status_code == 200
    assert anonymous.get(f"/fhir/Observation/{res_id}/_history/2", headers=h).status_code == 200
    refused = anonymous.get(f"/fhir/Observation/{res_id}/_history/1", headers=h)
    assert refused.status_code == 403, refused.text
    issue = refused.json()["issue"][0]
    assert issue["code"] == "forbidden"
    assert f"Observation/{res_id}/_history/1 is outside the token's constrained scope" in issue["diagnostics"]


def test_old_version_inside_the_constraint_is_answered(anonymous, backend) -> None:  # type: ignore[no-untyped-def]
    res_id = _write_two_versions(anonymous, backend, "vital-signs", "laboratory")
    h = scoped(backend, VITALS_ONLY, ORG)
    assert anonymous.get(f"/fhir/Observation/{res_id}", headers=h).status_code == 403
    assert anonymous.get(f"/fhir/Observation/{res_id}/_history/2", headers=h).status_code == 403
    answered = anonymous.get(f"/fhir/Observation/{res_id}/_history/1", headers=h)
    assert answered.status_code == 200, answered.text
    assert answered.json()["category"][0]["coding"][0]["code"] == "vital-signs"


def test_the_shadow_copy_leaves_nothing_behind(anonymous, backend) -> None:  # type: ignore[no-untyped-def]
    res_id = _write_two_versions(anonymous, backend, "laboratory", "vital-signs")
    h = scoped(backend, VITALS_ONLY, ORG)
    before = _stored_rows(backend)
    assert anonymous.get(f"/fhir/Observation/{res_id}/_history/1", headers=h).status_code == 403
    assert _stored_rows(backend) == before


def _stored_rows(backend) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    with unit_of_work(backend.engine, write=False) as conn:
        count = conn.execute(select(func.count()).select_from(resources)).scalar_one()
        tokens = conn.execute(select(func.count()).select_from(token_index)).scalar_one()
    return count, tokens


def test_history_still_needs_an_unconstrained_scope(anonymous, backend) -> None:  # type: ignore[no-untyped-def]
    res_id = _write_two_versions(anonymous, backend, "vital-signs", "vital-signs")
    h = scoped(backend, VITALS_ONLY, ORG)
    assert anonymous.get(f"/fhir/Observation/{res_id}/_history", headers=h).status_code == 403


def test_unconstrained_scope_reads_every_version(anonymous, backend) -> None:  # type: ignore[no-untyped-def]
    res_id = _write_two_versions(anonymous, backend, "laboratory", "vital-signs")
    h = scoped(backend, "system/Observation.rs", ORG)
    assert anonymous.get(f"/fhir/Observation/{res_id}/_history/1", headers=h).status_code == 200
