"""Fixtures of the operation tests: a client of an application that allows ``$expunge``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from fhir_server.api.app import create_app
from tests.conftest import Backend, auth_headers

FHIR = {"Content-Type": "application/fhir+json"}


@pytest.fixture(scope="module")
def admin_client(backend: Backend) -> Iterator[TestClient]:
    """The same database, served with ``HIE_ALLOW_EXPUNGE`` set."""
    settings = backend.settings.model_copy(update={"allow_expunge": True})
    with TestClient(
        create_app(settings, backend.engine), base_url="http://testserver", headers=auth_headers(backend)
    ) as client:
        yield client
