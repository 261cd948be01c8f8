"""Fixtures of the audit tests: applications with authentication off and on, and a reader of the audit log."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from fhir_server.api.app import create_app
from fhir_server.auth.clients import register_client
from fhir_server.storage import unit_of_work
from fhir_server.storage.tables import audit_log
from tests.conftest import Backend

FHIR = {"Content-Type": "application/fhir+json"}


class AuditReader:
    """Reads what an application's audit trail wrote, after flushing its queue."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.engine = app.state.context.engine

    def mark(self) -> int:
        self.app.state.audit.flush()
        with self.engine.connect() as conn:
            return conn.execute(select(func.coalesce(func.max(audit_log.c.seq), 0))).scalar_one()

    def since(self, mark: int) -> list[dict[str, Any]]:
        """The events written after ``mark``, in chain order."""
        self.app.state.audit.flush()
        with self.engine.connect() as conn:
            rows = conn.execute(select(audit_log.c.event).where(audit_log.c.seq > mark).order_by(audit_log.c.seq))
            return [orjson.loads(row.event) for row in rows]

    def one_since(self, mark: int) -> dict[str, Any]:
        events = self.since(mark)
        assert len(events) == 1, [e["subtype"] for e in events]
        return events[0]


@pytest.fixture(scope="module")
def open_client(backend: Backend) -> Iterator[TestClient]:
    """Authentication off (every request is an unrestricted caller), ``$expunge`` allowed."""
    settings = backend.settings.model_copy(update={"auth_disabled": True, "allow_expunge": True})
    with TestClient(create_app(settings, backend.engine), base_url="http://testserver") as client:
        yield client


@pytest.fixture(scope="module")
def secured_client(backend: Backend) -> Iterator[TestClient]:
    """Authentication on: requests need a token from :func:`token_for`."""
    settings = backend.settings.model_copy(update={"auth_disabled": False})
    with TestClient(create_app(settings, backend.engine), base_url="http://testserver") as client:
        yield client


def token_for(
    client: TestClient, organization: str | None, scopes: str, name: str = "audit test"
) -> tuple[dict[str, str], str]:
    """Register a client of ``organization`` with ``scopes``: Authorization headers with its token, its id."""
    app = client.app
    with unit_of_work(app.state.context.engine) as conn:
        registered, _ = register_client(conn, name=name, organization=organization, scopes=scopes)
    token = app.state.authority.issue(registered, scopes.split())
    return {"Authorization": f"Bearer {token}"}, registered.client_id


def entity_refs(event: dict[str, Any], role: str) -> list[str]:
    """``what.reference`` of the event's entities in ``role`` (1 Patient, 4 Domain Resource)."""
    return [e["what"]["reference"] for e in event.get("entity", []) if e["role"]["code"] == role and "what" in e]
