"""Institutions calling the exchange with real access tokens: each a registered client of an Organization."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fhir_server.api.app import create_app
from fhir_server.auth.clients import register_client
from fhir_server.config import Settings
from fhir_server.storage.engine import unit_of_work

EMERGENCY = "Organization/em-120"
SUBSCRIPTION = {
    "resourceType": "Subscription",
    "status": "active",
    "criteria": "Observation?code=8867-4",
    "reason": "follow-up",
    "channel": {"type": "websocket"},
}
"""A Subscription to heart rates, for the rules on who may write one."""


class Institution:
    """Requests as one client of one institution (``organization`` None: a client of no institution)."""

    def __init__(self, http: TestClient, client_id: str, organization: str | None, token: str) -> None:
        self.http = http
        self.client_id = client_id
        self.organization = organization
        self.token = token

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", **(extra or {})}

    def get(
        self, url: str, params: dict[str, str] | None = None, headers: dict[str, str] | None = None, **named: str
    ) -> Any:
        """GET as this client; ``purpose=`` and ``reason=`` send the purpose-of-use and break-glass headers."""
        return self.http.get(url, params=params, headers=self.headers({**_header_names(named), **(headers or {})}))

    def put(self, resource: dict[str, Any]) -> Any:
        url = f"/fhir/{resource['resourceType']}/{resource['id']}"
        response = self.http.put(url, json=resource, headers=self.headers())
        assert response.status_code in (200, 201), response.text
        return response.json()

    def post(self, url: str, body: dict[str, Any]) -> Any:
        return self.http.post(url, json=body, headers=self.headers())

    def delete(self, url: str) -> Any:
        return self.http.delete(url, headers=self.headers())


def _header_names(headers: dict[str, str]) -> dict[str, str]:
    """``purpose="TREAT"`` → ``X-Purpose-Of-Use``; ``reason=…`` → ``X-Break-Glass-Reason``."""
    names = {"purpose": "X-Purpose-Of-Use", "reason": "X-Break-Glass-Reason"}
    return {names.get(key, key): value for key, value in headers.items()}


class Exchange:
    def __init__(self, http: TestClient) -> None:
        self.http = http
        self.app = http.app

    def institution(self, organization: str | None, scopes: str = "system/*.cruds") -> Institution:
        engine = self.app.state.context.engine  # type: ignore[attr-defined]
        with unit_of_work(engine) as conn:
            client, _ = register_client(conn, name=f"HIS of {organization}", organization=organization, scopes=scopes)
        token = self.app.state.authority.issue(client, list(client.scopes))  # type: ignore[attr-defined]
        return Institution(self.http, client.client_id, organization, token)


@pytest.fixture(scope="module")
def exchange(backend, tmp_path_factory) -> Iterator[Exchange]:  # type: ignore[no-untyped-def]
    settings = Settings(
        database_url=backend.url,
        break_glass_organizations=EMERGENCY,
        export_dir=tmp_path_factory.mktemp("exports"),
        background_poll_seconds=0.1,
    )
    app = create_app(settings, backend.engine)
    with TestClient(app, base_url="http://testserver") as http:
        yield Exchange(http)
