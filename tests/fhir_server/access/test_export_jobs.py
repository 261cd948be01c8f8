"""Bulk export status, files and cancellation belong to the client that kicked the export off, on both backends."""

from __future__ import annotations

import json

import pytest

from fhir_server.access.filters import Access
from fhir_server.access.jobs import may_follow_job
from fhir_server.auth.clients import register_client
from fhir_server.auth.principal import SYSTEM, Principal
from fhir_server.storage.engine import unit_of_work
from tests.fhir_server.access.conftest import Exchange, Institution
from tests.fhir_server.access.test_access_api import observation, patient
from tests.fhir_server.bulk.helpers import ASYNC, kickoff, wait_complete


class Parties:
    def __init__(self, exchange: Exchange) -> None:
        self.owner = exchange.institution("Organization/exp-a")
        self.colleague = exchange.institution("Organization/exp-a")  # another client of the same institution
        self.other = exchange.institution("Organization/exp-b")
        engine = exchange.app.state.context.engine  # type: ignore[attr-defined]
        with unit_of_work(engine) as conn:
            steward, _ = register_client(
                conn, name="archive operator", organization=None, scopes="system/*.*", exchange=True
            )
        token = exchange.app.state.authority.issue(steward, list(steward.scopes))  # type: ignore[attr-defined]
        self.steward = Institution(exchange.http, steward.client_id, None, token)
        self.owner.put(patient("exp-r1"))
        self.owner.put(observation("exp-obs-1", "exp-r1"))


@pytest.fixture(scope="module")
def parties(exchange: Exchange) -> Parties:
    return Parties(exchange)


def _status(who: Institution, status: str) -> int:
    return who.get(f"/fhir{status}").status_code


def test_only_the_requesting_client_and_the_exchange_follow_an_export(parties: Parties) -> None:
    status = kickoff(parties.owner, "/fhir/Patient/$export", _type="Patient,Observation")
    manifest = wait_complete(parties.owner, status)
    assert manifest["requiresAccessToken"] is True
    file_path = "/fhir" + manifest["output"][0]["url"].split("/fhir", 1)[1]
    job_id = status.rsplit("/", 1)[1]

    unknown = parties.other.get("/fhir/$export-status/00000000-0000-0000-0000-000000000000")
    for stranger in (parties.other, parties.colleague):
        hidden = stranger.get(f"/fhir{status}")
        assert hidden.status_code == unknown.status_code == 404
        assert hidden.json()["issue"][0]["diagnostics"] == f"Export {job_id} is not known."
        assert stranger.get(file_path).status_code == 404
        assert stranger.delete(f"/fhir{status}").status_code == 404

    assert _status(parties.owner, status) == 200  # the refused cancellations left the job alone
    assert parties.owner.get(file_path).status_code == 200
    assert _status(parties.steward, status) == 200
    assert parties.steward.get(file_path).status_code == 200


def test_the_requesting_client_cancels_its_export(parties: Parties) -> None:
    status = kickoff(parties.owner, "/fhir/Patient/$export", _type="Patient")
    assert parties.other.delete(f"/fhir{status}").status_code == 404
    assert parties.owner.delete(f"/fhir{status}").status_code == 202
    assert _status(parties.owner, status) == 404


def test_a_steward_cancels_any_export(parties: Parties) -> None:
    status = kickoff(parties.owner, "/fhir/Patient/$export", _type="Patient")
    assert parties.steward.delete(f"/fhir{status}").status_code == 202


def test_an_export_of_the_exchange_is_followed_by_the_exchange_only(parties: Parties) -> None:
    status = kickoff(parties.steward, "/fhir/$export", _type="Organization")
    wait_complete(parties.steward, status)
    assert _status(parties.owner, status) == 404


def test_kickoff_answers_202_with_the_async_headers(parties: Parties) -> None:
    response = parties.owner.get("/fhir/Patient/$export", params={"_type": "Patient"}, headers=ASYNC)
    assert response.status_code == 202


# -- the rule itself -------------------------------------------------------------------------------


def _principal(client: str, org: str | None = None, patient_ref: str | None = None) -> Principal:
    return Principal(client_id=client, organization=org, patient=patient_ref)


def test_rule_follows_the_saved_client() -> None:
    saved = Access.of(_principal("his-1", "Organization/a")).to_json()
    assert may_follow_job(_principal("his-1", "Organization/a"), saved)
    assert not may_follow_job(_principal("his-2", "Organization/a"), saved)
    assert not may_follow_job(_principal("his-9", "Organization/b"), saved)
    assert may_follow_job(SYSTEM, saved)


def test_rule_keeps_jobs_of_the_exchange_to_the_exchange() -> None:
    assert may_follow_job(SYSTEM, None)
    assert not may_follow_job(_principal("his-1", "Organization/a"), None)


def test_rule_for_jobs_saved_without_a_client_is_the_institution() -> None:
    legacy = json.dumps({"org": "Organization/a", "patient": None, "purpose": None})
    assert may_follow_job(_principal("his-2", "Organization/a"), legacy)
    assert not may_follow_job(_principal("his-9", "Organization/b"), legacy)
    nobody = json.dumps({"org": None, "patient": None, "purpose": None})
    assert not may_follow_job(_principal("app-1"), nobody)
    resident = json.dumps({"org": None, "patient": "r1", "purpose": None})
    assert may_follow_job(_principal("app-1", patient_ref="Patient/r1"), resident)
    assert not may_follow_job(_principal("app-2", patient_ref="Patient/r2"), resident)
